"""The Hessian of L_n at w* without forming it: Lanczos on Hessian–vector products.

A dense Hessian costs d² memory and a d³ eigensolve, and on data rows its forward pass
holds d tangents of the whole dataset. Lanczos (ARPACK's ``eigsh``, as SciPy ships it)
needs only products H·v, each one forward-over-reverse pass, so the saddle check and the
largest curvature reach 10⁴ parameters and beyond.

>>> import jax.numpy as jnp
>>> from lambda_hat.problems.models import layer_shapes
>>> from lambda_hat.problems.posterior import Arch, LossData
>>> arch = Arch(layer_shapes((2, 3), bias=False), None)
>>> data = LossData(jnp.eye(2), jnp.zeros((2, 3)), jnp.float64(1.0))
>>> low, high = extreme_eigenvalues(jnp.zeros(6), data, arch)   # H = I/2
>>> round(low, 6), round(high, 6)
(0.5, 0.5)
"""

from __future__ import annotations

from functools import partial

import jax
import numpy as np
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh

from lambda_hat.problems.posterior import Arch, LossData, Moments, empirical_loss


@partial(jax.jit, static_argnames="arch")
def hessian_vector_product(
    w: jax.Array, v: jax.Array, data: LossData | Moments, arch: Arch
) -> jax.Array:
    """H(w)·v for L_n, forward-over-reverse (one JVP of the gradient)."""
    gradient = partial(jax.grad(empirical_loss), data=data, arch=arch)
    return jax.jvp(gradient, (w,), (v,))[1]


def extreme_eigenvalues(
    w: jax.Array, data: LossData | Moments, arch: Arch, rtol: float = 1e-4
) -> tuple[float, float]:
    """The smallest and largest Hessian eigenvalues of L_n at ``w`` (Lanczos, relative
    tolerance ``rtol``; a start vector fixed by the size, so the answer is reproducible)."""
    d = int(w.shape[0])
    if d <= 2:  # ARPACK needs k < d; a 2×2 Hessian is cheaper dense anyway
        dense = np.column_stack(
            [np.asarray(hessian_vector_product(w, e, data, arch)) for e in np.eye(d)]
        )
        eigenvalues = np.linalg.eigvalsh(0.5 * (dense + dense.T))
        return float(eigenvalues[0]), float(eigenvalues[-1])
    operator = LinearOperator(
        (d, d),
        matvec=lambda v: np.asarray(hessian_vector_product(w, v.ravel(), data, arch)),
        dtype=np.float64,
    )
    start = np.random.default_rng(d).normal(size=d)
    high = _extreme(operator, "LA", rtol, start)
    # The smallest eigenvalue as the largest of high·I − H. Asked for directly ("SA"),
    # ARPACK's tolerance is relative to the eigenvalue itself, which at a singular w* is
    # ~0 inside a cluster of ~0s: a 9 600-parameter DLN ran 890 s without converging.
    # Shifted, the error is relative to high − low, the scale a saddle check compares at.
    shifted = LinearOperator((d, d), matvec=lambda v: high * v - operator.matvec(v),
                             dtype=np.float64)  # fmt: skip
    if np.linalg.norm(shifted.matvec(start)) <= rtol * abs(high) * np.linalg.norm(start):
        return high, high  # a random vector in high's eigenspace: H = high·I
    return high - _extreme(shifted, "LA", rtol, start), high


def _extreme(operator: LinearOperator, which: str, rtol: float, start: np.ndarray) -> float:
    """One extreme eigenvalue; ARPACK's best estimate if it ran out of iterations."""
    try:
        return float(eigsh(operator, k=1, which=which, tol=rtol, v0=start,
                           return_eigenvectors=False)[0])  # fmt: skip
    except ArpackNoConvergence as error:
        if len(error.eigenvalues):
            return float(error.eigenvalues[0])
        raise RuntimeError(f"Lanczos found no {which} Hessian eigenvalue") from None
