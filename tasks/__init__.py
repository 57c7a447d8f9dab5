"""Thin Prefect tasks around ``lambda_hat``: caching, retries, artifacts on disk."""
