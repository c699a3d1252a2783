"""robustlab's Hydra config tree, installed as the package robustlab.conf (pkg://robustlab.conf)."""
