"""Deterministic seed derivation: one recorded integer seed per purpose."""

from __future__ import annotations

import hashlib


def derive_seed(seed: int, *purpose: object) -> int:
    """A 62-bit seed that depends only on ``seed`` and the ``purpose`` labels.

    Separate purposes (``"init"``, ``"order"``, ``"augment"``, ``"noise"``, epoch numbers …)
    get independent streams, so changing one never shifts another.
    """
    text = ":".join(str(p) for p in (seed, *purpose))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 2


def generator(seed: int, *purpose: object):
    import torch

    g = torch.Generator()
    g.manual_seed(derive_seed(seed, *purpose))
    return g
