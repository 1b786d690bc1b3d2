"""E9 — the error landscape on the plane through w_L, m_{L+1} ⊙ w_L and w_{L+1} (SPEC §3, Fig. 1).

The plane is spanned, in the space of all trainable parameters, by the pruning direction
``u = m_{L+1} ⊙ w_L − w_L`` and the retraining direction ``v = w_{L+1} − w_L``.  Gram–Schmidt
(in float64, with one reorthogonalization pass) gives the orthonormal basis ``e1 = u/‖u‖``,
``e2 ∝ v − (v·e1) e1``; plane coordinates ``(x, y)`` name the network
``w_L + x e1 + y e2``.  So ``w_L`` sits at the origin, the projection at ``(R_L, 0)`` and
``w_{L+1}`` at ``(v·e1, ‖v − (v·e1) e1‖)`` — and since ``w_{L+1}`` is zero on the pruned
coordinates, ``v·e1 = R_L``: the triangle has a right angle at the projection.  Parameters
that agree in the three networks (e.g. biases the projection keeps) have zero basis
components and stay fixed.

BatchNorm running statistics are not parameters, so they get a rule (``bn_mode``):

* ``reset`` (default): at every point the statistics are recomputed by a no-grad, train-mode
  pass over the first ``bn_batches`` un-augmented training batches of ``bn_batch_size``
  examples with a cumulative average — E2's ``reset`` rule (E9's default is 10 batches of the
  recipe's training batch size, 1,000 mnist1d examples, where E2 passes the whole training
  set).  The picture is then the error of the network the parameters define.
* ``interpolate``: the statistics follow the weights' affine combination, without
  extrapolation.  A plane point is ``w_L + α u + β v``; its buffers are
  ``s_L + α' (s_proj − s_L) + β' (s_{L+1} − s_L)`` with ``α', β'`` = ``α, β`` clipped to
  ``[0, 1]`` and ``s_proj = s_L`` (pruning leaves the statistics alone), i.e.
  ``(1 − β') s_L + β' s_{L+1}``.  Exact at the three networks and equal to E2's ``interpolate``
  mode on the segment ``w_L → w_{L+1}``.

Why ``reset`` is the default: on the embedded CNN, IMP leaves BatchNorm channels whose inputs
are all pruned (1–11 channels of ``bn3`` with running variance < 1e-6 at levels 8–12).  Off
the segment ``w_L → w_{L+1}`` the plane gives such a channel non-zero weights again while any
interpolated statistics keep its variance near zero, so the channel is amplified ~300× and the
grid shows walls of 60–84 % test error next to ``w_{L+1}`` where recomputed statistics give
4–6 % (unclipped extrapolation is worse still: 37 % against 3 % beyond ``w_{L+1}`` already at
level 7).  Keeping ``w_L``'s statistics everywhere would not even reproduce ``w_{L+1}``'s error.

The marked points are the three defining networks and the two rewind points
``m_L ⊙ w_t`` and ``m_{L+1} ⊙ w_t`` (with ``w_t``'s other parameters), which generally lie off the
plane: their coordinates are their orthogonal projections, and ``point_offplane`` is their
distance from the plane.  Each point's errors are those of the actual network (its own
BatchNorm statistics in ``interpolate`` mode, recomputed ones in ``reset`` mode), not of its
projection.

The grid has ``N × N`` points covering the three defining points (optionally the projected
rewind points too) with a margin of ``margin × (largest extent)`` on every side.  Grid points
are evaluated with ``torch.func.functional_call`` on one template model in eval mode (no
model rebuilt per point), one whole-split batch per point for small data; with ``chunk > 1``
several points go through one ``torch.func.vmap``-ed call.  On CPU vmap is slower (it turns
convolutions into grouped convolutions: 10 ms per point versus 6.6 ms for the embedded CNN on
the 1,000 test examples), so the default chunk is 1 on CPU and 16 on CUDA.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch
import xarray as xr
from torch import nn
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from ..data import Data
from ..foundations.hparams import ConfigError

State = Mapping[str, torch.Tensor]

BN_MODES = ("interpolate", "reset")
POINTS = ("solution", "projection", "next_solution", "rewind", "next_rewind")
POINT_LABELS = {
    "solution": "w_L",
    "projection": "m_L+1 * w_L",
    "next_solution": "w_L+1",
    "rewind": "m_L * w_t",
    "next_rewind": "m_L+1 * w_t",
}
DEFAULT_GRID = 21
DEFAULT_MARGIN = 0.2
DEFAULT_BN_MODE = "reset"
DEFAULT_BN_BATCHES = 10


@dataclass(frozen=True)
class LandscapeSettings:
    """Options of E9 (the ``landscape`` command's flags)."""

    grid: int = field(default=DEFAULT_GRID, metadata={"help": "points per axis (default: %(default)s)"})
    margin: float = field(
        default=DEFAULT_MARGIN,
        metadata={"help": "margin around the points, as a fraction of their largest extent (default: %(default)s)"},
    )
    bn_mode: str = field(
        default=DEFAULT_BN_MODE,
        metadata={
            "help": "BatchNorm statistics on the plane: recomputed at each point, or interpolated like the weights "
            "(default: %(default)s)",
            "choices": BN_MODES,
        },
    )
    bn_batches: int = field(
        default=DEFAULT_BN_BATCHES,
        metadata={"help": "training batches for the reset mode's statistics (default: %(default)s)"},
    )
    bn_batch_size: int | None = field(
        default=None, metadata={"help": "batch size of the reset pass (default: the recipe's train.batch_size)"}
    )
    splits: tuple[str, ...] = field(
        default=("test",), metadata={"help": "data splits to evaluate (default: test)", "choices": ("test", "train")}
    )
    chunk: int | None = field(
        default=None,
        metadata={"help": "grid points evaluated per call, with vmap when > 1 (default: 1 on CPU, 16 on CUDA)"},
    )
    batch_size: int | None = field(
        default=None,
        metadata={"help": "examples per forward pass and grid point (default: the recipe's eval_batch_size // chunk)"},
    )
    cover_rewind: bool = field(
        default=False, metadata={"help": "extend the grid to cover the projected rewind points as well"}
    )

    def check(self) -> "LandscapeSettings":
        """Raise :class:`ConfigError` on a bad value."""
        if (
            self.grid < 2
            or self.margin < 0
            or min(self.chunk or 1, self.batch_size or 1, self.bn_batches, self.bn_batch_size or 1) < 1
        ):
            raise ConfigError(
                "--grid must be >= 2, --margin >= 0, and --chunk, --batch-size, --bn-batches and --bn-batch-size >= 1"
            )
        return self


def default_chunk(device: torch.device | str) -> int:
    """Grid points per call: 1 on CPU (plain calls are fastest there), 16 on accelerators."""
    return 1 if torch.device(device).type == "cpu" else 16


def _flatten(state: State, names: Sequence[str]) -> torch.Tensor:
    return torch.cat([state[n].detach().reshape(-1).double().cpu() for n in names])


@dataclass
class Plane:
    """An affine plane in parameter space with an orthonormal basis, plus the BatchNorm buffer rule.

    ``origin``, ``e1``, ``e2`` are float64 vectors over the concatenated parameters ``names``;
    ``anchors`` holds the plane coordinates of the defining points (``w_a``, ``w_p``, ``w_b``);
    ``buffers`` the three networks' buffers.
    """

    names: list[str]
    shapes: list[torch.Size]
    dtypes: list[torch.dtype]
    origin: torch.Tensor
    e1: torch.Tensor
    e2: torch.Tensor
    anchors: np.ndarray
    buffers: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]

    def coords(self, params: State) -> tuple[float, float, float]:
        """``(x, y, distance from the plane)`` of a network's parameters (orthogonal projection)."""
        d = _flatten(params, self.names) - self.origin
        x, y = float(d @ self.e1), float(d @ self.e2)
        return x, y, float(torch.linalg.vector_norm(d - x * self.e1 - y * self.e2))

    def affine(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Coefficients ``(α, β)`` with point = ``w_a + α (w_p − w_a) + β (w_b − w_a)``."""
        (px, _), (bx, by) = self.anchors[1], self.anchors[2]
        beta = np.asarray(y, dtype=float) / by
        return (np.asarray(x, dtype=float) - beta * bx) / px, beta

    def flat_at(self, x: np.ndarray, y: np.ndarray) -> torch.Tensor:
        """Flat float64 parameters of the points ``(x[i], y[i])``, shape ``[K, P]``."""
        x = torch.as_tensor(np.atleast_1d(x), dtype=torch.float64)[:, None]
        y = torch.as_tensor(np.atleast_1d(y), dtype=torch.float64)[:, None]
        return self.origin + x * self.e1 + y * self.e2

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Split ``[K, P]`` flat parameters into ``{name: [K, *shape]}``."""
        sizes = [math.prod(s) for s in self.shapes]
        return {n: t.reshape(flat.shape[0], *s) for n, s, t in zip(self.names, self.shapes, flat.split(sizes, 1))}

    def buffers_at(self, x: np.ndarray, y: np.ndarray) -> dict[str, torch.Tensor]:
        """``interpolate``-mode buffers of the points, ``{name: [K, *shape]}``.

        The affine coefficients are clipped to ``[0, 1]`` (no extrapolation of statistics);
        integer buffers are ``w_a``'s.
        """
        alpha, beta = (
            torch.as_tensor(np.clip(np.atleast_1d(c), 0.0, 1.0), dtype=torch.float64) for c in self.affine(x, y)
        )
        a, p, b = self.buffers
        out = {}
        for n, ba in a.items():
            if not ba.is_floating_point():
                out[n] = ba.unsqueeze(0).expand(len(alpha), *ba.shape).clone()
                continue
            shape = (len(alpha),) + (1,) * ba.dim()
            ba64 = ba.double()
            v = ba64 + alpha.view(shape) * (p[n].double() - ba64) + beta.view(shape) * (b[n].double() - ba64)
            if n.endswith("running_var"):
                v = v.clamp_min(0.0)
            out[n] = v.to(ba.dtype)
        return out

    def state_at(self, x: float, y: float) -> dict[str, torch.Tensor]:
        """A full state dict (parameters and ``interpolate``-mode buffers) of one plane point."""
        flat = self.unflatten(self.flat_at(x, y))
        params = {n: flat[n][0].to(dt) for n, dt in zip(self.names, self.dtypes)}
        return {**params, **{n: t[0] for n, t in self.buffers_at(x, y).items()}}


def plane_through(a: State, p: State, b: State, names: Sequence[str]) -> Plane:
    """The plane through three networks (state dicts) over the parameters ``names``, origin ``a``.

    Raises ``ValueError`` when ``p = a`` or ``b − a`` is parallel to ``p − a`` (no plane).
    """
    names = list(names)
    missing = [n for n in names if not all(n in s for s in (a, p, b))]
    if missing:
        raise ValueError(f"parameters {missing} are missing from one of the three networks")
    origin = _flatten(a, names)
    u, v = _flatten(p, names) - origin, _flatten(b, names) - origin
    nu = float(torch.linalg.vector_norm(u))
    if nu == 0.0:
        raise ValueError("the projection equals the solution (nothing pruned): no plane")
    e1 = u / nu
    w = v - (v @ e1) * e1
    w = w - (w @ e1) * e1
    nw = float(torch.linalg.vector_norm(w))
    if nw <= 1e-12 * max(float(torch.linalg.vector_norm(v)), 1e-300):
        raise ValueError("w_L+1 - w_L is parallel to the pruning direction: the three points span no plane")
    e2 = w / nw
    anchors = np.array([[0.0, 0.0], [nu, 0.0], [float(v @ e1), float(v @ e2)]])
    bufs = tuple({n: t.detach().cpu().clone() for n, t in s.items() if n not in set(names)} for s in (a, p, b))
    if not set(bufs[0]) == set(bufs[1]) == set(bufs[2]):
        raise ValueError("the three networks have different buffers")
    return Plane(names, [a[n].shape for n in names], [a[n].dtype for n in names], origin, e1, e2, anchors, bufs)


def grid_axes(
    plane: Plane, grid: int = DEFAULT_GRID, margin: float = DEFAULT_MARGIN, extra: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Grid coordinates covering the defining points (and ``extra`` ``[n, 2]`` points) with a margin."""
    if grid < 2:
        raise ValueError(f"grid needs at least 2 points per axis, got {grid}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    pts = plane.anchors if extra is None else np.concatenate([plane.anchors, np.asarray(extra).reshape(-1, 2)])
    lo, hi = pts.min(0), pts.max(0)
    pad = margin * float((hi - lo).max())
    return np.linspace(lo[0] - pad, hi[0] + pad, grid), np.linspace(lo[1] - pad, hi[1] + pad, grid)


@torch.no_grad()
def evaluate_states(
    model: nn.Module,
    params: Mapping[str, torch.Tensor],
    buffers: Mapping[str, torch.Tensor],
    data: Data,
    split: str,
    batch_size: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean cross-entropy and 0-1 error of ``K`` networks at once (eval mode).

    ``params``/``buffers`` map names to stacked ``[K, *shape]`` tensors; ``model`` only gives the
    architecture (``functional_call``, under ``vmap`` when ``K > 1``).
    """
    device = next(iter(params.values())).device
    k = next(iter(params.values())).shape[0]
    model = model.eval()
    if k == 1:

        def forward(p, b, x):
            return functional_call(
                model, ({n: t[0] for n, t in p.items()}, {n: t[0] for n, t in b.items()}), (x,)
            ).unsqueeze(0)
    else:
        forward = vmap(lambda p, b, x: functional_call(model, (p, b), (x,)), in_dims=(0, 0, None))
    loss = torch.zeros(k, dtype=torch.float64, device=device)
    wrong = torch.zeros(k, dtype=torch.long, device=device)
    n = 0
    for x, y in data.eval_batches(split, batch_size, device):
        out = forward(dict(params), dict(buffers), x).float()
        loss += (
            nn.functional.cross_entropy(out.reshape(-1, out.shape[-1]), y.repeat(k), reduction="none")
            .view(k, -1)
            .double()
            .sum(1)
        )
        wrong += (out.argmax(-1) != y).sum(1)
        n += len(y)
    return (loss / n).cpu().numpy(), (wrong.double() / n).cpu().numpy()


class BatchNormReset:
    """Recomputes BatchNorm running statistics for given parameters (``bn_mode='reset'``).

    One no-grad, train-mode pass over fixed input ``batches`` with a cumulative average
    (``momentum=None``), through ``functional_call`` on a private train-mode copy of ``model``;
    the statistics start fresh (mean 0, variance 1, count 0), so the result depends only on the
    parameters and the batches.  Same rule as E2's ``reset`` mode.
    """

    def __init__(self, model: nn.Module, batches: Sequence[torch.Tensor]):
        self.net = copy.deepcopy(model).train()
        self.bn_buffers: list[str] = []
        for name, m in self.net.named_modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
                m.momentum = None
                prefix = f"{name}." if name else ""
                self.bn_buffers += [prefix + b for b in ("running_mean", "running_var", "num_batches_tracked")]
        self.batches = list(batches) if self.bn_buffers else []

    @torch.no_grad()
    def __call__(
        self, params: Mapping[str, torch.Tensor], buffers: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Buffers of one network (unstacked ``params``/``buffers``) with its statistics recomputed."""
        fresh = dict(buffers)
        for n in self.bn_buffers:
            fresh[n] = (torch.ones_like if n.endswith("running_var") else torch.zeros_like)(buffers[n])
        for x in self.batches:
            functional_call(self.net, (dict(params), fresh), (x,))
        return fresh

    def stacked(
        self, params: Mapping[str, torch.Tensor], buffers: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """The same for ``K`` networks given as stacked ``[K, *shape]`` tensors."""
        k = next(iter(params.values())).shape[0]
        out = [self({n: t[i] for n, t in params.items()}, {n: t[i] for n, t in buffers.items()}) for i in range(k)]
        return {n: torch.stack([o[n] for o in out]) for n in buffers}


def bn_reset_batches(data: Data, batches: int, batch_size: int, device) -> list[torch.Tensor]:
    """The first ``batches`` un-augmented training batches (inputs), as E2 uses them."""
    if batches < 1 or batch_size < 1:
        raise ValueError(f"bn_batches and bn_batch_size must be positive, got {batches} and {batch_size}")
    return [x for _, (x, _y) in zip(range(batches), data.eval_batches("train", batch_size, device))]


def _model_dtypes(model: nn.Module) -> dict[str, torch.dtype]:
    return {n: t.dtype for n, t in model.state_dict().items()}


def _stack_states(states: Sequence[State], names: Sequence[str], device) -> dict[str, torch.Tensor]:
    return {n: torch.stack([s[n].detach() for s in states]).to(device) for n in names}


def evaluate_plane(
    model: nn.Module,
    plane: Plane,
    xs: np.ndarray,
    ys: np.ndarray,
    data: Data,
    splits: Sequence[str] = ("test",),
    batch_size: int = 1000,
    bn_mode: str = DEFAULT_BN_MODE,
    bn_batches: int = DEFAULT_BN_BATCHES,
    bn_batch_size: int = 100,
    chunk: int | None = None,
    progress: bool = False,
) -> dict[str, np.ndarray]:
    """Loss and error at the points ``(xs[i], ys[i])`` of the plane, per split: ``{'test_error': [K], …}``.

    ``chunk`` points are evaluated per call (default: :func:`default_chunk` of the model's device);
    in ``reset`` mode the statistics come from the first ``bn_batches`` training batches of
    ``bn_batch_size`` un-augmented examples.
    """
    if bn_mode not in BN_MODES:
        raise ValueError(f"unknown bn_mode {bn_mode!r}; choose one of {BN_MODES}")
    device = next(model.parameters()).device
    chunk = chunk or default_chunk(device)
    reset = (
        BatchNormReset(model, bn_reset_batches(data, bn_batches, bn_batch_size, device)) if bn_mode == "reset" else None
    )
    dtypes = _model_dtypes(model)
    xs, ys = np.asarray(xs, dtype=float).ravel(), np.asarray(ys, dtype=float).ravel()
    out = {f"{s}_{q}": np.empty(len(xs)) for s in splits for q in ("loss", "error")}
    for start in tqdm(range(0, len(xs), chunk), desc="landscape grid", disable=not progress, leave=False):
        sl = slice(start, start + chunk)
        params = {n: t.to(device, dtypes[n]) for n, t in plane.unflatten(plane.flat_at(xs[sl], ys[sl])).items()}
        buffers = {n: t.to(device) for n, t in plane.buffers_at(xs[sl], ys[sl]).items()}
        if reset is not None:
            buffers = reset.stacked(params, buffers)
        for s in splits:
            loss, err = evaluate_states(model, params, buffers, data, s, batch_size)
            out[f"{s}_loss"][sl], out[f"{s}_error"][sl] = loss, err
    return out


def _masked(state: State, mask: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: (t * mask[n].to(t.device, t.dtype) if n in mask else t) for n, t in state.items()}


def landscape_level(
    model: nn.Module,
    solution: State,
    next_solution: State,
    mask: Mapping[str, torch.Tensor],
    next_mask: Mapping[str, torch.Tensor],
    rewind: State,
    data: Data,
    *,
    grid: int = DEFAULT_GRID,
    margin: float = DEFAULT_MARGIN,
    bn_mode: str = DEFAULT_BN_MODE,
    bn_batches: int = DEFAULT_BN_BATCHES,
    bn_batch_size: int = 100,
    splits: Sequence[str] = ("test",),
    batch_size: int = 1000,
    chunk: int | None = None,
    cover_rewind: bool = False,
    progress: bool = False,
) -> xr.Dataset:
    """E9 for one level: the grid and the marked points (dimensions ``x``, ``y``, ``point``).

    ``solution``/``next_solution``/``rewind`` are the state dicts of ``w_L``, ``w_{L+1}``, ``w_t``;
    ``mask``/``next_mask`` are ``m_L``/``m_{L+1}``; ``model`` gives the architecture and device.
    """
    names = [n for n, _ in model.named_parameters()]
    projection = _masked(solution, next_mask)
    plane = plane_through(solution, projection, next_solution, names)
    states = {
        "solution": solution,
        "projection": projection,
        "next_solution": next_solution,
        "rewind": _masked(rewind, mask),
        "next_rewind": _masked(rewind, next_mask),
    }
    coords = np.array([plane.coords(states[p]) for p in POINTS])
    xs, ys = grid_axes(plane, grid, margin, coords[3:, :2] if cover_rewind else None)
    gx, gy = np.meshgrid(xs, ys, indexing="ij")
    values = evaluate_plane(
        model, plane, gx, gy, data, splits, batch_size, bn_mode, bn_batches, bn_batch_size, chunk, progress
    )

    device = next(model.parameters()).device
    bnames = [n for n in solution if n not in set(names)]
    pparams = _stack_states([states[p] for p in POINTS], names, device)
    pbufs = _stack_states([states[p] for p in POINTS], bnames, device)
    if bn_mode == "reset":
        reset = BatchNormReset(model, bn_reset_batches(data, bn_batches, bn_batch_size, device))
        pbufs = reset.stacked(pparams, pbufs)
    ds = xr.Dataset(
        coords={
            "x": np.arange(grid),
            "y": np.arange(grid),
            "point": list(POINTS),
            "point_label": ("point", [POINT_LABELS[p] for p in POINTS]),
        }
    )
    ds["plane_x"] = (
        "x",
        xs,
        {
            "units": "L2 distance in parameter space",
            "description": "coordinate along e1 = (m_L+1*w_L - w_L)/|.| (pruning direction)",
        },
    )
    ds["plane_y"] = (
        "y",
        ys,
        {
            "units": "L2 distance in parameter space",
            "description": "coordinate along e2: w_L+1 - w_L orthogonalized against e1",
        },
    )
    for s in splits:
        loss, err = evaluate_states(model, pparams, pbufs, data, s, batch_size)
        for q, grid_vals, point_vals in (("error", values[f"{s}_error"], err), ("loss", values[f"{s}_loss"], loss)):
            unit = "fraction" if q == "error" else "nats"
            what = "0-1 error" if q == "error" else "mean cross-entropy"
            ds[f"{s}_{q}"] = (
                ("x", "y"),
                grid_vals.reshape(grid, grid),
                {"units": unit, "description": f"{s} {what} at w_L + plane_x e1 + plane_y e2"},
            )
            ds[f"point_{s}_{q}"] = (
                "point",
                point_vals,
                {
                    "units": unit,
                    "description": f"{s} {what} of the "
                    "marked network itself (its own BatchNorm statistics, "
                    "recomputed in bn_mode reset)",
                },
            )
    ds["point_x"] = (
        "point",
        coords[:, 0],
        {
            "units": "L2 distance in parameter space",
            "description": "plane coordinate along e1 of the point's projection",
        },
    )
    ds["point_y"] = (
        "point",
        coords[:, 1],
        {
            "units": "L2 distance in parameter space",
            "description": "plane coordinate along e2 of the point's projection",
        },
    )
    ds["point_offplane"] = (
        "point",
        coords[:, 2],
        {"units": "L2 distance in parameter space", "description": "distance of the point from the plane"},
    )
    return ds


def landscape_run(
    run,
    levels: Sequence[int],
    *,
    grid: int = DEFAULT_GRID,
    margin: float = DEFAULT_MARGIN,
    bn_mode: str = DEFAULT_BN_MODE,
    bn_batches: int = DEFAULT_BN_BATCHES,
    bn_batch_size: int | None = None,
    splits: Sequence[str] = ("test",),
    chunk: int | None = None,
    batch_size: int | None = None,
    cover_rewind: bool = False,
) -> xr.Dataset:
    """E9 for ``levels`` of a finished :class:`~unmasking.imp.ImpRun`.

    Returns a dataset with dimensions ``seed``, ``level``, ``x``, ``y`` and ``point``.
    ``chunk`` grid points are evaluated per call (default: :func:`default_chunk`) and
    ``batch_size`` examples per forward pass and grid point (default: the recipe's
    ``eval_batch_size // chunk``, so one pass holds as many example-evaluations as ordinary
    evaluation does); the reset pass uses ``bn_batches`` batches of ``bn_batch_size`` (default:
    the recipe's training batch size).
    """
    levels = sorted(set(levels))
    for level in levels:
        for lv in (level, level + 1):
            if not run.final_path(lv).exists():
                raise FileNotFoundError(
                    f"E9 at level {level} needs the trained level {lv} of {run.root} ({run.final_path(lv)} is missing)"
                )
    bad = [s for s in splits if s not in ("test", "train")]
    if bad:
        raise ConfigError(f"unknown split(s) {bad}; use test and/or train")
    model = run.new_model()
    rewind = run.rewind_state()
    hp = run.recipe.train
    chunk = chunk or default_chunk(run.device)
    batch_size = batch_size or max(1, hp.eval_batch_size // chunk)
    bn_batch_size = bn_batch_size or hp.batch_size
    out = []
    for level in tqdm(levels, desc="landscape", disable=not run.progress):
        ds = landscape_level(
            model,
            run.final_state(level),
            run.final_state(level + 1),
            run.mask(level),
            run.mask(level + 1),
            rewind,
            run.data,
            grid=grid,
            margin=margin,
            bn_mode=bn_mode,
            bn_batches=bn_batches,
            bn_batch_size=bn_batch_size,
            splits=splits,
            batch_size=batch_size,
            chunk=chunk,
            cover_rewind=cover_rewind,
            progress=run.progress,
        )
        out.append(ds.expand_dims(level=[level]))
    # xarray's options explicit: every level has the same grid and points (join="exact" refuses otherwise)
    ds = xr.concat(out, dim="level", data_vars="all", coords="different", compat="equals", join="exact")
    ds = ds.expand_dims(seed=[run.seed])
    ds.attrs.update(
        run.provenance(
            "E9_landscape",
            grid=grid,
            margin=margin,
            bn_mode=bn_mode,
            bn_batches=bn_batches,
            bn_batch_size=bn_batch_size,
            splits=list(splits),
            chunk=chunk,
            batch_size=batch_size,
            cover_rewind=int(cover_rewind),
            basis="Gram-Schmidt of (m_L+1*w_L - w_L, w_L+1 - w_L) over all trainable parameters",
        )
    )
    return ds


SETTINGS = LandscapeSettings


def analyse(run, levels: Sequence[int], settings: LandscapeSettings = LandscapeSettings()) -> xr.Dataset:
    """E9 on an opened :class:`~unmasking.imp.ImpRun` (the library entry point of the ``landscape`` command)."""
    s = settings.check()
    return landscape_run(
        run,
        levels,
        grid=s.grid,
        margin=s.margin,
        bn_mode=s.bn_mode,
        bn_batches=s.bn_batches,
        bn_batch_size=s.bn_batch_size,
        splits=s.splits,
        chunk=s.chunk,
        batch_size=s.batch_size,
        cover_rewind=s.cover_rewind,
    )
