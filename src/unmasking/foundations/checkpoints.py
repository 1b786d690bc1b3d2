"""Checkpoints: ``torch.save`` through an atomic rename, read back with ``weights_only=True`` and a clear error.

torch is imported only where a checkpoint is read or written, so writers of netCDF files
(aggregation, figures) start without it.
"""

from __future__ import annotations

from pathlib import Path

from .io import CorruptCheckpointError, atomic_path

__all__ = ["CorruptCheckpointError", "atomic_path", "atomic_torch_save", "load_checkpoint"]


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
        raise CorruptCheckpointError(
            f"cannot read {path} ({type(e).__name__}: {e}); it is corrupt or truncated: delete it and rerun "
            f"the step that writes it"
        ) from e
