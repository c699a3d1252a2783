"""Defenses: LightningModules that train a net."""
