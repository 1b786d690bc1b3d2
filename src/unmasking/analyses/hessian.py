"""E4 — the Hessian spectrum of a level-L solution, restricted to its mask (SPEC §3).

The operator is ``v ↦ P H Pᵀ v`` on the ``D_L`` surviving prunable weights (``P`` gathers the
coordinates alive in ``m_L``), where ``H`` is the Hessian of the mean training cross-entropy on
a fixed, un-augmented subset of the training data with respect to the prunable weights only
(biases and BatchNorm parameters held fixed, BatchNorm in eval mode).  Working in the
``D_L``-dimensional space of surviving weights keeps the pruned coordinates' exact zeros out
of the spectrum; it is the same operator as ``m ⊙ H (m ⊙ v)`` with those zeros removed.

Hessian-vector products are reverse-over-reverse through :func:`torch.func.functional_call`,
summed over chunks of the data so memory stays bounded (with one chunk, the gradient's graph is
built once and reused by every product).  From them:

- **SLQ** (stochastic Lanczos quadrature): ``probes`` Lanczos runs of ``lanczos_steps`` steps
  with full reorthogonalization, each from a seeded Rademacher probe; the Ritz values are the
  nodes and the squared first components of the Ritz vectors the weights of a discrete
  spectral measure (each probe's weights sum to 1, so ``ρ = mean over probes``).  With ``m``
  steps, the quadrature is exact for polynomials of degree ``≤ 2m − 1``.  The tridiagonals are
  stored too: E5 builds better-suited quadrature rules from them.
- **Top-k eigenvalues**: the largest Ritz values of the first probe's Lanczos run (no extra
  Hessian-vector products), with their residual bounds ``|β_m s_{m,i}|`` (each Ritz value is
  within its bound of an eigenvalue).
- **Trace** (Hutchinson): ``tr(H) = tr(QᵀHQ) + E[zᵀ(I−QQᵀ)H(I−QQᵀ)z]`` with ``Q`` the
  orthonormal Krylov basis of the first probe's Lanczos run (``tr(QᵀHQ)`` is the sum of its
  tridiagonal's diagonal) and ``z`` seeded Rademacher vectors independent of ``Q``.  Deflating
  the top of the spectrum this way keeps the estimator unbiased and cuts its variance by
  orders of magnitude on Hessians dominated by a few outliers; ``deflate=False`` gives the
  plain estimator.
- A **density** on a grid: the discrete measure broadened by Gaussians of width
  ``broadening × (largest − smallest node)``, for plotting only.

Seeds: probe ``i`` of level ``L`` is drawn from ``derive_seed(seed, "hessian", "slq", L, i)``, the
Hutchinson vectors from ``(seed, "hessian", "hutchinson", L, i)``, the data subset from
``data.subset("train", subset_size, seed)``; ``seed`` is recorded in the output.
"""

from __future__ import annotations

import copy
import math
import types
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import scipy.linalg
import torch
import xarray as xr
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from ..foundations.hparams import ConfigError
from ..foundations.netcdf import write_dataset
from ..foundations.seeds import generator

DTYPES = {"float32": torch.float32, "float64": torch.float64}

__all__ = ["DTYPES", "HessianSettings", "Lanczos", "MaskedHessian", "broadened_density", "hessian_spectrum",
           "hessian_study", "hutchinson_trace", "keep_freed_memory", "lanczos", "probe_vector", "slq",
           "subset_for"]


