"""Exact finite-n LLCs of the project's own posterior, where one is computable.

The reference is judged against these, not against λ: at finite n the LLC of the tempered,
localized posterior, nβ·(E_π[L_n] − L_n(w*)), is not the learning coefficient.

* ``regular_llc``: a single linear layer. The posterior is Gaussian, so the LLC is
  ½·Σ nβh/(nβh + γ) over the eigenvalues h of L_n's Hessian.
* ``rrr_llc``: reduced-rank regression y = B·A·x with a small first layer (H·M ≤ 2, or 3
  with a coarser grid). Given A the model is linear in B, so the posterior over B
  (localizing prior included) is Gaussian and integrates in closed form; only A is
  integrated numerically, with Gauss–Legendre panels that halve in width towards 0 and
  towards the entries of A* (where the posterior's scales are) out to A* ± ``width``/√γ.
  A scalar chain f = a·b·x is the case M = H = N = 1; ``scalar_chain_llc`` integrates
  longer chains (f = abc·x) with the last weight in closed form.

Both take the second moments of the data (``Moments``) and the posterior constants, so
they read exactly the loss the samplers read.

>>> import numpy as np
>>> xx, xy, yy = np.eye(1), np.zeros((1, 1)), 1.0
>>> value = rrr_llc(xx, xy, yy, sigma=1.0, n_beta=100.0, gamma=1.0,
...                 a_star=np.zeros((1, 1)), b_star=np.zeros((1, 1)))
>>> 0.0 < value < 0.5     # f = ab·x, zero teacher: below λ = 1/2 at finite n
True
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def regular_llc(hessian: np.ndarray, n_beta: float, gamma: float) -> float:
    """Exact LLC of a Gaussian posterior: L_n − L0 = ½ δᵀHδ, prior γ, so
    E[nβ(L_n − L0)] = ½·Σ_i nβh_i/(nβh_i + γ).

    >>> regular_llc(np.eye(4), 1e9, 1.0)   # → d/2 as nβ → ∞
    1.999999998
    """
    h = np.linalg.eigvalsh(np.asarray(hessian, dtype=np.float64))
    return float(0.5 * np.sum(n_beta * h / (n_beta * h + gamma)))


@dataclass(frozen=True)
class Grid:
    """Quadrature over the entries of A: ``order``-point Gauss–Legendre per panel, the
    finest panel ``finest_scale``·σ/√(nβ) wide, panels doubling away from each centre,
    out to ``width``/√γ around A*."""

    order: int = 12
    finest_scale: float = 0.25
    width: float = 9.0

    def refined(self) -> Grid:
        return Grid(self.order + 8, self.finest_scale / 2, self.width + 2)


def axis_nodes(
    centres: list[float], low: float, high: float, finest: float, order: int
) -> tuple[np.ndarray, np.ndarray]:
    """Nodes and weights on [low, high]: panel edges at each centre ± finest·2^k."""
    edges = {low, high}
    for centre in centres:
        if low < centre < high:
            edges.add(centre)
        step = finest
        while step < high - low:
            edges.update(e for e in (centre - step, centre + step) if low < e < high)
            step *= 2
    edges = np.array(sorted(edges))
    edges = edges[np.concatenate([[True], np.diff(edges) > finest * 1e-6])]
    x, w = np.polynomial.legendre.leggauss(order)
    left, right = edges[:-1, None], edges[1:, None]
    nodes = (0.5 * (right - left) * x + 0.5 * (right + left)).ravel()
    weights = (0.5 * (right - left) * w).ravel()
    return nodes, weights


def _given_a(a, xx, xy, yy, sigma, n_beta, gamma, b_star):
    """For a batch of A (k, H, M): log of the B-marginal (up to a constant) and
    E[nβ·L_n | A], both in closed form."""
    s2 = sigma**2
    scale = n_beta / s2
    S = np.einsum("khm,mp,kqp->khq", a, xx, a)  # A Σxx Aᵀ
    C = np.einsum("khm,mn->khn", a, xy)  # A Σxy: column j is c_j
    H = a.shape[1]
    P = scale * S + gamma * np.eye(H)
    h = scale * C + gamma * b_star.T[None]  # (k, H, N): h_j = nβ/σ² c_j + γ b*_j
    mu = np.linalg.solve(P, h)  # (k, H, N)
    P_inv = np.linalg.inv(P)
    _, logdet = np.linalg.slogdet(P)
    n_out = xy.shape[1]
    log_weight = 0.5 * np.einsum("khn,khn->k", h, mu) - 0.5 * n_out * logdet
    quad = np.einsum("khn,khq,kqn->k", mu, S, mu) + n_out * np.einsum("khq,kqh->k", S, P_inv)
    cross = np.einsum("khn,khn->k", mu, C)
    mean_loss = 0.5 * scale * (quad - 2 * cross + yy)
    return log_weight, mean_loss


def rrr_llc(
    xx: np.ndarray,
    xy: np.ndarray,
    yy: float,
    *,
    sigma: float,
    n_beta: float,
    gamma: float,
    a_star: np.ndarray,
    b_star: np.ndarray,
    L0: float | None = None,
    grid: Grid | None = None,
    chunk: int = 200_000,
) -> float:
    """Exact E_π[nβ(L_n − L0)] for y = B·A·x (A: H×M, B: N×H) under
    log π = −nβ·L_n − (γ/2)(‖A − A*‖² + ‖B − B*‖²), L_n from the second moments.
    ``L0`` defaults to L_n(A*, B*)."""
    grid = grid or Grid()
    xx, xy = np.asarray(xx, np.float64), np.asarray(xy, np.float64)
    a_star, b_star = np.asarray(a_star, np.float64), np.asarray(b_star, np.float64)
    if L0 is None:
        w = b_star @ a_star
        L0 = 0.5 * (np.sum((w @ xx) * w) - 2 * np.sum(w.T * xy) + yy) / sigma**2
    finest = grid.finest_scale * sigma / np.sqrt(n_beta)
    half = grid.width / np.sqrt(gamma)
    axes = [axis_nodes([0.0, c], c - half, c + half, finest, grid.order) for c in a_star.ravel()]
    shape, sizes = a_star.shape, [len(nodes) for nodes, _ in axes]
    log_terms, values = [], []
    for start in range(0, int(np.prod(sizes)), chunk):
        flat = np.arange(start, min(start + chunk, int(np.prod(sizes))))
        index = np.unravel_index(flat, sizes)
        entries = np.stack([axes[i][0][index[i]] for i in range(len(axes))], axis=1)
        log_w = sum(np.log(axes[i][1][index[i]]) for i in range(len(axes)))
        a = entries.reshape(-1, *shape)
        log_weight, mean_loss = _given_a(a, xx, xy, yy, sigma, n_beta, gamma, b_star)
        prior = -0.5 * gamma * np.sum((entries - a_star.ravel()) ** 2, axis=1)
        log_terms.append(log_weight + prior + log_w)
        values.append(mean_loss)
    log_terms, values = np.concatenate(log_terms), np.concatenate(values)
    weights = np.exp(log_terms - log_terms.max())
    return float(np.sum(weights * values) / np.sum(weights) - n_beta * L0)


def rrr_llc_converged(*args, **kwargs) -> tuple[float, float]:
    """The oracle and its own error estimate: |value − value on a refined grid|."""
    value = rrr_llc(*args, **kwargs)
    finer = rrr_llc(*args, **{**kwargs, "grid": (kwargs.get("grid") or Grid()).refined()})
    return finer, abs(finer - value)


def scalar_chain_llc(problem, points: int = 2001) -> float:
    """E_π[nβ(L_n − L0)] for a chain of 1×1 layers, f(x) = w_1⋯w_L·x, L ≥ 2.

    Given the first L−1 weights (product p), nβ(L_n − L0) is quadratic in the last one, c,
    so c's conditional posterior is Gaussian with closed-form moments; the first L−1
    weights are on a uniform grid of ``points`` per axis over w* ± 8/√γ.
    """
    from lambda_hat.problems.posterior import moments_of

    moments = moments_of(problem.data)
    xx, xy = float(moments.xx[0, 0]), float(moments.xy[0, 0])
    s2, t, gamma = float(moments.sigma) ** 2, problem.n_beta, problem.gamma
    w_star = np.asarray(problem.w_star)
    half = 8.0 / np.sqrt(gamma)
    axes = [np.linspace(c - half, c + half, points) for c in w_star[:-1]]
    grids = np.meshgrid(*axes, indexing="ij")
    product = np.prod(grids, axis=0)
    alpha, kappa = t * xx * product**2 / (2 * s2), t * xy * product / (2 * s2)
    c0 = t * float(moments.yy) / (2 * s2) - t * problem.L0
    precision = 2 * alpha + gamma
    mean = (2 * kappa + gamma * w_star[-1]) / precision
    log_weight = (
        0.5 * precision * mean**2
        - 0.5 * np.log(precision)
        - 0.5 * gamma * sum((grid - c) ** 2 for grid, c in zip(grids, w_star[:-1], strict=True))
    )  # − c0 − γ·c*²/2: the same at every grid point
    conditional = alpha * (mean**2 + 1 / precision) - 2 * kappa * mean + c0
    weight = np.exp(log_weight - log_weight.max())
    return float(np.sum(weight * conditional) / np.sum(weight))


def exact_llc(problem) -> float | None:
    """The exact finite-n LLC of a built problem's posterior where one is computable: one
    linear layer (regular), an RRR / 2-layer DLN whose first layer has H·M ≤ 2, or a
    3-layer scalar chain f = abc·x; else None.
    """
    from lambda_hat.problems.models import unflatten
    from lambda_hat.problems.posterior import is_linear, moments_of

    layers = problem.arch.layers
    scalar = all(layer.n_in == 1 and layer.n_out == 1 for layer in layers)
    if is_linear(problem.arch) and scalar and len(layers) == 3:
        return scalar_chain_llc(problem, points=1001)
    if not is_linear(problem.arch) or len(layers) > 2:
        return None
    moments = moments_of(problem.data)
    xx, xy = np.asarray(moments.xx), np.asarray(moments.xy)
    sigma = float(moments.sigma)
    if len(layers) == 1:
        hessian = np.kron(np.eye(layers[0].n_out), xx) / sigma**2
        return regular_llc(hessian, problem.n_beta, problem.gamma)
    if layers[0].n_in * layers[0].n_out > 2:
        return None
    (a_star, _), (b_star, _) = unflatten(problem.w_star, layers)
    return rrr_llc(
        xx, xy, float(moments.yy), sigma=sigma, n_beta=problem.n_beta, gamma=problem.gamma,
        a_star=np.asarray(a_star), b_star=np.asarray(b_star), L0=problem.L0,
    )  # fmt: skip
