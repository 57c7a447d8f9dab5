"""Show the science library's warnings (storage retries, rebuilt files, reaped trials) in
the Prefect UI beside the flow's own logs."""

from __future__ import annotations

import logging

from prefect.logging.handlers import APILogHandler


def forward_library_logs() -> None:
    """Send ``lambda_hat`` log records of INFO and above to the running flow's logs (once
    per process; the handler finds the current flow run when a record is emitted)."""
    logger = logging.getLogger("lambda_hat")
    if not any(isinstance(handler, APILogHandler) for handler in logger.handlers):
        logger.addHandler(APILogHandler())
        logger.setLevel(logging.INFO)