@dataclass(frozen=True)
class HessianSettings:
    """Parameters of E4 (defaults and their cost: docs/analyses_hessian.md)."""

    topk: int = 10
    lanczos_steps: int = 40
    probes: int = 2
    hutchinson_probes: int = 4
    subset_size: int | None = None  # None: the whole (train-eval) training set
    chunk_size: int = 4096  # examples per Hessian-vector-product chunk
    dtype: str = "float32"
    deflate: bool = True  # deflated Hutchinson (see the module docstring)
    broadening: float = 0.01  # Gaussian width of the plotted density, relative to the node range
    grid_points: int = 400
    seed: int = 0

    def check(self, spectrum: bool = True) -> "HessianSettings":
        """Raise :class:`ConfigError` on a bad value (``spectrum=False``: ``lanczos_steps = 0`` allowed)."""
        checks = [
            (self.topk >= 1, "topk must be >= 1"),
            (self.lanczos_steps >= (1 if spectrum else 0), "lanczos_steps must be >= 1"),
            (self.probes >= 1, "probes must be >= 1"),
            (self.hutchinson_probes >= 1, "hutchinson_probes must be >= 1"),
            (self.subset_size is None or self.subset_size >= 1, "subset_size must be >= 1 (or None: all)"),
            (self.chunk_size >= 1, "chunk_size must be >= 1"),
            (self.dtype in DTYPES, f"dtype must be one of {sorted(DTYPES)}"),
            (self.broadening > 0, "broadening must be > 0"),
            (self.grid_points >= 2, "grid_points must be >= 2"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"hessian: {message}, got {self}")
        return self


def _bn_eval_forward(self: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """Eval-mode BatchNorm as plain elementwise ops: same values, a cheaper double backward."""
    scale = torch.rsqrt(self.running_var + self.eps)
    shift = -self.running_mean * scale
    if self.weight is not None:
        scale = scale * self.weight
        shift = shift * self.weight + self.bias
    shape = (1, -1) + (1,) * (x.dim() - 2)
    return x * scale.view(shape) + shift.view(shape)


def _eval_copy(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """A copy of ``model`` in eval mode and ``dtype`` whose BatchNorm layers use :func:`_bn_eval_forward`."""
    model = copy.deepcopy(model).to(dtype).eval()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.running_mean is not None:
            module.forward = types.MethodType(_bn_eval_forward, module)
    return model


class MaskedHessian:
    """The Hessian of the mean cross-entropy over ``(x, y)``, restricted to the weights alive in ``mask``.

    Vectors live in the ``D_L``-dimensional space of surviving weights, ordered by the mask's
    parameter order and then by flat index.  ``matvec`` costs one Hessian-vector product: the
    gradient's graph (forward and first backward pass) is built once and kept when the data fit
    in one chunk (``retain=None``; ``True``/``False`` force it), so each product is a single
    backward pass through it; otherwise each product recomputes it chunk by chunk, so memory
    stays bounded by one chunk's graph.  The data stay where they are given (e.g. on the CPU) and
    move to the model's device chunk by chunk.
    """

    def __init__(self, model: nn.Module, mask: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                 chunk_size: int = 4096, dtype: torch.dtype = torch.float32, retain: bool | None = None):
        if len(x) != len(y) or len(y) == 0:
            raise ValueError(f"need matching, non-empty inputs and labels, got {len(x)} and {len(y)}")
        params = dict(model.named_parameters())
        unknown = [n for n in mask if n not in params]
        if unknown:
            raise ConfigError(f"mask names parameters the model does not have: {unknown}")
        self.model = _eval_copy(model, dtype)
        self.device = next(self.model.parameters()).device
        self.dtype = dtype
        self.names = list(mask)
        params = {n: p.detach() for n, p in self.model.named_parameters()}
        self.buffers = {n: b.detach() for n, b in self.model.named_buffers()}
        self.fixed = {n: p for n, p in params.items() if n not in mask}
        self.weights = {n: params[n] for n in self.names}
        self.mask = {n: mask[n].to(self.device).bool() for n in self.names}
        self.index = {n: torch.nonzero(self.mask[n].reshape(-1)).squeeze(1) for n in self.names}
        self.sizes = [len(self.index[n]) for n in self.names]
        self.dim = int(sum(self.sizes))
        if self.dim == 0:
            raise ValueError("the mask keeps no weights: the restricted Hessian is empty")
        self.x, self.y = x, y  # kept where they are; chunks move to the model's device as needed
        self.chunk_size = int(chunk_size)
        self.retain = (self.num_examples <= self.chunk_size) if retain is None else bool(retain)
        self._graphs: list[tuple[list[torch.Tensor], tuple[torch.Tensor, ...]]] | None = None
        self.matvecs = 0

    @property
    def num_examples(self) -> int:
        return len(self.y)

    def _chunks(self):
        for i in range(0, self.num_examples, self.chunk_size):
            x = self.x[i:i + self.chunk_size]
            yield (x.to(self.device, self.dtype if x.is_floating_point() else x.dtype),
                   self.y[i:i + self.chunk_size].to(self.device))

    def _loss_sum(self, weights: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(self.model, ({**self.fixed, **weights}, self.buffers), (x,))
        return nn.functional.cross_entropy(out, y, reduction="sum")

    def gather(self, tensors: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The surviving coordinates of per-parameter tensors, as one ``D_L`` vector."""
        return torch.cat([tensors[n].reshape(-1)[self.index[n]] for n in self.names])

    def scatter(self, vector: torch.Tensor) -> dict[str, torch.Tensor]:
        """A ``D_L`` vector as per-parameter tensors (zeros at pruned coordinates)."""
        out = {}
        for n, part in zip(self.names, torch.split(vector, self.sizes)):
            full = torch.zeros(self.weights[n].numel(), device=self.device, dtype=self.dtype)
            full[self.index[n]] = part
            out[n] = full.view_as(self.weights[n])
        return out

    def flat_weights(self) -> torch.Tensor:
        """The surviving weights themselves (``P w``)."""
        return self.gather(self.weights)

    @torch.no_grad()
    def loss(self) -> float:
        """Mean cross-entropy at the solution."""
        return float(sum(self._loss_sum(self.weights, x, y) for x, y in self._chunks())) / self.num_examples

    def matvec(self, vector: torch.Tensor) -> torch.Tensor:
        """``P H Pᵀ v`` for a ``D_L`` vector ``v``."""
        if vector.shape != (self.dim,):
            raise ValueError(f"expected a vector of length {self.dim}, got shape {tuple(vector.shape)}")
        tangent = self.scatter(vector.to(self.device, self.dtype))
        outputs = [tangent[n] for n in self.names]
        total = torch.zeros(self.dim, device=self.device, dtype=self.dtype)
        for leaves, grads in self._gradient_graphs():
            with torch.enable_grad():
                hv = torch.autograd.grad(grads, leaves, grad_outputs=outputs, retain_graph=self.retain,
                                         allow_unused=True)
            total += self.gather({n: (h if h is not None else torch.zeros_like(leaf))
                                  for n, h, leaf in zip(self.names, hv, leaves)})
        self.matvecs += 1
        return total

    def _gradient_graphs(self):
        """Per chunk: the weight leaves and the gradient of the chunk's share of the mean loss (with its graph)."""
        if self._graphs is not None:
            yield from self._graphs
            return
        graphs = []
        for x, y in self._chunks():
            leaves = [self.weights[n].clone().requires_grad_(True) for n in self.names]
            with torch.enable_grad():
                loss = self._loss_sum(dict(zip(self.names, leaves)), x, y) / self.num_examples
                grads = torch.autograd.grad(loss, leaves, create_graph=True)
            if self.retain:
                graphs.append((leaves, grads))
            yield leaves, grads
        if self.retain:
            self._graphs = graphs

    def quadratic_form(self, vector: torch.Tensor) -> float:
        """``vᵀ H v`` for a ``D_L`` vector."""
        vector = vector.to(self.device, self.dtype)
        return float(torch.dot(vector, self.matvec(vector)))


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


def lanczos(matvec: Callable[[torch.Tensor], torch.Tensor], start: torch.Tensor, steps: int,
            restart_seed: int = 0, progress: bool | str = False) -> Lanczos:
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
    for j in tqdm(range(steps), desc=progress if isinstance(progress, str) else "lanczos",
                  disable=not progress, leave=False):
        basis[j] = q
        w = matvec(q)
        a = float(torch.dot(q, w))
        alpha[j] = a
        done = basis[:j + 1]
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


def slq(op: MaskedHessian, probes: int, steps: int, seed: int, *purpose: object,
        progress: bool = False) -> tuple[np.ndarray, np.ndarray, list[Lanczos]]:
    """Stochastic Lanczos quadrature: nodes and weights ``(probes, steps)`` (padding: NaN nodes, zero weights)."""
    m = min(steps, op.dim)
    nodes, weights = np.full((probes, steps), np.nan), np.zeros((probes, steps))
    runs = []
    for i in range(probes):
        z = probe_vector(op.dim, seed, "hessian", "slq", *purpose, i, dtype=op.dtype, device=op.device)
        run = lanczos(op.matvec, z, m, restart_seed=seed,
                      progress=f"SLQ probe {i + 1}/{probes}" if progress else False)
        theta, tau = run.quadrature()
        nodes[i, :len(theta)], weights[i, :len(theta)] = theta, tau
        runs.append(run)
    return nodes, weights, runs


def hutchinson_trace(op: MaskedHessian, probes: int, seed: int, *purpose: object,
                     deflation: Lanczos | None = None) -> tuple[float, float, np.ndarray]:
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


def broadened_density(nodes: np.ndarray, weights: np.ndarray, broadening: float = 0.01,
                      points: int = 400) -> tuple[np.ndarray, np.ndarray]:
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


def subset_for(run, settings: HessianSettings) -> tuple[torch.Tensor, torch.Tensor]:
    """The fixed, un-augmented training subset the Hessian is taken on."""
    return run.data.subset("train", settings.subset_size, settings.seed)


def hessian_spectrum(model: nn.Module, mask: Mapping[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                     settings: HessianSettings = HessianSettings(), key: Sequence[object] = (),
                     progress: bool = False) -> dict[str, np.ndarray | float | int]:
    """E4 for one solution: top eigenvalues, trace, SLQ nodes/weights and a plotting density.

    ``key`` (e.g. the level) enters the probes' seeds so that levels draw independent probes.
    """
    settings.check()
    op = MaskedHessian(model, mask, x, y, settings.chunk_size, DTYPES[settings.dtype])
    nodes, weights, runs = slq(op, settings.probes, settings.lanczos_steps, settings.seed, *key, progress=progress)
    alpha, beta = np.full((settings.probes, settings.lanczos_steps), np.nan), np.full_like(nodes, np.nan)
    for i, run in enumerate(runs):
        alpha[i, :run.steps] = run.alpha
        beta[i, :run.steps] = np.append(run.beta, run.residual)
    top, resid = runs[0].top(settings.topk)
    topk = np.full(settings.topk, np.nan)
    topr = np.full(settings.topk, np.nan)
    topk[:len(top)], topr[:len(top)] = top, resid
    trace, trace_std, samples = hutchinson_trace(op, settings.hutchinson_probes, settings.seed, *key,
                                                 deflation=runs[0] if settings.deflate else None)
    grid, dens = broadened_density(nodes, weights, settings.broadening, settings.grid_points)
    slq_trace = op.dim * float(np.nansum(nodes * weights) / settings.probes)
    return {"top_eigenvalues": topk, "top_residuals": topr, "trace": trace, "trace_std": trace_std,
            "trace_samples": samples, "trace_slq": slq_trace, "slq_nodes": nodes, "slq_weights": weights,
            "lanczos_alpha": alpha, "lanczos_beta": beta,
            "lam": grid, "density": dens, "num_weights": op.dim, "train_loss": op.loss(),
            "num_examples": op.num_examples, "matvecs": op.matvecs}


def _check_levels(run, levels: Sequence[int]) -> list[int]:
    levels = [int(v) for v in levels]
    if not levels or len(set(levels)) != len(levels) or min(levels) < 0:
        raise ConfigError(f"levels must be distinct non-negative integers, got {levels}")
    for level in levels:
        if not run.final_path(level).exists():
            raise FileNotFoundError(f"level {level} of {run.root} is not trained ({run.final_path(level)} is missing)")
    return levels


def run_attrs(run, experiment: str, **extra) -> dict:
    """Provenance attrs of an analysis of ``run``."""
    from .interpolation import run_provenance

    return run_provenance(run, experiment, **extra)


def hessian_study(run, levels: Sequence[int], settings: HessianSettings = HessianSettings(),
                  progress: bool = True) -> xr.Dataset:
    """E4 on an :class:`~unmasking.imp.ImpRun` for ``levels``: one dataset with ``seed`` and ``level`` dims."""
    settings.check()
    levels = _check_levels(run, levels)
    x, y = subset_for(run, settings)
    rows = []
    for level in tqdm(levels, desc="hessian", disable=not progress):
        rows.append(hessian_spectrum(run.solution(level), run.mask(level), x, y, settings, key=(level,),
                                     progress=progress))

    def stack(name):
        return np.stack([np.asarray(r[name]) for r in rows])[None]

    lvl = ("seed", "level")
    ds = xr.Dataset(
        {
            "top_eigenvalues": (lvl + ("k",), stack("top_eigenvalues"),
                                {"description": "largest Ritz values of the masked Hessian (first SLQ probe's "
                                                "Lanczos run), descending", "units": "nats / weight^2"}),
            "top_residuals": (lvl + ("k",), stack("top_residuals"),
                              {"description": "Ritz residual bound |beta_m s_m,i|: an eigenvalue lies within it",
                               "units": "nats / weight^2"}),
            "trace": (lvl, stack("trace"), {"description": "tr(P H P^T), Hutchinson"
                                            + (" deflated by the first probe's Krylov basis" if settings.deflate
                                               else ""), "units": "nats / weight^2"}),
            "trace_std": (lvl, stack("trace_std"), {"description": "standard error of the trace estimate",
                                                    "units": "nats / weight^2"}),
            "trace_samples": (lvl + ("hutchinson_probe",), stack("trace_samples"),
                              {"description": "per-probe trace estimates (their mean is trace)",
                               "units": "nats / weight^2"}),
            "trace_slq": (lvl, stack("trace_slq"), {"description": "D_L * mean first SLQ moment (plain Hutchinson "
                                                    "over the SLQ probes)", "units": "nats / weight^2"}),
            "slq_nodes": (lvl + ("probe", "node"), stack("slq_nodes"),
                          {"description": "SLQ quadrature nodes (Ritz values); NaN: padding",
                           "units": "nats / weight^2"}),
            "slq_weights": (lvl + ("probe", "node"), stack("slq_weights"),
                            {"description": "SLQ quadrature weights; each probe's sum to 1, so the spectral density "
                                           "normalized over the D_L weights is their mean over probes"}),
            "lanczos_alpha": (lvl + ("probe", "node"), stack("lanczos_alpha"),
                              {"description": "diagonal of each probe's Lanczos tridiagonal T (NaN: padding)",
                               "units": "nats / weight^2"}),
            "lanczos_beta": (lvl + ("probe", "node"), stack("lanczos_beta"),
                             {"description": "off-diagonal of T (entry i couples steps i and i+1; the last "
                                             "entry is the final residual norm; 0: restart; NaN: padding)",
                              "units": "nats / weight^2"}),
            "density": (lvl + ("grid",), stack("density"),
                        {"description": "spectral density broadened by Gaussians of width broadening * node range",
                         "units": "1 / (nats / weight^2)"}),
            "lam": (lvl + ("grid",), stack("lam"), {"description": "eigenvalue grid of density (per level)",
                                                    "units": "nats / weight^2"}),
            "num_weights": (lvl, stack("num_weights"), {"description": "D_L: surviving prunable weights"}),
            "train_loss": (lvl, stack("train_loss"), {"description": "mean cross-entropy on the Hessian's subset",
                                                      "units": "nats"}),
            "matvecs": (lvl, stack("matvecs"), {"description": "Hessian-vector products used"}),
        },
        coords={"seed": [run.seed], "level": levels, "k": np.arange(settings.topk) + 1,
                "probe": np.arange(settings.probes), "node": np.arange(settings.lanczos_steps),
                "grid": np.arange(settings.grid_points), "hutchinson_probe": np.arange(settings.hutchinson_probes)})
    ds["k"].attrs["description"] = "rank of the eigenvalue (1: largest)"
    ds.attrs.update(run_attrs(run, "E4_hessian", **{f"hessian_{k}": v for k, v in asdict(settings).items()},
                              subset_examples=int(rows[0]["num_examples"]), probe_distribution="rademacher",
                              probe_seeds="derive_seed(hessian_seed, 'hessian', 'slq'|'hutchinson', level, i)",
                              hvp="reverse-over-reverse autograd through torch.func.functional_call, "
                                  "BatchNorm in eval mode, prunable weights only"))
    return ds


def keep_freed_memory() -> bool:
    """Ask glibc to reuse freed large blocks instead of unmapping them (a process-wide setting).

    Every Hessian-vector product allocates and frees many tensors of tens of megabytes; by
    default glibc returns each to the system and page-faults fresh zeroed memory the next time,
    which cost a quarter of the CPU time of the mnist1d CNN's products.  Called by the CLI
    commands only (not by the library functions, which leave the caller's process alone).
    Returns False where it does not apply (not glibc).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3
    return bool(mallopt(m_mmap_threshold, 1 << 28)) and bool(mallopt(m_trim_threshold, 1 << 30))


def add_hessian_args(p, lanczos: bool = True) -> None:
    """Options shared by the Hessian-based subcommands."""
    d = HessianSettings()
    if lanczos:
        p.add_argument("--topk", type=int, default=d.topk, help=f"top eigenvalues to report ({d.topk})")
        p.add_argument("--probes", type=int, default=d.probes, help=f"SLQ probes, i.e. Lanczos runs ({d.probes})")
    p.add_argument("--lanczos-steps", type=int, default=d.lanczos_steps,
                   help=f"Lanczos steps per probe ({d.lanczos_steps})" if lanczos else
                   f"Lanczos steps of the trace's deflation basis; 0: plain Hutchinson ({d.lanczos_steps})")
    p.add_argument("--hutchinson-probes", type=int, default=d.hutchinson_probes,
                   help=f"Hutchinson trace probes ({d.hutchinson_probes})")
    p.add_argument("--subset-size", type=int, default=None,
                   help="training examples the Hessian is taken on (default: the whole train-eval set)")
    p.add_argument("--chunk-size", type=int, default=d.chunk_size,
                   help=f"examples per Hessian-vector-product chunk ({d.chunk_size})")
    p.add_argument("--dtype", choices=sorted(DTYPES), default=d.dtype, help=f"arithmetic precision ({d.dtype})")
    p.add_argument("--seed", type=int, default=d.seed,
                   help=f"seed of the probes, random masks and the data subset ({d.seed})")


def settings_from_args(args, **extra) -> HessianSettings:
    d = HessianSettings()
    return HessianSettings(topk=getattr(args, "topk", d.topk), lanczos_steps=args.lanczos_steps,
                           probes=getattr(args, "probes", d.probes), hutchinson_probes=args.hutchinson_probes,
                           subset_size=args.subset_size, chunk_size=args.chunk_size, dtype=args.dtype,
                           seed=args.seed, **extra)


def _cmd_hessian(args) -> None:
    from ..imp import ImpRun

    keep_freed_memory()
    run = ImpRun.open(args.run, device=args.device, progress=not args.quiet)
    settings = settings_from_args(args, broadening=args.broadening, deflate=not args.no_deflate).check()
    ds = hessian_study(run, args.levels, settings, progress=not args.quiet)
    out = write_dataset(ds, Path(args.out))
    for level in ds.level.values:
        r = ds.sel(level=level).isel(seed=0)
        print(f"level {level:2d}  D_L {int(r.num_weights):7d}  top eigenvalue {float(r.top_eigenvalues[0]):.4g}  "
              f"trace {float(r.trace):.4g} ± {float(r.trace_std):.2g}")
    print(f"wrote {out}")


def register(subparsers) -> None:
    from ..cli import add_common_args

    p = subparsers.add_parser("hessian", help="E4: top eigenvalues, trace and spectral density (SLQ) of the "
                              "Hessian restricted to the mask", description=__doc__.splitlines()[0])
    p.add_argument("--run", required=True, help="a finished IMP run folder")
    p.add_argument("--levels", type=int, nargs="+", required=True, help="levels to analyse")
    p.add_argument("--out", required=True, help="output netCDF file")
    add_hessian_args(p)
    p.add_argument("--broadening", type=float, default=HessianSettings.broadening,
                   help="Gaussian width of the plotted density, as a fraction of the eigenvalue range (0.01)")
    p.add_argument("--no-deflate", action="store_true", help="plain Hutchinson trace (no Krylov deflation)")
    add_common_args(p)
    p.set_defaults(func=_cmd_hessian)
