"""Train w* and check it: is it close enough to a minimum for its LLC to mean something?

Both checks ask how much an imperfection of w* can move the posterior's LLC,
nβ·(E_π[L_n] − L_n(w*)), near w* where L_n ≈ L0 + g·u + ½uᵀHu (u = w − w*):

* **A residual gradient g.** With H ⪰ 0 the posterior is Gaussian with precision
  A = nβH + γI and mean −nβA⁻¹g; the g-dependent part of the LLC is at most
  (nβ)²·gᵀA⁻¹g ≤ (nβ‖g‖)²/γ in size.
* **Negative curvature −μ** (a saddle). Along its direction the precision is γ − nβμ, and
  the LLC changes by −½·nβμ/(γ − nβμ): nothing the posterior sees while nβμ ≪ γ, unbounded
  as nβμ → γ.

A w* passes if the plain test passes (‖g‖ ≤ ``max_grad_norm``, smallest eigenvalue
≥ −``saddle_tol``·largest: what linear networks trained to 1e-8 meet) or if the shift is at
most ``max_llc_shift``. Nonlinear networks and cross-entropies on separable data approach
their infimum slowly and need the second form.

>>> round(llc_shift_bound(grad_norm=1e-3, n_beta=200.0, gamma=1.0), 6)
0.04
>>> round(saddle_shift(min_eigenvalue=-1e-4, n_beta=200.0, gamma=1.0), 6)
0.010204
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import optax
from scipy.optimize import minimize

from lambda_hat.problems.curvature import extreme_eigenvalues, hessian_vector_product
from lambda_hat.problems.posterior import Arch, LossData, Moments, empirical_loss
from lambda_hat.problems.spec_fields import OptimumSpec
from lambda_hat.problems.specs import ProblemSpec


class OptimumError(RuntimeError):
    """Training did not reach a w* close enough to a minimum."""


@partial(jax.jit, static_argnames=("arch", "steps", "lr"))
def _adam(w: jax.Array, data: LossData | Moments, arch: Arch, steps: int, lr: float) -> jax.Array:
    optimizer = optax.adam(lr)
    grad_fn = jax.grad(empirical_loss)

    def step(carry, _):
        w, opt_state = carry
        updates, opt_state = optimizer.update(grad_fn(w, data, arch), opt_state)
        return (optax.apply_updates(w, updates), opt_state), None

    (w, _), _ = jax.lax.scan(step, (w, optimizer.init(w)), None, length=steps)
    return w


@partial(jax.jit, static_argnames=("arch", "steps"))
def _lbfgs(w: jax.Array, data: LossData | Moments, arch: Arch, steps: int) -> jax.Array:
    optimizer = optax.lbfgs()
    loss = partial(empirical_loss, data=data, arch=arch)
    value_and_grad = optax.value_and_grad_from_state(loss)

    def step(carry, _):
        w, state = carry
        value, grad = value_and_grad(w, state=state)
        updates, state = optimizer.update(grad, state, w, value=value, grad=grad, value_fn=loss)
        return (optax.apply_updates(w, updates), state), None

    (w, _), _ = jax.lax.scan(step, (w, optimizer.init(w)), None, length=steps)
    return w


def grad_norm(w: jax.Array, data: LossData | Moments, arch: Arch) -> float:
    return float(jnp.linalg.norm(jax.grad(empirical_loss)(w, data, arch)))


_value_and_grad = jax.jit(jax.value_and_grad(empirical_loss), static_argnames="arch")


def newton_polish(
    w: jax.Array, data: LossData | Moments, arch: Arch, steps: int, tol: float
) -> jax.Array:
    """Up to ``steps`` trust-region Newton–CG iterations (SciPy's ``trust-ncg``) on
    Hessian–vector products: no dense Hessian, so any d.

    What it is for: a nonlinear net's L_n has long, nearly flat valleys where L-BFGS
    crawls (measured on a 67-parameter tanh classifier: 3 000 L-BFGS steps left
    ‖∇L_n‖ = 5e-4, 200 Newton–CG iterations 7e-6).
    """

    def value_and_grad(v: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = _value_and_grad(jnp.asarray(v), data, arch)
        return float(value), np.asarray(grad)

    def hessp(v: np.ndarray, p: np.ndarray) -> np.ndarray:
        return np.asarray(hessian_vector_product(jnp.asarray(v), jnp.asarray(p), data, arch))

    result = minimize(
        value_and_grad, np.asarray(w), jac=True, hessp=hessp, method="trust-ncg",
        options={"gtol": tol, "maxiter": steps},
    )  # fmt: skip
    return jnp.asarray(result.x)


def _improved(
    old: jax.Array, new: jax.Array, data: LossData | Moments, arch: Arch, flatter: bool = False
) -> jax.Array:
    """``new`` if it lowered the loss (and, with ``flatter``, the gradient norm), else
    ``old``. On a cross-entropy whose infimum lies at infinity, L-BFGS's line search can
    throw w far away (measured on digits: from L_n = 6e-4 to 72); Newton–CG stopped by its
    iteration cap can end lower but steeper (measured on a 13-parameter tanh net)."""
    new_loss = float(empirical_loss(new, data, arch))
    better = np.isfinite(new_loss) and new_loss <= float(empirical_loss(old, data, arch))
    if flatter:
        better = better and grad_norm(new, data, arch) <= grad_norm(old, data, arch)
    return new if better else old


def train_optimum(
    w0: np.ndarray, data: LossData | Moments, arch: Arch, opt: OptimumSpec
) -> jax.Array:
    """Adam to get near a minimum, L-BFGS (in rounds) until ‖∇L_n‖ < grad_tol, then, if
    it is still above, Newton–CG. A stage that does not lower the loss is undone."""
    w = jnp.asarray(w0)
    if opt.adam_steps:
        w = _adam(w, data, arch, opt.adam_steps, opt.adam_lr)
    for _ in range(5 if opt.lbfgs_steps else 0):
        if grad_norm(w, data, arch) <= opt.grad_tol:
            break
        polished = _improved(w, _lbfgs(w, data, arch, opt.lbfgs_steps), data, arch)
        if polished is w:
            break
        w = polished
    if opt.newton_steps and grad_norm(w, data, arch) > opt.grad_tol:
        polished = newton_polish(w, data, arch, opt.newton_steps, opt.grad_tol)
        w = _improved(w, polished, data, arch, flatter=True)
    return w


def hessian_extremes(
    w: jax.Array, data: LossData | Moments, arch: Arch, max_dim: int = 1000
) -> tuple[float, float]:
    """Smallest and largest Hessian eigenvalues of L_n at w: dense up to ``max_dim``
    parameters on data rows (whose dense Hessian's forward pass holds d tangents of the
    whole dataset) or 4·max_dim on second moments, Lanczos on Hessian–vector products above.

    A gradient norm near zero does not make a minimum: a teacher whose factors are exactly
    rank r sits on a saddle of L_n (the noise-fitting directions need several factors to
    move at once). Third-order saddles stay invisible here; ``init_jitter`` is the only
    defence against those.
    """
    if w.shape[0] > (4 * max_dim if isinstance(data, Moments) else max_dim):
        return extreme_eigenvalues(w, data, arch)
    eigenvalues = np.linalg.eigvalsh(np.asarray(jax.hessian(empirical_loss)(w, data, arch)))
    return float(eigenvalues[0]), float(eigenvalues[-1])


def llc_shift_bound(grad_norm: float, n_beta: float, gamma: float) -> float:
    """The most a residual gradient can move the LLC: (nβ‖g‖)²/γ (∞ when γ = 0)."""
    return (n_beta * grad_norm) ** 2 / gamma if gamma > 0 else float("inf")


def saddle_shift(min_eigenvalue: float, n_beta: float, gamma: float) -> float:
    """The LLC shift of the most negative curvature: ½·nβμ/(γ − nβμ), μ = −min eigenvalue
    (0 at a minimum, ∞ once the localization no longer holds the direction)."""
    curvature = n_beta * max(-min_eigenvalue, 0.0)
    return 0.5 * curvature / (gamma - curvature) if curvature < gamma else float("inf")


def check_optimum(
    spec: ProblemSpec, gradient: float, low: float, high: float, n_beta: float
) -> None:
    """Raise OptimumError (one line naming the fields) unless w* passes both checks."""
    opt, gamma, label = spec.optimum, spec.posterior.gamma, f"problem {spec.name} ({spec.pid})"
    shift = llc_shift_bound(gradient, n_beta, gamma)
    if not np.isfinite(gradient) or (gradient > opt.max_grad_norm and shift > opt.max_llc_shift):
        raise OptimumError(
            f"{label}: w* gradient norm {gradient:.3g} exceeds "
            f"optimum.max_grad_norm={opt.max_grad_norm:g} and its LLC shift bound {shift:.3g} "
            f"exceeds optimum.max_llc_shift={opt.max_llc_shift:g}; raise optimum.adam_steps/"
            "lbfgs_steps or loosen either"
        )
    relative = low / max(abs(high), 1e-300)
    saddle = saddle_shift(low, n_beta, gamma)
    if relative < -opt.saddle_tol and saddle > opt.max_llc_shift:
        raise OptimumError(
            f"{label}: w* is a saddle point (relative Hessian eigenvalue "
            f"{relative:.3g} < -optimum.saddle_tol={opt.saddle_tol:g}, LLC shift {saddle:.3g} > "
            f"optimum.max_llc_shift={opt.max_llc_shift:g}); raise optimum.init_jitter or use "
            "optimum.init: random"
        )
