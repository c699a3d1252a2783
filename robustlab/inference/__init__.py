"""Inference wrappers (predictors) that sit between a trained net and the attacks."""
