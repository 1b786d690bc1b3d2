"""Matrix-free linear algebra on a symmetric operator: Lanczos, SLQ, Hutchinson's trace, a density.

- **Lanczos** (:func:`lanczos`): ``m`` steps with full reorthogonalization (Gram–Schmidt twice),
  restarting from a seeded vector orthogonal to the basis when the Krylov space becomes
  invariant; the Ritz values of its tridiagonal ``T`` and their residual bounds ``|β_m s_{m,i}|``
  (each Ritz value is within its bound of an eigenvalue).
- **SLQ** (stochastic Lanczos quadrature, :func:`slq`): ``probes`` Lanczos runs, each from a
  seeded Rademacher probe; the Ritz values are the nodes and the squared first components of the
  Ritz vectors the weights of a discrete spectral measure (each probe's weights sum to 1, so
  ``ρ = mean over probes``).  With ``m`` steps, the quadrature is exact for polynomials of degree
  ``≤ 2m − 1``.
- **Trace** (Hutchinson, :func:`hutchinson_trace`): ``tr(H) = tr(QᵀHQ) + E[zᵀ(I−QQᵀ)H(I−QQᵀ)z]``
  with ``Q`` the orthonormal Krylov basis of a Lanczos run (``tr(QᵀHQ)`` is the sum of its
  tridiagonal's diagonal) and ``z`` seeded Rademacher vectors independent of ``Q``.  Deflating
  the top of the spectrum this way keeps the estimator unbiased and cuts its variance by orders
  of magnitude on operators dominated by a few outliers; without a basis it is the plain
  estimator.
- A **density** on a grid (:func:`broadened_density`): the discrete measure broadened by
  Gaussians of width ``broadening × (largest − smallest node)``, for plotting only.

The operator is anything with ``dim``, ``dtype``, ``device``, ``matvec`` and ``quadratic_form``
(:class:`Operator`), e.g. :class:`~unmasking.spectral.masked_hessian.MaskedHessian`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol

import numpy as np
import scipy.linalg
import torch
from tqdm.auto import tqdm

from ..foundations.seeds import generator

__all__ = ["Lanczos", "Operator", "broadened_density", "hutchinson_trace", "lanczos", "probe_vector", "slq"]


class Operator(Protocol):
    """A symmetric linear operator on ``dim``-vectors of ``dtype`` on ``device``."""

    dim: int
    dtype: torch.dtype
    device: torch.device

    def matvec(self, vector: torch.Tensor) -> torch.Tensor: ...

    def quadratic_form(self, vector: torch.Tensor) -> float: ...


def probe_vector(dim: int, seed: int, *purpose: object, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """A seeded Rademacher vector (entries ±1) of length ``dim``."""
    bits = torch.randint(0, 2, (dim,), generator=generator(seed, *purpose))
    return (2.0 * bits - 1.0).to(device, dtype)


@dataclass
class Lanczos:
    """A Lanczos run: tridiagonal ``T`` (``alpha`` diagonal, ``beta`` off-diagonal), its basis and residual."""

    alpha: np.ndarray  # (m,)
    beta: np.ndarray  # (m-1,): zeros mark restarts after an invariant subspace was found
    residual: float  # β_m = ‖r_m‖, the norm of the part of H q_m outside the basis
    basis: torch.Tensor  # (m, D): orthonormal rows q_1 … q_m

    @property
    def steps(self) -> int:
        return len(self.alpha)

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values (ascending) and the eigenvectors of ``T`` (columns)."""
        if self.steps == 1:
            return self.alpha.copy(), np.ones((1, 1))
        return scipy.linalg.eigh_tridiagonal(self.alpha, self.beta)

    def quadrature(self) -> tuple[np.ndarray, np.ndarray]:
        """Gauss quadrature nodes and weights of the spectral measure seen from the start vector."""
        theta, s = self.ritz()
        return theta, s[0] ** 2

    def top(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` largest Ritz values (descending) and their residual bounds ``|β_m s_{m,i}|``."""
        theta, s = self.ritz()
        order = np.argsort(theta)[::-1][:k]
        return theta[order], np.abs(self.residual * s[-1, order])


def _restart_vector(basis: torch.Tensor, seed: int, count: int) -> torch.Tensor:
    """A seeded Gaussian vector orthogonal to the rows of ``basis`` (redrawn if it nearly lies in their span)."""
    for attempt in range(10):
        g = generator(seed, "lanczos-restart", count, attempt)
        w = torch.randn(basis.shape[1], generator=g, dtype=torch.float64).to(basis.device, basis.dtype)
        norm0 = float(torch.linalg.vector_norm(w))
        for _ in range(2):
            w = w - basis.T @ (basis @ w)
        if float(torch.linalg.vector_norm(w)) > 1e-3 * norm0:
            return w
    raise RuntimeError("Lanczos: could not find a restart vector outside the Krylov basis")


def lanczos(
    matvec: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    steps: int,
    restart_seed: int = 0,
    progress: bool | str = False,
) -> Lanczos:
    """``steps`` Lanczos iterations from ``start`` with full reorthogonalization (Gram–Schmidt twice).

    When the Krylov space becomes invariant (the new residual vanishes to rounding), the run
    continues from a seeded random vector orthogonal to the basis with a zero off-diagonal
    entry, so ``T`` stays the projection of the operator on the basis.  Stops early only when
    the basis spans the whole space.
    """
    dim = start.numel()
    steps = min(int(steps), dim)
    dtype, device = start.dtype, start.device
    tol = 100 * torch.finfo(dtype).eps
    basis = torch.zeros(steps, dim, dtype=dtype, device=device)
    alpha, beta = np.zeros(steps), np.zeros(max(steps - 1, 0))
    q = start / torch.linalg.vector_norm(start)
    scale, residual, restarts = 0.0, 0.0, 0
    for j in tqdm(
        range(steps), desc=progress if isinstance(progress, str) else "lanczos", disable=not progress, leave=False
    ):
        basis[j] = q
        w = matvec(q)
        a = float(torch.dot(q, w))
        alpha[j] = a
        done = basis[: j + 1]
        for _ in range(2):
            w = w - done.T @ (done @ w)
        b = float(torch.linalg.vector_norm(w))
        scale = max(scale, abs(a), b)
        if j == steps - 1:
            residual = b
            break
        if b <= tol * max(scale, 1e-300):
            w = _restart_vector(done, restart_seed, restarts)
            restarts += 1
            b = 0.0
        beta[j] = b
        q = w / torch.linalg.vector_norm(w)
    return Lanczos(alpha, beta, residual, basis)


def slq(
    op: Operator, probes: int, steps: int, seed: int, *purpose: object, progress: bool = False
) -> tuple[np.ndarray, np.ndarray, list[Lanczos]]:
    """Stochastic Lanczos quadrature: nodes and weights ``(probes, steps)`` (padding: NaN nodes, zero weights)."""
    m = min(steps, op.dim)
    nodes, weights = np.full((probes, steps), np.nan), np.zeros((probes, steps))
    runs = []
    for i in range(probes):
        z = probe_vector(op.dim, seed, "hessian", "slq", *purpose, i, dtype=op.dtype, device=op.device)
        run = lanczos(op.matvec, z, m, restart_seed=seed, progress=f"SLQ probe {i + 1}/{probes}" if progress else False)
        theta, tau = run.quadrature()
        nodes[i, : len(theta)], weights[i, : len(theta)] = theta, tau
        runs.append(run)
    return nodes, weights, runs


def hutchinson_trace(
    op: Operator, probes: int, seed: int, *purpose: object, deflation: Lanczos | None = None
) -> tuple[float, float, np.ndarray]:
    """Hutchinson's trace estimate, its standard error and the per-probe samples.

    With ``deflation``, the exactly known ``tr(QᵀHQ) = Σ α`` of that Lanczos basis ``Q`` is added to
    the Hutchinson estimate of the trace of the rest, ``zᵀ(I−QQᵀ)H(I−QQᵀ)z``.
    """
    complete = deflation is not None and deflation.steps == op.dim
    if probes < 1 and not complete:
        raise ValueError("a trace estimate needs Hutchinson probes (unless the deflation basis spans the space)")
    base = float(np.sum(deflation.alpha)) if deflation is not None else 0.0
    samples = np.full(probes, base)
    if complete:  # tr(QᵀHQ) with a complete orthonormal basis is the trace itself
        return base, 0.0, samples
    for i in range(probes):
        z = probe_vector(op.dim, seed, "hessian", "hutchinson", *purpose, i, dtype=op.dtype, device=op.device)
        if deflation is not None:
            for _ in range(2):
                z = z - deflation.basis.T @ (deflation.basis @ z)
        samples[i] = base + op.quadratic_form(z)
    std = float(np.std(samples, ddof=1) / math.sqrt(probes)) if probes > 1 else math.nan
    return float(np.mean(samples)), std, samples


def broadened_density(
    nodes: np.ndarray, weights: np.ndarray, broadening: float = 0.01, points: int = 400
) -> tuple[np.ndarray, np.ndarray]:
    """The probe-averaged discrete measure convolved with a Gaussian, on a grid spanning the nodes.

    The width is ``broadening × (max node − min node)`` (absolute ``broadening`` when all nodes
    coincide); the grid extends 5 widths past the extreme nodes.  Integrates to 1 over the grid.
    """
    ok = np.isfinite(nodes) & (weights > 0)
    lam, w = nodes[ok], weights[ok] / np.sum(weights[ok])
    span = float(lam.max() - lam.min())
    sigma = broadening * span if span > 0 else broadening
    grid = np.linspace(lam.min() - 5 * sigma, lam.max() + 5 * sigma, points)
    dens = (w[None, :] * np.exp(-0.5 * ((grid[:, None] - lam[None, :]) / sigma) ** 2)).sum(1)
    return grid, dens / (sigma * math.sqrt(2 * math.pi))
