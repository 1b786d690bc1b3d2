"""mnist1d, generated offline by the package's procedural generator and cached as ``.npz``.

``mnist1d.data.get_dataset`` tries a download with no timeout, so it is never called;
``make_dataset`` reseeds Python's and NumPy's global generators, so their states are
saved and restored around it.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..foundations.checkpoints import atomic_path
from ..foundations.hparams import DataHparams
from .base import TensorData


def generate_mnist1d() -> dict[str, np.ndarray]:
    """The standard 4,000/1,000 split (seed 42), with global RNG side effects undone."""
    from mnist1d.data import get_dataset_args, make_dataset

    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        d = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    return {k: np.asarray(d[k]) for k in ("x", "y", "x_test", "y_test")}


def load_mnist1d(hparams: DataHparams, root: Path) -> TensorData:
    path = root / "mnist1d" / "mnist1d.npz"
    if path.exists():
        with np.load(path) as f:
            arrays = {k: f[k] for k in ("x", "y", "x_test", "y_test")}
    else:
        arrays = generate_mnist1d()
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, **arrays)
    return TensorData(
        name="mnist1d",
        x_train=torch.tensor(arrays["x"], dtype=torch.float32),
        y_train=torch.tensor(arrays["y"], dtype=torch.long),
        x_test=torch.tensor(arrays["x_test"], dtype=torch.float32),
        y_test=torch.tensor(arrays["y_test"], dtype=torch.long),
        num_classes=10,
        train_eval_size=hparams.train_eval_size,
    )
