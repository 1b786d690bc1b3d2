"""Many masked retrainings from given start points (E3's perturbed rewind points, E6's pruned ones).

:func:`train_jobs` is the one place where the analyses train.  It trains the jobs in fixed
groups of ``models_at_once`` with :func:`unmasking.multitrain.train_many` (one model per group:
:func:`unmasking.training.train`), keeps every finished network in a scratch folder and reloads
it on a rerun, and resumes an interrupted group from its checkpoint.  Groups are cut from the
job list alone (never from what is already done), so a resumed job trains exactly the groups an
uninterrupted one would and ends with the same numbers.  A group in which a model diverges is
trained again one model at a time, so only the diverged models are lost.
"""

from __future__ import annotations

import copy
import hashlib
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import Data
from ..foundations.checkpoints import (
    CorruptCheckpointError,
    atomic_torch_save,
    load_checkpoint,
)
from ..foundations.hparams import ConfigError, TrainHparams
from ..multitrain import train_many
from ..training import Seeds, TrainingDiverged, train

__all__ = ["TrainJob", "retraining_mode", "scratch_folder", "scratch_for", "train_jobs"]


def _threads(device: torch.device) -> int:
    """torch's intra-op threads on a CPU (they change the last bits of a training), 0 on a GPU."""
    return torch.get_num_threads() if torch.device(device).type == "cpu" else 0


def retraining_mode(models_at_once: int, compile: bool, device: torch.device | str) -> str:
    """How an analysis retrained its networks, in words (recorded in its output's attributes)."""
    threads = _threads(device)
    return f"{models_at_once} at once, {'compiled' if compile else 'eager'}" + (f", {threads} threads" * bool(threads))


@dataclass
class TrainJob:
    """One masked training from a given network: ``name`` keys its files in the scratch folder."""

    name: str
    model: nn.Module
    mask: Mapping[str, torch.Tensor]
    seeds: Seeds


def _fingerprint(job: TrainJob, hp: TrainHparams, start_step: int, end_step: int, mode: tuple) -> str:
    """Hash of everything that determines a training's result (start weights, mask, seeds, schedule, and
    the training mode: models at once, compiled or not, CPU threads), so that a rerun in another mode
    retrains."""
    h = hashlib.sha256(repr((job.seeds, hp, start_step, end_step, mode)).encode())
    for k, v in job.model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    for k, m in job.mask.items():
        h.update(k.encode())
        h.update(m.detach().cpu().bool().contiguous().numpy().tobytes())
    return h.hexdigest()


def _load_finished(job: TrainJob, path: Path, fp: str) -> dict | None:
    """The saved result of ``job`` (``{"state": state_dict or None}``), if it is there and for these inputs."""
    if not path.exists():
        return None
    try:
        saved = load_checkpoint(path, map_location=next(job.model.parameters()).device)
    except CorruptCheckpointError:
        return None
    return saved if saved.get("fingerprint") == fp else None


def _train_group(
    group: list[TrainJob], data: Data, hp: TrainHparams, start_step: int, end_step: int, ckpt: Path, compile: bool
) -> list[bool]:
    """Train ``group`` in place; return, per job, whether it trained without diverging."""
    if len(group) == 1 and not compile:
        job = group[0]
        try:
            train(job.model, job.mask, data, hp, job.seeds, start_step, end_step, checkpoint=ckpt, progress=False)
            return [True]
        except TrainingDiverged:
            return [False]
    starts = [copy.deepcopy(job.model.state_dict()) for job in group]
    try:
        train_many(
            [j.model for j in group],
            [j.mask for j in group],
            data,
            hp,
            [j.seeds for j in group],
            start_step,
            end_step,
            checkpoint=ckpt,
            progress=False,
            compile=compile,
        )
        return [True] * len(group)
    except TrainingDiverged:
        ckpt.unlink(missing_ok=True)
        if len(group) == 1:
            return [False]
        ok = []
        for job, state in zip(group, starts):
            job.model.load_state_dict(state)
            ok += _train_group([job], data, hp, start_step, end_step, ckpt, compile)
        return ok


def train_jobs(
    jobs: Sequence[TrainJob],
    data: Data,
    hp: TrainHparams,
    start_step: int,
    scratch: Path,
    models_at_once: int = 1,
    compile: bool = False,
    progress: bool = True,
    desc: str = "train",
) -> list[nn.Module | None]:
    """Train every job's model in place from ``start_step`` to the end of the schedule.

    ``models_at_once`` jobs train together (they must share an architecture); with ``compile``
    every group, even of one, trains through :func:`~unmasking.multitrain.train_many`'s compiled
    step (as :class:`~unmasking.imp.ImpRun` does with ``compile``).  Finished networks are saved
    in ``scratch`` (``<name>.pt``) and reloaded on a rerun with the same inputs and mode (a
    changed ``models_at_once`` or ``compile`` retrains); an interrupted group resumes from its
    checkpoint.  Returns the trained models, ``None`` where training diverged.
    """
    if models_at_once < 1:
        raise ConfigError(f"models_at_once must be >= 1, got {models_at_once}")
    scratch.mkdir(parents=True, exist_ok=True)
    end_step = hp.steps
    results: list[nn.Module | None] = [None] * len(jobs)
    mode = (models_at_once, compile, _threads(next(jobs[0].model.parameters()).device) if jobs else 0)
    fps = [_fingerprint(job, hp, start_step, end_step, mode) for job in jobs]
    groups = [list(range(i, min(i + models_at_once, len(jobs)))) for i in range(0, len(jobs), models_at_once)]
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress)
    for idx in groups:
        group = [jobs[i] for i in idx]
        saved = [_load_finished(jobs[i], scratch / f"{jobs[i].name}.pt", fps[i]) for i in idx]
        if all(s is not None for s in saved):
            for i, s in zip(idx, saved):
                if s["state"] is not None:
                    jobs[i].model.load_state_dict(s["state"])
                    results[i] = jobs[i].model
            bar.update(len(idx))
            continue
        key = hashlib.sha256("".join(fps[i] for i in idx).encode()).hexdigest()[:16]
        ckpt = scratch / f"group_{key}.ckpt"
        ok = _train_group(group, data, hp, start_step, end_step, ckpt, compile)
        for i, good in zip(idx, ok):
            results[i] = jobs[i].model if good else None
            state = jobs[i].model.state_dict() if good else None
            atomic_torch_save({"fingerprint": fps[i], "state": state}, scratch / f"{jobs[i].name}.pt")
        ckpt.unlink(missing_ok=True)
        bar.update(len(idx))
    bar.close()
    return results


@contextmanager
def scratch_folder(scratch: str | Path | None) -> Iterator[Path]:
    """``scratch`` itself (kept, so a rerun resumes), or a temporary folder removed afterwards."""
    if scratch is not None:
        yield Path(scratch)
        return
    tmp = tempfile.mkdtemp(prefix="unmasking-scratch-")
    try:
        yield Path(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def scratch_for(out: str | Path) -> Path:
    """The scratch folder next to an output file: ``OUT.scratch``."""
    out = Path(out)
    return out.with_name(out.name + ".scratch")
