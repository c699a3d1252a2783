"""The plan of a cell: checked, typed, built before anything runs (``build_plan``)."""

from robustlab.plan.build import build_plan
from robustlab.plan.errors import ConfigError
from robustlab.plan.jobs import CellPlan, EvaluationJob, TrainingJob

__all__ = ["CellPlan", "ConfigError", "EvaluationJob", "TrainingJob", "build_plan"]
