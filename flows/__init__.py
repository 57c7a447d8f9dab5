"""Prefect flows: ``reference`` (HMC references) and ``tune`` (Optuna tuning of cheap methods)."""
