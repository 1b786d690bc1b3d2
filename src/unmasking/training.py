"""Masked SGD training that can start at any step, with atomic checkpoints and exact resume.

Rewinding (SPEC §2) starts from ``m ⊙ w_t`` at step ``t`` with a fresh optimizer and the
learning-rate schedule continued from ``t``.  Pruned weights stay exactly zero: their
gradients are masked before every step, so momentum and weight decay never touch them
(both are zero for a zero weight with a zero gradient), and the weights are re-masked after
the step.  Batches are a pure function of the step (see :mod:`unmasking.data.base`), so a
run resumed from a checkpoint ends with the same weights as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

import torch
from torch import nn
from tqdm.auto import tqdm

from .data import Data
from .foundations.checkpoints import atomic_torch_save, load_checkpoint
from .foundations.hparams import TrainHparams
from .foundations.identity import check_identity
from .foundations.seeds import derive_seed
from .masks import apply_mask


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass(frozen=True)
class Seeds:
    """Separate seeds for initialization, data order and augmentation, derived from one run seed."""

    init: int
    order: int
    augment: int

    @classmethod
    def from_seed(cls, seed: int) -> "Seeds":
        return cls(derive_seed(seed, "init"), derive_seed(seed, "order"), derive_seed(seed, "augment"))

    def with_order(self, seed: int, *purpose: object) -> "Seeds":
        """Same init, a new data order and augmentation stream (E3's replicates)."""
        return Seeds(self.init, derive_seed(seed, "order", *purpose), derive_seed(seed, "augment", *purpose))


def lr_at(step: int, hp: TrainHparams) -> float:
    """Learning rate used for the update at ``step`` (0-based): linear warmup, then step decays."""
    lr = hp.lr * hp.gamma ** sum(step >= m for m in hp.milestones)
    if hp.warmup_steps and step < hp.warmup_steps:
        lr *= (step + 1) / hp.warmup_steps
    return lr


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_optimizer(model: nn.Module, hp: TrainHparams) -> torch.optim.SGD:
    return torch.optim.SGD(
        model.parameters(), lr=hp.lr, momentum=hp.momentum, nesterov=hp.nesterov, weight_decay=hp.weight_decay
    )


@torch.no_grad()
def evaluate(
    model: nn.Module, data: Data, split: str, batch_size: int = 1000, device: torch.device | str | None = None
) -> dict[str, float]:
    """Mean cross-entropy and 0-1 error of ``model`` (eval mode) on ``split``."""
    device = device or next(model.parameters()).device
    return evaluate_batches(model, data.eval_batches(split, batch_size, device), device)


@torch.no_grad()
def evaluate_batches(
    model: nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], device: torch.device | str | None = None
) -> dict[str, float]:
    """Mean cross-entropy and 0-1 error of ``model`` (eval mode) over ``(x, y)`` batches."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    loss_sum, wrong, n = 0.0, 0, 0
    for x, y in batches:
        x, y = x.to(device), y.to(device)
        out = model(x)
        loss_sum += float(nn.functional.cross_entropy(out.float(), y, reduction="sum"))
        wrong += int((out.argmax(1) != y).sum())
        n += len(y)
    model.train(was_training)
    return {"loss": loss_sum / n, "error": wrong / n}


def evaluate_all(model: nn.Module, data: Data, batch_size: int = 1000) -> dict[str, float]:
    test, train = evaluate(model, data, "test", batch_size), evaluate(model, data, "train", batch_size)
    return {
        "test_error": test["error"],
        "test_loss": test["loss"],
        "train_error": train["error"],
        "train_loss": train["loss"],
    }


def train(
    model: nn.Module,
    mask: Mapping[str, torch.Tensor] | None,
    data: Data,
    hp: TrainHparams,
    seeds: Seeds,
    start_step: int = 0,
    end_step: int | None = None,
    checkpoint: str | Path | None = None,
    progress: bool | str = True,
    identity: Mapping[str, object] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` in place from ``start_step`` to ``end_step`` (default ``hp.steps``).

    With ``checkpoint``, the state is saved there every ``hp.checkpoint_every`` steps and,
    if the file already exists, training resumes from it, after checking that it holds this
    training: the same steps, this trainer (eager ``train``, not :mod:`unmasking.multitrain`) and
    the caller's ``identity`` (e.g. the run, seed and level), all saved in it.  Returns the
    evaluation history (one dict per ``hp.eval_every`` steps).  Raises :class:`TrainingDiverged` on a
    non-finite loss.
    """
    end_step = hp.steps if end_step is None else end_step
    device = next(model.parameters()).device
    params = dict(model.named_parameters())
    mask = {n: m.to(device) for n, m in (mask or {}).items()}
    if mask:
        apply_mask(model, mask)
    opt = make_optimizer(model, hp)
    history: list[dict[str, float]] = []
    step = start_step
    checkpoint = Path(checkpoint) if checkpoint is not None else None
    ident = {**(identity or {}), "trainer": "eager", "start_step": start_step, "end_step": end_step}
    if checkpoint is not None and checkpoint.exists():
        state = load_checkpoint(checkpoint, map_location=device)
        check_identity(
            checkpoint, state.get("identity"), ident, "it belongs to another training: delete it to start this one over"
        )
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, history = state["step"], state["history"]

    def save(at: int) -> None:
        atomic_torch_save(
            {
                "model": model.state_dict(),
                "optimizer": opt.state_dict(),
                "step": at,
                "identity": ident,
                "history": history,
            },
            checkpoint,
        )

    model.train()
    desc = progress if isinstance(progress, str) else "train"
    bar = tqdm(
        total=end_step - start_step,
        initial=step - start_step,
        desc=desc,
        disable=not progress,
        mininterval=1.0,
        leave=False,
        dynamic_ncols=True,
    )
    nonfinite = torch.zeros((), dtype=torch.bool, device=device)
    check_every = 1 if device.type == "cpu" else 50
    for step, x, y in data.train_batches(step, end_step, hp.batch_size, seeds.order, seeds.augment, device):
        for g in opt.param_groups:
            g["lr"] = lr_at(step, hp)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nonfinite |= ~torch.isfinite(loss.detach())
        if (step + 1) % check_every == 0 or step + 1 == end_step:
            if bool(nonfinite):
                bar.close()
                raise TrainingDiverged(
                    f"training loss became non-finite by step {step} (lr {lr_at(step, hp):g}); lower train.lr, "
                    f"add train.warmup_steps, or check the data"
                )
        if mask:
            for n, m in mask.items():
                params[n].grad.mul_(m)
        opt.step()
        if mask:
            apply_mask(model, mask)
        done = step + 1
        bar.update(1)
        if hp.eval_every and done % hp.eval_every == 0 and done < end_step:
            history.append({"step": done, **evaluate_all(model, data, hp.eval_batch_size)})
            model.train()
            bar.set_postfix(test_error=f"{history[-1]['test_error']:.4f}")
        if checkpoint is not None and hp.checkpoint_every and done % hp.checkpoint_every == 0 and done < end_step:
            save(done)
    bar.close()
    return history
