"""MIAT (Zhou et al., ICML 2022): MI estimators (stage 1) and MI-guided adversarial training
(stage 2, NAMID / NAMID_T / NAMID_M)."""
