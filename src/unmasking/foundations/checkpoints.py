"""Checkpoints: ``torch.save`` through an atomic rename, read back with ``weights_only=True`` and a clear error.

An artifact (a run's weights or mask) is saved as ``{"identity": ..., "state": ...}`` by
:func:`save_artifact`, and :func:`load_artifact` checks its identity against what the reader expects
(:mod:`unmasking.foundations.identity`) before returning the state.

torch is imported only where a checkpoint is read or written, so writers of netCDF files
(aggregation, figures) start without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from .identity import check_identity
from .io import CorruptCheckpointError, atomic_path

__all__ = [
    "CorruptCheckpointError",
    "atomic_path",
    "atomic_torch_save",
    "load_artifact",
    "load_checkpoint",
    "save_artifact",
]


def atomic_torch_save(obj, path: str | Path) -> None:
    """``torch.save`` through :func:`atomic_path`."""
    import torch

    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | Path, map_location="cpu"):
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run the step that writes it first")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0][:160]  # torch's messages run over many lines
        raise CorruptCheckpointError(
            f"cannot read {path} ({type(e).__name__}: {first}); it is corrupt or truncated: delete it and rerun "
            f"the step that writes it (in the workflow: delete it and run snakemake again)"
        ) from None


def save_artifact(state, path: str | Path, identity: Mapping[str, Any]) -> None:
    """Atomically save ``state`` (a state dict, a mask) with the ``identity`` that says what it is."""
    atomic_torch_save({"identity": dict(identity), "state": state}, path)


def load_artifact(path: str | Path, expect: Mapping[str, Any], fix: str, map_location="cpu"):
    """The state saved by :func:`save_artifact`, after checking its identity against ``expect``
    (:func:`~unmasking.foundations.identity.check_identity`; ``fix`` says what repairs a mismatch)."""
    obj = load_checkpoint(path, map_location=map_location)
    held = obj.get("identity") if isinstance(obj, dict) and set(obj) == {"identity", "state"} else None
    check_identity(path, held, expect, fix)
    return obj["state"]
