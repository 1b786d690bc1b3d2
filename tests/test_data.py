"""Data sets: mnist1d offline, CIFAR from fabricated files in the real on-disk format, clear errors."""

import hashlib
import random
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

from unmasking.data import DataMissingError, check_available, load_data
from unmasking.data.cifar import _FILES, STATS, random_crop_flip
from unmasking.foundations.datasets import CIFAR_FOLDERS
from unmasking.foundations.hparams import ConfigError, DataHparams

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a network connection was attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_mnist1d_is_generated_offline_without_global_rng_side_effects(tmp_path, no_network):
    random.seed(123)
    np.random.seed(123)
    py_before, np_before = random.random(), np.random.rand()
    random.seed(123)
    np.random.seed(123)
    data = load_data(DataHparams(name="mnist1d", root=str(tmp_path)))
    assert (random.random(), np.random.rand()) == (py_before, np_before)
    assert data.x_train.shape == (4000, 40) and data.x_test.shape == (1000, 40)
    assert data.num_classes == 10 and set(data.y_train.tolist()) == set(range(10))
    assert (tmp_path / "mnist1d" / "mnist1d.npz").exists()
    cached = load_data(DataHparams(name="mnist1d", root=str(tmp_path)))
    assert torch.equal(cached.x_train, data.x_train) and torch.equal(cached.y_test, data.y_test)


def _fabricate(root):
    """The workflow's fabricator (workflow/scripts/fabricate_data.py), as users and the paper smoke run it."""
    subprocess.run(
        [sys.executable, str(REPO / "workflow/scripts/fabricate_data.py"), str(root), "--cifar-per-batch", "20"],
        check=True,
        capture_output=True,
    )


def test_the_published_checksums_are_torchvisions():
    for name, cls in (("cifar10", torchvision.datasets.CIFAR10), ("cifar100", torchvision.datasets.CIFAR100)):
        files = _FILES[name]
        assert [list(f) for f in files["train"]] == cls.train_list and [list(f) for f in files["test"]] == cls.test_list
        assert files["meta"] == (cls.meta["filename"], cls.meta["md5"], cls.meta["key"])


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_loader_reads_the_archive_as_torchvision_does(tmp_path, monkeypatch, no_network, name, capfd):
    _fabricate(tmp_path)
    data = load_data(DataHparams(name=name, root=str(tmp_path), train_eval_size=30))
    assert "holds fabricated test data (FABRICATED)" in capfd.readouterr().err
    # torchvision's own reader on the same files (its MD5 list pointed at them) is the independent reading
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    folder = tmp_path / CIFAR_FOLDERS[name]
    md5 = {f.name: hashlib.md5(f.read_bytes()).hexdigest() for f in folder.iterdir()}
    monkeypatch.setattr(cls, "train_list", [[f, md5[f]] for f, _ in cls.train_list])
    monkeypatch.setattr(cls, "test_list", [[f, md5[f]] for f, _ in cls.test_list])
    monkeypatch.setitem(cls.meta, "md5", md5[cls.meta["filename"]])
    for train, x, y in ((True, data.x_train, data.y_train), (False, data.x_test, data.y_test)):
        ref = cls(str(tmp_path), train=train)
        assert torch.equal(x, torch.from_numpy(ref.data).permute(0, 3, 1, 2)) and y.tolist() == ref.targets
    assert data.num_classes == len(ref.classes) == (10 if name == "cifar10" else 100)
    assert data.x_train.dtype == torch.uint8 and data.num_train == (100 if name == "cifar10" else 40)
    x, y = next(data.eval_batches("test", 7))
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in STATS[name])
    torch.testing.assert_close(x[0], (data.x_test[0].float() / 255 - mean) / std)
    assert sum(len(yb) for _, yb in data.eval_batches("train", 7)) == 30
    step, xb, yb = next(data.train_batches(0, 1, 16, order_seed=1, augment_seed=2))
    assert xb.shape == (16, 3, 32, 32) and xb.dtype == torch.float32


