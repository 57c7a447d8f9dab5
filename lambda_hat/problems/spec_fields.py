"""The sections of a problem spec: data, teacher, posterior and optimum settings.

``lambda_hat.problems.specs`` puts them together into a ``ProblemSpec``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Frozen(BaseModel):
    # Non-finite numbers (.inf, .nan) are refused where they are read: downstream they
    # break hashing, JSON and every sampler.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


# Magnitudes beyond these overflow float64 in the loss or its Hessian (an input scale of
# 1e200 squared is inf): refused in one line naming the field, not met as NaN mid-run.
MAX_MAGNITUDE = 1e6
MAX_WEIGHT_SCALE = 1e3  # raised to the depth: a five-layer teacher reaches 1e15


class InputSpec(Frozen):
    """Inputs: ``normal`` with standard deviation ``scale`` or ``uniform`` on [−scale, scale]."""

    dist: Literal["normal", "uniform"] = "normal"
    scale: float = Field(default=1.0, gt=0, le=MAX_MAGNITUDE)


DIGITS_IMAGES, DIGITS_PIXELS, DIGITS_CLASSES = 1797, 64, 10  # scikit-learn's bundled 8×8 set


class DataSpec(Frozen):
    """Where the data comes from and how it is scored.

    ``source: teacher`` draws inputs and labels them with a random teacher network;
    ``source: digits`` takes ``n`` of scikit-learn's 1 797 bundled 8×8 digit images (pixels
    scaled to [−1, 1]; nothing is downloaded). ``likelihood: gaussian`` scores outputs by
    the Gaussian NLL with std ``noise_sigma``; ``categorical`` by softmax cross-entropy
    (the teacher's outputs are then logits, and each label is drawn from their softmax).
    """

    n: int = Field(ge=2, description="number of samples (>= 2 so that log n > 0)")
    source: Literal["teacher", "digits"] = "teacher"
    likelihood: Literal["gaussian", "categorical"] = "gaussian"
    input: InputSpec = InputSpec()
    noise_sigma: float = Field(
        default=0.5, ge=1 / MAX_MAGNITUDE, le=MAX_MAGNITUDE, description="Gaussian noise std of y"
    )


class TeacherSpec(Frozen):
    """For dln/rrr: the true rank (random factors of that rank). For mlp: teacher widths."""

    rank: int | None = Field(default=None, ge=0)
    widths: tuple[int, ...] | None = None
    weight_scale: float = Field(default=1.0, gt=0, le=MAX_WEIGHT_SCALE)


class PosteriorSpec(Frozen):
    """log π(w) = −nβ·L_n(w) − (γ/2)‖w − w*‖², β = beta0 / log n."""

    beta0: float = Field(default=1.0, gt=0, le=MAX_MAGNITUDE)
    gamma: float = Field(default=1.0, ge=0, le=MAX_MAGNITUDE**2)


# The LLC shift a residual gradient may cause (docs/user-guide.md): below every reference's
# standard error at the sizes shipped (measured: the smallest is about 0.02).
MAX_LLC_SHIFT = 0.01


class OptimumSpec(Frozen):
    """How w* is found: Adam, then L-BFGS, then Newton–CG, in float64, until
    ‖∇L_n‖ < grad_tol; and when it is accepted (see ``lambda_hat.problems.optimum``)."""

    init: Literal["teacher", "random"] = "teacher"
    init_jitter: float = Field(
        default=1e-2,
        ge=0,
        description="std of noise added to the teacher: lets training leave the saddles "
        "where every factor has rank exactly r (measured: w* at such a point "
        "underestimated λ by 20 %)",
    )
    adam_steps: int = Field(default=2000, ge=0)
    adam_lr: float = Field(default=1e-2, gt=0)
    lbfgs_steps: int = Field(default=500, ge=0)
    newton_steps: int = Field(
        default=200,
        ge=0,
        le=100_000,
        description="trust-region Newton–CG iterations after L-BFGS, run only while "
        "‖∇L_n‖ > grad_tol (nonlinear nets: L-BFGS crawls along their flat valleys)",
    )
    grad_tol: float = Field(default=1e-8, gt=0)
    max_grad_norm: float = Field(
        default=1e-4,
        gt=0,
        description="accept a w* whose gradient norm is at most this, whatever its LLC shift",
    )
    max_llc_shift: float = Field(
        default=MAX_LLC_SHIFT,
        ge=0,
        le=MAX_MAGNITUDE,
        description="else accept it if the gradient can move the posterior's LLC by at "
        "most this: (nβ·‖∇L_n(w*)‖)²/γ (see docs/user-guide.md, 'The optimum w*')",
    )
    saddle_tol: float = Field(
        default=1e-6,
        gt=0,
        description="refuse a w* whose Hessian has an eigenvalue below −saddle_tol·(largest)",
    )
