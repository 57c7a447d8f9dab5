"""Tuning: search spaces, trials and run plans, the one Optuna driver (per-problem and recipe
studies), validation, recipes, reaping of stale trials, slots and the Optuna storage.
Imports no JAX.
"""
