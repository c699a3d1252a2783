"""robustlab: adversarial-robustness experiments with Hydra and PyTorch Lightning."""

from robustlab import config as _config  # noqa: F401  (registers the rl.* OmegaConf resolvers)

__version__ = "0.1.0"