def test_cifar_files_that_are_not_the_published_ones_are_refused(tmp_path):
    """Without the FABRICATED marker every file must match the published MD5 sum; a broken file is one line."""
    _fabricate(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "FABRICATED").unlink()
    with pytest.raises(DataMissingError) as error:
        load_data(DataHparams(name="cifar10", root=str(tmp_path)))
    assert str(error.value) == (
        f"{folder / 'data_batch_1'} does not match the published archive (MD5 differs): the file is incomplete "
        f"or corrupted; re-extract the archive into {folder} (or delete that folder and set data.download=true)."
    )
    (folder / "FABRICATED").write_text("")
    (folder / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(DataMissingError, match="test_batch is not a CIFAR python-version pickle"):
        load_data(DataHparams(name="cifar10", root=str(tmp_path)))
    (folder / "test_batch").unlink()
    with pytest.raises(DataMissingError, match="test_batch cannot be read"):
        load_data(DataHparams(name="cifar10", root=str(tmp_path)))


def test_fabricated_imagenet_through_the_loader(tmp_path, no_network):
    _fabricate(tmp_path)
    data = load_data(DataHparams(name="imagenet", root=str(tmp_path), workers=0))
    assert data.num_classes == 4 and data.num_train == 12
    (step, x, y), *_ = data.train_batches(0, 1, 4, order_seed=0, augment_seed=0)
    assert x.shape == (4, 3, 224, 224) and step == 0
    small = load_data(DataHparams(name="imagenet", root=str(tmp_path), workers=0, image_size=64))
    (step, x, y), *_ = small.train_batches(0, 1, 4, order_seed=0, augment_seed=0)
    assert x.shape == (4, 3, 64, 64) and small.subset("test", 2)[0].shape == (2, 3, 64, 64)


def test_a_field_added_later_leaves_every_recipe_hash_as_it_was():
    """data.image_size counts in the hash only when set: the recipes' hashes are those of run folders made
    before it existed (pinned here), and setting it makes another recipe."""
    from unmasking.foundations.recipes import build_recipe

    assert build_recipe("resnet50-imagenet").hash() == "d8407dbe1cd22168"
    assert build_recipe("resnet20-cifar10").hash() == "7eede3c67c750e79"
    assert build_recipe("resnet50-imagenet", None, ["data.image_size=64"]).hash() != "d8407dbe1cd22168"


def test_cifar_missing_is_a_clear_error(tmp_path):
    with pytest.raises(DataMissingError, match="cifar-10-batches-py.*data.download=true"):
        check_available(DataHparams(name="cifar10", root=str(tmp_path)))
    with pytest.raises(DataMissingError, match="cifar-100-python"):
        load_data(DataHparams(name="cifar100", root=str(tmp_path)))
    with pytest.raises(DataMissingError, match="imagenet"):
        check_available(DataHparams(name="imagenet", root=str(tmp_path)))


def test_unknown_data_set():
    with pytest.raises(ConfigError, match="unknown data set 'svhn'.*cifar10"):
        load_data(DataHparams(name="svhn"))


def test_random_crop_flip_matches_torchvision_semantics():
    """Each output is a 32x32 window of the zero-padded image, optionally mirrored."""
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    out = random_crop_flip(x, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    dy, dx = torch.randint(0, 9, (64,), generator=g), torch.randint(0, 9, (64,), generator=g)
    flip = torch.rand(64, generator=g) < 0.5
    from torchvision.transforms import functional as F

    for i in range(64):
        ref = F.crop(F.pad(x[i], [4, 4, 4, 4], fill=0), int(dy[i]), int(dx[i]), 32, 32)
        if flip[i]:
            ref = F.hflip(ref)
        assert torch.equal(out[i], ref)
    assert 0 < int(flip.sum()) < 64


def test_batches_are_a_function_of_the_step(tiny_data):
    a = list(tiny_data.train_batches(0, 25, 16, 3, 4))
    b = list(tiny_data.train_batches(17, 25, 16, 3, 4))
    for (s1, x1, y1), (s2, x2, y2) in zip(a[17:], b):
        assert s1 == s2 and torch.equal(x1, x2) and torch.equal(y1, y2)
    epoch = torch.cat([y for _, _, y in a[:12]])  # 200 // 16 = 12 steps per epoch, last partial dropped
    assert len(epoch) == 192


def test_imagenet_folder_loader(tmp_path, no_network):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("n01", "n02"):
            folder = tmp_path / "imagenet" / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    data = load_data(DataHparams(name="imagenet", root=str(tmp_path), workers=0))
    assert data.num_classes == 2 and data.num_train == 6
    batches = list(data.train_batches(1, 4, 2, order_seed=0, augment_seed=0))
    assert [s for s, _, _ in batches] == [1, 2, 3]
    assert batches[0][1].shape == (2, 3, 224, 224)
    again = list(data.train_batches(2, 3, 2, order_seed=0, augment_seed=0))
    assert torch.equal(again[0][1], batches[1][1]) and torch.equal(again[0][2], batches[1][2])
    x, y = data.subset("test", 4)
    assert x.shape == (4, 3, 224, 224) and len(y) == 4
