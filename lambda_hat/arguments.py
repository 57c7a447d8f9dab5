"""Command-line helpers that import nothing heavy: ``--help`` and argument errors must
answer at once, before JAX, Prefect or Optuna are loaded.

>>> parse = int_between(1, 10)
>>> parse("3")
3
"""

from __future__ import annotations

import argparse
import math


class DefaultsHelp(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each option's default, except where there is none to show (flags,
    and options whose default comes from a setting, which their help names)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or action.default is argparse.SUPPRESS:
            return action.help or ""
        return super()._get_help_string(action) or ""


class OneLineErrors(argparse.ArgumentParser):
    """Bad arguments: one line naming the argument (not argparse's usage block), exit 2."""

    def error(self, message: str):
        self.exit(2, f"error: {message}\n")


def int_between(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}, got {value}")
        return value

    return parse


def float_in(low: float, high: float):
    """A finite number in (low, high]."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (math.isfinite(value) and low < value <= high):
            raise argparse.ArgumentTypeError(f"must be > {low:g} and <= {high:g}, got {text}")
        return value

    return parse
