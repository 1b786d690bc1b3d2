"""Atomic checkpoint files: written to a temporary name and renamed, read with a clear error."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


class CorruptCheckpointError(RuntimeError):
    """A checkpoint or mask file cannot be read; delete it and rerun the step that wrote it."""


def atomic_torch_save(obj, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: never a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path, map_location="cpu"):
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist; run the step that writes it first")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CorruptCheckpointError(
            f"cannot read {path} ({type(e).__name__}: {e}); it is corrupt or truncated: delete it and rerun "
            f"the step that writes it") from e
