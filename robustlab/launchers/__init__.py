"""Hydra launchers of robustlab's own (conf/hydra/launcher/*.yaml name them by ``_target_``).

Imported only when a launcher config names one; nothing here runs at ``import robustlab``."""
