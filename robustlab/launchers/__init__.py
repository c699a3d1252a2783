"""robustlab's additions to Hydra's launchers: the SLURM job watcher (``slurm.QueueWatch``), a
Hydra callback that conf/hydra/launcher/slurm.yaml adds to ``hydra.callbacks``.

Imported only when that launcher config is used; nothing here runs at ``import robustlab``."""
