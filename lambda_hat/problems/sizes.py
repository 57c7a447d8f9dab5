"""How much memory a problem needs, estimated from its spec before anything is allocated,
so that a size that cannot fit is refused in one line instead of failing minutes later
inside a worker (``n: 1000000000000`` once asked for 21.8 TiB after 81 s).

The estimate (float64 throughout) is the largest of the stages that hold memory at once:

- the data, X and Y, with the teacher's outputs and the noise as temporaries (3 copies);
- full-batch forward and backward passes, once per vmapped chain (the reference's chains
  and MCLMC's), with the activations of every layer kept for the backward pass;
- the Hessian at w* (the saddle check computes it in full) and its eigendecomposition.

It errs on the high side; the limit is ``LAMBDA_HAT_MEMORY_LIMIT_GB`` (default: 80 % of
this machine's physical memory).

>>> from lambda_hat.problems.specs import load_problem_set
>>> spec = load_problem_set("smoke").problems[0]
>>> estimate(spec).total < 50 * 2**20
True
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from lambda_hat.problems.custom import CustomModel, load
from lambda_hat.problems.specs import ProblemSet, ProblemSpec, SpecError

FLOAT_BYTES = 8
CHAINS = 4  # the reference's default; MCLMC runs as many or fewer
DEFAULT_FRACTION = 0.8


@dataclass(frozen=True)
class Estimate:
    data: int
    activations: int
    hessian: int

    @property
    def total(self) -> int:
        return self.data + max(self.activations, self.hessian)

    @property
    def field(self) -> str:
        """The spec field that drives the estimate: what to change to make it fit."""
        return "model (parameters)" if self.hessian > self.activations else "data.n"


def parameter_count(spec: ProblemSpec) -> int:
    widths = spec.widths
    weights = sum(a * b for a, b in zip(widths[:-1], widths[1:], strict=True))
    biases = sum(widths[1:]) if spec.model.family == "mlp" and spec.model.bias else 0
    return weights + biases


def estimate(spec: ProblemSpec, chains: int = CHAINS) -> Estimate:
    if isinstance(spec.model, CustomModel):  # loaded (and checked) with the spec
        loaded = load(spec.model)
        d, columns = loaded.w0.size, loaded.x[0].size + loaded.y.shape[1]
        data = 3 * spec.data.n * columns * FLOAT_BYTES
        activations = 2 * chains * spec.data.n * columns * FLOAT_BYTES  # its layers: unknown
        return Estimate(data=data, activations=activations, hessian=3 * d * d * FLOAT_BYTES)
    n, widths = spec.data.n, spec.widths
    d = parameter_count(spec)
    data = 3 * n * (widths[0] + widths[-1]) * FLOAT_BYTES
    activations = 2 * chains * n * sum(widths) * FLOAT_BYTES
    hessian = 3 * d * d * FLOAT_BYTES
    return Estimate(data=data, activations=activations, hessian=hessian)


def default_limit_bytes() -> int:
    """80 % of this machine's physical memory."""
    return int(DEFAULT_FRACTION * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def human(size: float) -> str:
    """``human(21.8 * 2**40)`` → ``'21.8 TiB'``.

    >>> human(3 * 2**30), human(512)
    ('3.0 GiB', '512 B')
    """
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def check_fits(problem_set: ProblemSet, limit_bytes: int, source: str) -> None:
    """Refuse, in one line naming the problem, the field, the estimate and the limit, a
    problem whose estimate exceeds ``limit_bytes``."""
    for index, spec in enumerate(problem_set.problems):
        needed = estimate(spec)
        if needed.total > limit_bytes:
            raise SpecError(
                f"{source}: problems[{index}] ({spec.name}): {needed.field} needs about "
                f"{human(needed.total)} of memory, over the limit of {human(limit_bytes)} "
                "(LAMBDA_HAT_MEMORY_LIMIT_GB)"
            )
