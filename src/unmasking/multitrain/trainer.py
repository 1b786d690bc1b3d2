"""The trainer: K models' stacked state, one SGD step for all of them, and the training loop.

:class:`MultiTrainer` holds the K models' parameters, BatchNorm buffers, masks and momentum as
stacked tensors and takes one step (gradients from :mod:`.backends`, then ``torch.optim.SGD``'s
update on the stacked tensors with the masks of :func:`~unmasking.training.train`).
:func:`train_many` drives it over the steps with each model's own batches (:mod:`.feeding`),
evaluation, divergence detection and atomic, resumable checkpoints.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import Data
from ..foundations.checkpoints import atomic_torch_save, load_checkpoint
from ..foundations.hparams import TrainHparams
from ..foundations.identity import check_identity
from ..training import Seeds, TrainingDiverged, evaluate_all, lr_at
from .backends import BACKENDS, compiled_loss, loss_function
from .feeding import BatchFeeder
from .forwards import stacked_forward


class MultiTrainer:
    """The stacked training state of K models and one optimizer step for all of them.

    ``models`` are not modified until :meth:`write_back`.  :func:`train_many` drives this; the
    tests use it directly.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        masks: Sequence[Mapping[str, torch.Tensor] | None],
        hp: TrainHparams,
        backend: str = "auto",
        bf16: bool = False,
        channels_last: bool = False,
        compile: bool = False,
    ):
        self.models, self.hp, self.k = list(models), hp, len(models)
        if self.k == 0:
            raise ValueError("train_many needs at least one model")
        if len(masks) != self.k:
            raise ValueError(f"got {len(masks)} masks for {self.k} models; pass one mask (or None) per model")
        self.device = _check_same_architecture(self.models)
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; choose one of {BACKENDS}")
        if (bf16 or channels_last) and self.device.type != "cuda":
            raise ValueError(f"bf16 and channels_last are CUDA options; the models are on {self.device}")
        if backend == "stacked" and stacked_forward(self.models[0]) is None:
            raise ValueError(f"no stacked forward for {type(self.models[0]).__name__}; use backend='vmap' or 'auto'")
        self.backend = "vmap" if backend == "vmap" or stacked_forward(self.models[0]) is None else "stacked"
        if bf16 and self.backend == "vmap":
            raise ValueError(
                "bf16 autocast needs the stacked backend (BatchNorm under vmap(grad) rejects bf16 "
                f"activations with fp32 statistics); {type(self.models[0]).__name__} has none: train "
                "it in fp32 or with training.train"
            )
        self.bf16, self.channels_last = bf16, channels_last

        with torch.no_grad():
            self.params = {
                n: torch.stack([dict(m.named_parameters())[n].detach() for m in self.models]).clone()
                for n, _ in self.models[0].named_parameters()
            }
            self.buffers = {
                n: torch.stack([dict(m.named_buffers())[n].detach() for m in self.models]).clone()
                for n, _ in self.models[0].named_buffers()
            }
        self.masks = _stack_masks(masks, self.params)
        with torch.no_grad():
            for n, m in self.masks.items():
                self.params[n].mul_(m)
        self.momentum: dict[str, torch.Tensor] | None = None

        if self.backend == "stacked":
            for p in self.params.values():
                p.requires_grad_(True)
        self._loss_fn = loss_function(self.models[0], self.backend, self.k, channels_last)
        self._compiled = compiled_loss(self.models[0], self.backend, self.k, channels_last) if compile else None

    # -- one step -------------------------------------------------------------------------
    def _grads(self, x: torch.Tensor, y: torch.Tensor) -> tuple[list[torch.Tensor | None], torch.Tensor]:
        names = list(self.params)
        fn = self._compiled or self._loss_fn
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            try:
                result = fn(self.params, self.buffers, x, y)
            except Exception as e:  # torch.compile failures surface at the first call
                if fn is self._loss_fn:
                    raise
                warnings.warn(f"torch.compile failed ({type(e).__name__}: {e}); training eagerly")
                self._compiled = None
                result = self._loss_fn(self.params, self.buffers, x, y)
        if self.backend == "stacked":
            total, losses = result
            grads = torch.autograd.grad(total, [self.params[n] for n in names], allow_unused=True)
        else:
            g, losses = result
            grads = [g[n] for n in names]
        return list(grads), losses

    def step(self, step: int, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One SGD step of the K models on batches ``x`` (K, N, …), ``y`` (K, N); returns the K losses."""
        grads, losses = self._grads(x, y)
        self._sgd(grads, lr_at(step, self.hp))
        return losses

    @torch.no_grad()
    def _sgd(self, grads: list[torch.Tensor | None], lr: float) -> None:
        """``torch.optim.SGD``'s update on the stacked tensors, with the masks of :func:`training.train`."""
        hp = self.hp
        names = [n for n, g in zip(self.params, grads) if g is not None]
        gs = [g for g in grads if g is not None]
        ps = [self.params[n] for n in names]
        masked = [i for i, n in enumerate(names) if n in self.masks]
        if masked:
            torch._foreach_mul_([gs[i] for i in masked], [self.masks[names[i]] for i in masked])
        if hp.weight_decay:
            gs = torch._foreach_add(gs, ps, alpha=hp.weight_decay)
        if hp.momentum:
            if self.momentum is None:
                self.momentum = {n: g.detach().clone() for n, g in zip(names, gs)}
                bufs = [self.momentum[n] for n in names]
            else:
                bufs = [self.momentum[n] for n in names]
                torch._foreach_mul_(bufs, hp.momentum)
                torch._foreach_add_(bufs, gs)
            gs = torch._foreach_add(gs, bufs, alpha=hp.momentum) if hp.nesterov else bufs
        torch._foreach_add_(ps, gs, alpha=-lr)
        if masked:
            torch._foreach_mul_([ps[i] for i in masked], [self.masks[names[i]] for i in masked])

    # -- models and checkpoints -----------------------------------------------------------
    @torch.no_grad()
    def write_back(self) -> None:
        """Copy the stacked parameters and buffers into the K models."""
        for k, model in enumerate(self.models):
            for n, p in model.named_parameters():
                p.copy_(self.params[n][k])
            for n, b in model.named_buffers():
                b.copy_(self.buffers[n][k])

    def state_dict(self) -> dict:
        return {
            "params": {n: p.detach() for n, p in self.params.items()},
            "buffers": self.buffers,
            "momentum": self.momentum,
        }

    @torch.no_grad()
    def load_state_dict(self, state: Mapping) -> None:
        for n, p in self.params.items():
            p.copy_(state["params"][n])
        for n, b in self.buffers.items():
            b.copy_(state["buffers"][n])
        mom = state["momentum"]
        self.momentum = None if mom is None else {n: t.to(self.device).clone() for n, t in mom.items()}


def _check_same_architecture(models: list[nn.Module]) -> torch.device:
    first = models[0]
    shapes = {n: (t.shape, t.dtype) for n, t in first.state_dict().items()}
    device = next(first.parameters()).device
    for k, m in enumerate(models[1:], 1):
        if type(m) is not type(first) or {n: (t.shape, t.dtype) for n, t in m.state_dict().items()} != shapes:
            raise ValueError(
                f"model {k} is not the same architecture as model 0 ({type(first).__name__}); "
                f"train_many stacks models of one architecture"
            )
        if next(m.parameters()).device != device:
            raise ValueError(
                f"model {k} is on {next(m.parameters()).device}, model 0 on {device}; move all models to one device"
            )
    return device


def _stack_masks(
    masks: Sequence[Mapping[str, torch.Tensor] | None], params: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Masks as 0/1 tensors (K, …) in the parameter dtype; a model without a mask for a name gets ones."""
    names = sorted({n for m in masks if m for n in m}, key=list(params).index) if any(masks) else []
    for n in names:
        if n not in params:
            raise ValueError(f"mask names {n!r}, which is not a parameter of the model")
    out = {}
    for n in names:
        p = params[n]
        rows = []
        for k, m in enumerate(masks):
            if m and n in m:
                if tuple(m[n].shape) != tuple(p.shape[1:]):
                    raise ValueError(
                        f"mask {k} for {n!r} has shape {tuple(m[n].shape)}, the weight {tuple(p.shape[1:])}"
                    )
                rows.append(m[n].to(p.device, p.dtype))
            else:
                rows.append(torch.ones(p.shape[1:], device=p.device, dtype=p.dtype))
        out[n] = torch.stack(rows)
    return out


def train_many(
    models: Sequence[nn.Module],
    masks: Sequence[Mapping[str, torch.Tensor] | None],
    data: Data,
    hp: TrainHparams,
    seeds_list: Sequence[Seeds],
    start_step: int = 0,
    end_step: int | None = None,
    checkpoint: str | Path | None = None,
    progress: bool | str = True,
    backend: str = "auto",
    bf16: bool = False,
    channels_last: bool = False,
    compile: bool = False,
    identity: Mapping[str, object] | None = None,
) -> list[list[dict[str, float]]]:
    """Train K models of one architecture in place, each as ``training.train`` would train it alone.

    ``masks[k]`` (or None) and ``seeds_list[k]`` belong to ``models[k]``.  With ``checkpoint``,
    the K models' state is saved there every ``hp.checkpoint_every`` steps and, if the file
    exists, training resumes from it, after checking that it holds this training (steps, seeds,
    backend, ``compile``, ``bf16``, ``channels_last`` and the caller's ``identity``, all saved in
    it).  Returns one evaluation history per model (every ``hp.eval_every`` steps).  Raises
    :class:`~unmasking.training.TrainingDiverged`, naming the models whose loss became non-finite
    (all models are left at their state of that step).
    ``backend``, ``bf16``, ``channels_last`` and ``compile``: see :mod:`unmasking.multitrain`
    (``auto``: ``stacked`` where the architecture has one, else ``vmap``).
    """
    end_step = hp.steps if end_step is None else end_step
    if len(seeds_list) != len(models):
        raise ValueError(f"got {len(seeds_list)} seeds for {len(models)} models; pass one Seeds per model")
    trainer = MultiTrainer(models, masks, hp, backend=backend, bf16=bf16, channels_last=channels_last, compile=compile)
    for model in trainer.models:
        model.train()
    device, k = trainer.device, trainer.k
    histories: list[list[dict[str, float]]] = [[] for _ in range(k)]
    step = start_step
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    ident = {
        **(identity or {}),
        "trainer": " ".join(
            ["multitrain", trainer.backend] + [o for o, on in (("compiled", compile), ("bf16", bf16)) if on]
        )
        + " channels_last" * channels_last,
        "start_step": start_step,
        "end_step": end_step,
        "seeds": [[s.init, s.order, s.augment] for s in seeds_list],
    }
    if checkpoint is not None and checkpoint.exists():
        state = load_checkpoint(checkpoint, map_location=device)
        check_identity(
            checkpoint, state.get("identity"), ident, "it belongs to another training: delete it to start this one over"
        )
        trainer.load_state_dict(state["trainer"])
        step, histories = state["step"], state["histories"]

    def save(at: int) -> None:
        atomic_torch_save(
            {
                "trainer": trainer.state_dict(),
                "step": at,
                "identity": ident,
                "histories": histories,
            },
            checkpoint,
        )

    desc = progress if isinstance(progress, str) else f"train x{k}"
    bar = tqdm(
        total=end_step - start_step,
        initial=step - start_step,
        desc=desc,
        disable=not progress,
        mininterval=1.0,
        leave=False,
        dynamic_ncols=True,
    )
    nonfinite = torch.zeros(k, dtype=torch.bool, device=device)
    check_every = 1 if device.type == "cpu" else 50
    feeder = BatchFeeder(data, seeds_list, hp.batch_size, device)
    try:
        for step, x, y in feeder.batches(step, end_step):
            losses = trainer.step(step, x, y)
            nonfinite |= ~torch.isfinite(losses)
            if ((step + 1) % check_every == 0 or step + 1 == end_step) and bool(nonfinite.any()):
                bad = nonfinite.nonzero().flatten().tolist()
                raise TrainingDiverged(
                    f"model(s) {bad} of {k} (order seeds {[seeds_list[i].order for i in bad]}): training loss "
                    f"became non-finite by step {step} (lr {lr_at(step, hp):g}); lower train.lr, add "
                    f"train.warmup_steps, or check the data"
                )
            done = step + 1
            bar.update(1)
            if hp.eval_every and done % hp.eval_every == 0 and done < end_step:
                trainer.write_back()
                for hist, model in zip(histories, trainer.models):
                    hist.append({"step": done, **evaluate_all(model, data, hp.eval_batch_size)})
                bar.set_postfix(test_error=f"{min(h[-1]['test_error'] for h in histories):.4f}")
            if checkpoint is not None and hp.checkpoint_every and done % hp.checkpoint_every == 0 and done < end_step:
                save(done)
    finally:
        bar.close()
        trainer.write_back()
    return histories
