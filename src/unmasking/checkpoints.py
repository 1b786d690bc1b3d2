"""Atomic files: written to a temporary name in the same folder and renamed, read with a clear error.

torch is imported only where a checkpoint is read or written, so writers of netCDF files
(aggregation, figures) start without it.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator


class CorruptCheckpointError(RuntimeError):
    """A checkpoint or mask file cannot be read; delete it and rerun the step that wrote it."""


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is removed.

    Readers never see a partial file, so an interrupted job leaves nothing a rerun would trust.
    The file gets the usual permissions (0666 less the umask), not ``mkstemp``'s 0600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
            f"the step that writes it") from e
