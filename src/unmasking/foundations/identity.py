"""What an artifact is, and the check every reader makes before trusting it.

Every file the package writes says what it holds: a checkpoint or mask (``{"identity": ..., "state":
...}``), a metrics file (its ``identity`` entry), a run folder (``run.json``) and a netCDF file (its
attributes).  An identity is a flat dict: the recipe hash, the run seed, the kind of file (``init``,
``rewind``, ``final``, ``mask``, ``train_state``, ``metrics``), the IMP level where there is one, the
training mode (:class:`TrainingMode`) and the package version.

A reader states what it expects (``expect``, the subset of keys that must match) and
:func:`check_identity` refuses anything else in one line that names the file, what it holds, what was
expected and the fix.  The package version is recorded, never compared.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

from .hparams import ConfigError

__all__ = ["IdentityError", "TrainingMode", "check_identity", "describe"]


class IdentityError(ConfigError):
    """A readable file that is not what its reader expects (another run, seed, level, kind or training mode)."""


@dataclass(frozen=True)
class TrainingMode:
    """How a network was trained, beyond its recipe: the same recipe in another mode gives other bits.

    ``compile``: through ``torch.compile`` (:mod:`unmasking.multitrain`) or eagerly; ``precision``: the
    arithmetic of the forward and backward passes; ``device``: the device type (``cpu``, ``cuda``);
    ``threads``: on a CPU, torch's intra-op threads (``torch.get_num_threads()``, set by
    ``OMP_NUM_THREADS``), which change how sums are split and so the last bits (0 on a GPU).  A run is
    trained in one mode from its first step to its last: resuming it in another is refused.
    """

    compile: bool = False
    precision: str = "float32"
    device: str = "cpu"
    threads: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainingMode":
        return cls(bool(d["compile"]), str(d["precision"]), str(d["device"]), int(d.get("threads", 0)))

    def __str__(self) -> str:
        threads = f" with {self.threads} thread{'s' * (self.threads != 1)}" if self.threads else ""
        return f"{'compiled' if self.compile else 'eager'} {self.precision} on {self.device}{threads}"


def describe(identity: Mapping[str, Any], keys) -> str:
    """``key value`` pairs of ``identity`` for a message (modes in words)."""
    parts = []
    for k in keys:
        v = identity.get(k, "none")
        if k == "mode" and isinstance(v, Mapping):
            v = str(TrainingMode.from_dict(v)) if set(v) >= {"compile", "precision", "device"} else v
        parts.append(f"{k.replace('_', ' ')} {v}")
    return ", ".join(parts)


def check_identity(path: str | Path, held: Mapping[str, Any] | None, expect: Mapping[str, Any], fix: str) -> None:
    """Refuse ``path`` unless its identity ``held`` matches ``expect`` on every key of ``expect``.

    ``held`` is None for a file that carries no identity (written by an older version, or not by this
    package).  ``fix`` ends the message: what repairs it.
    """
    if held is None:
        raise IdentityError(f"{path} carries no identity (not written by this version of unmasking); {fix}")
    wrong = [k for k in expect if held.get(k) != expect[k]]
    if wrong:
        raise IdentityError(f"{path} holds {describe(held, wrong)} where {describe(expect, wrong)} is expected; {fix}")
