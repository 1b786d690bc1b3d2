"""Fabricate CIFAR-10, CIFAR-100 and ImageNet in their real on-disk formats, small and random.

    python workflow/scripts/fabricate_data.py DATA_ROOT

writes DATA_ROOT/cifar-10-batches-py (the python-version archive's pickles: data_batch_1..5,
test_batch, batches.meta), DATA_ROOT/cifar-100-python (train, test, meta) and
DATA_ROOT/imagenet/{train,val}/<class>/*.JPEG (torchvision ImageFolder layout), each folder with a
`FABRICATED` marker: the loaders read it like a user's data set, without the published checksums,
and warn that its numbers mean nothing. A data set folder that exists without the marker (a real data
set) is refused, never overwritten; one with it is replaced. The paper smoke (config/smoke.yaml over config/paper.yaml)
and the tests run on it; point `data_root` or $UNMASKING_DATA at DATA_ROOT. Deterministic: the
same files every time. Labels are learnable (each class has its own mean colour), so training moves.
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np

MARKER = "FABRICATED"
NOTE = "fabricated by workflow/scripts/fabricate_data.py: random images, for tests only\n"


def _images(rng, labels, classes, shape):
    """uint8 images: a per-class mean colour plus noise (learnable, not trivially)."""
    means = np.random.default_rng(12345).integers(40, 216, (classes, 3))
    noise = rng.normal(0, 40, (len(labels), *shape[:-1], 3))
    return np.clip(means[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)


def _fresh(folder: Path) -> Path:
    """An empty folder for a data set: a folder of earlier fabricated data is replaced (the same files every
    time); one without the marker may hold a user's real data set and is refused, never overwritten."""
    if folder.exists():
        if not (folder / MARKER).is_file():
            raise FileExistsError(
                f"{folder} exists and is not fabricated data (no {MARKER} file): it may hold a real data set, which "
                f"this script never overwrites; choose another DATA_ROOT"
            )
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    return folder


def _pickle(path: Path, obj) -> None:
    # The real files are Python-2 pickles (protocol 2); their str keys load as "data", "labels".
    path.write_bytes(pickle.dumps(obj, protocol=2))


def cifar10(root: Path, per_batch: int, test: int) -> Path:
    folder = _fresh(root / "cifar-10-batches-py")
    rng = np.random.default_rng(10)
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", test)]:
        labels = rng.integers(0, 10, n)
        data = _images(rng, labels, 10, (32, 32, 3)).transpose(0, 3, 1, 2).reshape(n, 3072)
        _pickle(folder / name, {"batch_label": name, "labels": labels.tolist(), "data": data, "filenames": []})
    _pickle(folder / "batches.meta", {"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072})
    (folder / MARKER).write_text(NOTE)
    return folder


def cifar100(root: Path, train: int, test: int) -> Path:
    folder = _fresh(root / "cifar-100-python")
    rng = np.random.default_rng(100)
    for name, n in (("train", train), ("test", test)):
        fine = rng.integers(0, 100, n)
        data = _images(rng, fine, 100, (32, 32, 3)).transpose(0, 3, 1, 2).reshape(n, 3072)
        labels = {"fine_labels": fine.tolist(), "coarse_labels": (fine // 5).tolist()}
        _pickle(folder / name, {"filenames": [], **labels, "data": data})
    meta = {
        "fine_label_names": [f"fine{i}" for i in range(100)],
        "coarse_label_names": [f"coarse{i}" for i in range(20)],
    }
    _pickle(folder / "meta", meta)
    (folder / MARKER).write_text(NOTE)
    return folder


def imagenet(root: Path, classes: int, train: int, val: int) -> Path:
    from PIL import Image  # Pillow comes with torchvision

    folder = _fresh(root / "imagenet")
    rng = np.random.default_rng(1000)
    for split, per_class in (("train", train), ("val", val)):
        for c in range(classes):
            target = folder / split / f"n{c:08d}"
            target.mkdir(parents=True)
            for i in range(per_class):
                h, w = rng.integers(48, 96, 2)  # sizes vary, as in ImageNet; the loader crops to 224
                (img,) = _images(rng, np.array([c]), classes, (h, w, 3))
                Image.fromarray(img).save(target / f"n{c:08d}_{i}.JPEG", quality=90)
    (folder / MARKER).write_text(NOTE)
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path, help="data folder (what data_root / $UNMASKING_DATA points at)")
    p.add_argument("--cifar-per-batch", type=int, default=8, help="CIFAR-10 images per training batch file (5 files)")
    p.add_argument("--cifar-test", type=int, default=10, help="CIFAR-10 and CIFAR-100 test images")
    p.add_argument("--cifar100-train", type=int, default=40, help="CIFAR-100 training images")
    p.add_argument("--imagenet-classes", type=int, default=4)
    p.add_argument("--imagenet-train", type=int, default=3, help="ImageNet training images per class")
    p.add_argument("--imagenet-val", type=int, default=1, help="ImageNet validation images per class")
    a = p.parse_args(argv)
    sizes = (a.cifar_per_batch, a.cifar_test, a.cifar100_train, a.imagenet_classes, a.imagenet_train, a.imagenet_val)
    if any(v < 1 for v in sizes):
        p.error("every size must be at least 1")
    try:
        for name in ("cifar-10-batches-py", "cifar-100-python", "imagenet"):  # refuse before writing anything
            if (a.root / name).exists() and not (a.root / name / MARKER).is_file():
                _fresh(a.root / name)
        for folder in (
            cifar10(a.root, a.cifar_per_batch, a.cifar_test),
            cifar100(a.root, a.cifar100_train, a.cifar_test),
            imagenet(a.root, a.imagenet_classes, a.imagenet_train, a.imagenet_val),
        ):
            print(f"fabricated {folder}")
    except OSError as e:
        print(f"fabricate_data.py: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
