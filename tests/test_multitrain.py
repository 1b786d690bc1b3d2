"""train_many: K models at once end where K separate training.train runs end; batches, augmentation,
masks, BatchNorm statistics, momentum, checkpoints and divergence are per model."""

import copy

import pytest
import torch
from torch import nn

from unmasking import masks as M
from unmasking.data.base import TensorData
from unmasking.data.cifar import normalizer, random_crop_flip
from unmasking.foundations.hparams import TrainHparams
from unmasking.foundations.identity import IdentityError
from unmasking.foundations.seeds import generator
from unmasking.models import MODELS, build_model, prunable_names
from unmasking.multitrain import (
    VMAP_ONLY,
    BatchFeeder,
    MultiTrainer,
    StackedOps,
    crop_flip,
    crop_flip_draws,
    stacked_forward,
    train_many,
)
from unmasking.training import Seeds, TrainingDiverged, train

from conftest import make_tensor_data


def _hp(**kw):
    base = dict(batch_size=20, lr=0.05, momentum=0.9, weight_decay=5e-4, steps=34, milestones=[20], gamma=0.1)
    return TrainHparams(**{**base, **kw})


def _setup(name, k=3, width=8, dtype=torch.float32):
    """K models with different inits; model 0 dense (mask None), the others pruned by different fractions."""
    models = [build_model(name, 10, width=width, seed=i).to(dtype) for i in range(k)]
    masks = [None] + [
        M.magnitude_prune(dict(m.named_parameters()), M.dense_mask(m, prunable_names(m)), 0.25 * i)
        for i, m in enumerate(models[1:], 1)
    ]
    seeds = [Seeds.from_seed(10 + i) for i in range(k)]
    return models, masks, seeds


def _separately(models, masks, data, hp, seeds, start):
    refs = [copy.deepcopy(m) for m in models]
    hists = [train(r, mk, data, hp, s, start, progress=False) for r, mk, s in zip(refs, masks, seeds)]
    return refs, hists


def _assert_same_state(models, refs, rtol):
    for k, (m, r) in enumerate(zip(models, refs)):
        for (n, a), (_, b) in zip(m.state_dict().items(), r.state_dict().items()):
            if a.is_floating_point():
                err = float((a - b).abs().max()) / max(float(b.abs().max()), 1e-12)
                assert err <= rtol, f"model {k} {n}: relative difference {err:.2e}"
            else:
                assert torch.equal(a, b), f"model {k} {n}: {a} != {b}"


def _assert_masked(models, masks):
    for m, mk in zip(models, masks):
        params = dict(m.named_parameters())
        for n, keep in (mk or {}).items():
            assert torch.count_nonzero(params[n][~keep]) == 0


def _cifar_like(n_train=40, n_test=10, size=32, dtype=torch.uint8, seed=0):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.uint8:
        x = torch.randint(0, 256, (n_train + n_test, 3, size, size), dtype=torch.uint8, generator=g)
    else:
        x = torch.rand(n_train + n_test, 3, size, size, generator=g, dtype=dtype)
    y = torch.randint(0, 10, (n_train + n_test,), generator=g)
    return TensorData(
        "cifar10",
        x[:n_train],
        y[:n_train],
        x[n_train:],
        y[n_train:],
        10,
        augment=random_crop_flip,
        normalize=normalizer("cifar10"),
    )


# -- K at once == K separate runs ------------------------------------------------------------


@pytest.mark.parametrize("backend", ["stacked", "vmap"])
@pytest.mark.parametrize("name", ["mlp", "cnn1d", "resnet1d"])
def test_k_models_equal_k_separate_runs(name, backend):
    data = make_tensor_data()
    hp = _hp(eval_every=15)
    models, masks, seeds = _setup(name)
    refs, ref_hists = _separately(models, masks, data, hp, seeds, start=3)
    hists = train_many(models, masks, data, hp, seeds, 3, progress=False, backend=backend)
    _assert_same_state(models, refs, rtol=1e-5)
    _assert_masked(models, masks)
    assert [[h["step"] for h in hs] for hs in hists] == [[h["step"] for h in hs] for hs in ref_hists] == [[15, 30]] * 3
    for hs, rhs in zip(hists, ref_hists):
        for h, rh in zip(hs, rhs):
            assert h["test_loss"] == pytest.approx(rh["test_loss"], rel=1e-4)


@pytest.mark.parametrize("backend", ["stacked", "vmap"])
def test_resnet20_k_models_equal_k_separate_runs_float64(backend):
    """In float64 rounding cannot hide a semantic difference: 20 steps with crop+flip augmentation,
    masks, Nesterov momentum and a milestone agree to 1e-9."""
    data = _cifar_like(size=16, dtype=torch.float64)
    hp = _hp(batch_size=8, steps=22, milestones=[12], nesterov=True)
    models, masks, seeds = _setup("resnet20", k=2, width=4, dtype=torch.float64)
    refs, _ = _separately(models, masks, data, hp, seeds, start=2)
    train_many(models, masks, data, hp, seeds, 2, progress=False, backend=backend)
    _assert_same_state(models, refs, rtol=1e-9)
    _assert_masked(models, masks)


def test_resnet20_float32_uint8_data_few_steps():
    data = _cifar_like(size=16)
    hp = _hp(batch_size=8, steps=4, milestones=[])
    models, masks, seeds = _setup("resnet20", k=2, width=4)
    refs, _ = _separately(models, masks, data, hp, seeds, start=0)
    train_many(models, masks, data, hp, seeds, 0, progress=False)
    _assert_same_state(models, refs, rtol=1e-5)


@pytest.mark.parametrize("name,shape", [("vgg16", (3, 16, 16)), ("resnet1d", (40,))])
def test_stacked_forward_matches_module(name, shape):
    """The stacked forward pass (and BatchNorm statistics) of VGG (grouped layout) and of the 1-D ResNet
    ((K, N, L, C) layout: strided and 1x1 projection convolutions, pooling) equal the module's, model by model."""
    k = 2
    models = [build_model(name, 10, width=4, seed=i).double().train() for i in range(k)]
    x = torch.randn(k, 3, *shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    trainer = MultiTrainer(models, [None] * k, _hp(), backend="stacked")

    out = stacked_forward(models[0])(models[0], StackedOps(trainer.params, trainer.buffers, k), x)
    for i, m in enumerate(models):
        torch.testing.assert_close(out[i], m(x[i]), rtol=1e-10, atol=1e-10)
        for n, b in m.named_buffers():
            torch.testing.assert_close(trainer.buffers[n][i], b, rtol=1e-10, atol=1e-12)


def test_every_architecture_has_a_stacked_forward_or_is_vmap_only():
    """Each architecture of the model registry has a stacked forward, or is listed in VMAP_ONLY (and has none)."""
    assert VMAP_ONLY <= set(MODELS)
    for name in MODELS:
        with torch.device("meta"):  # the architecture only: no weights to initialize
            model = build_model(name, 10)
        assert (stacked_forward(model) is None) == (name in VMAP_ONLY), name


def test_generic_architecture_uses_vmap_and_matches():
    """Any module works through torch.func (here BatchNorm1d on 2-D activations); 'stacked' refuses it."""
    data = make_tensor_data()

    def net(seed):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return nn.Sequential(nn.Linear(40, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 10))

    models = [net(i) for i in range(2)]
    seeds = [Seeds.from_seed(i) for i in range(2)]
    hp = _hp(steps=15)
    assert MultiTrainer(models, [None, None], hp).backend == "vmap"
    with pytest.raises(ValueError, match="no stacked forward"):
        MultiTrainer(models, [None, None], hp, backend="stacked")
    refs, _ = _separately(models, [None, None], data, hp, seeds, 0)
    train_many(models, [None, None], data, hp, seeds, 0, progress=False)
    _assert_same_state(models, refs, rtol=1e-5)


# -- batches and augmentation ----------------------------------------------------------------


def test_feeder_gives_each_model_its_own_train_batches():
    data = _cifar_like(n_train=50)
    seeds = [Seeds.from_seed(i) for i in range(3)]
    feeder = BatchFeeder(data, seeds, 16, torch.device("cpu"))
    for step, x, y in feeder.batches(1, 7):  # crosses the epoch boundary at step 3
        for k, s in enumerate(seeds):
            ((ref_step, xr, yr),) = list(data.train_batches(step, step + 1, 16, s.order, s.augment))
            assert ref_step == step
            assert torch.equal(x[k], xr) and torch.equal(y[k], yr)


def test_batched_crop_flip_draws_what_random_crop_flip_draws():
    x = torch.randint(0, 256, (12, 3, 8, 8), dtype=torch.uint8)
    for step in range(3):
        draws = crop_flip_draws(12, generator(7, "augment", step))
        assert torch.equal(crop_flip(x, *draws), random_crop_flip(x, generator(7, "augment", step)))


def test_crop_flip_is_torchvision_crop_of_zero_padded_image_then_hflip():
    """For given offsets and flips: torchvision's functional crop of the 4-pixel zero-padded image,
    then hflip — on tensors and on PIL images, which the standard pipeline uses."""
    import numpy as np
    from PIL import Image
    from torchvision.transforms import functional as TF

    x = torch.randint(0, 256, (16, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    dy, dx, flip = crop_flip_draws(16, generator(3, "augment", 0))
    dy[:3], dx[:3] = torch.tensor([0, 8, 0]), torch.tensor([0, 8, 8])  # the extreme offsets
    flip[:2] = torch.tensor([True, False])
    out = crop_flip(x, dy, dx, flip)
    for i in range(16):
        ref = TF.crop(TF.pad(x[i], [4], fill=0), int(dy[i]), int(dx[i]), 32, 32)
        ref = TF.hflip(ref) if flip[i] else ref
        assert torch.equal(out[i], ref)
        pil = TF.crop(TF.pad(Image.fromarray(x[i].permute(1, 2, 0).numpy()), 4), int(dy[i]), int(dx[i]), 32, 32)
        pil = TF.hflip(pil) if flip[i] else pil
        assert np.array_equal(out[i].permute(1, 2, 0).numpy(), np.asarray(pil))
    g = generator(3, "augment", 0)
    assert torch.equal(random_crop_flip(x, g), crop_flip(x, *crop_flip_draws(16, generator(3, "augment", 0))))


def test_crop_flip_matches_torchvision_random_transforms():
    """The transform classes themselves: RandomCrop(32, padding=4) crops the zero-padded image at
    its drawn (top, left); RandomHorizontalFlip mirrors the columns."""
    from torchvision import transforms as T

    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    crop = T.RandomCrop(32, padding=4)
    for seed in range(8):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            top, left, _, _ = T.RandomCrop.get_params(torch.zeros(3, 40, 40), (32, 32))
            torch.manual_seed(seed)
            ref = crop(x[0])
        assert torch.equal(crop_flip(x, torch.tensor([top]), torch.tensor([left]), torch.tensor([False]))[0], ref)
    flipped = T.RandomHorizontalFlip(p=1.0)(x[0])
    assert torch.equal(crop_flip(x, torch.tensor([4]), torch.tensor([4]), torch.tensor([True]))[0], flipped)


# -- checkpoints, resume, divergence, bad input ----------------------------------------------


class _Interrupt(Exception):
    pass


def _interrupting_data(base: TensorData, after_calls: int | None) -> TensorData:
    """``base`` with an identity augmentation that raises after ``after_calls`` calls (None: never)."""
    calls = [0]

    def augment(x, g):
        calls[0] += 1
        if after_calls is not None and calls[0] > after_calls:
            raise _Interrupt
        return x

    return TensorData(base.name, base.x_train, base.y_train, base.x_test, base.y_test, base.num_classes, augment)


@pytest.mark.parametrize("name", ["cnn1d", "mlp", "resnet1d"])
def test_resume_after_interrupt_equals_uninterrupted(tmp_path, name):
    data = make_tensor_data()
    hp = _hp(checkpoint_every=5, eval_every=10)
    models, masks, seeds = _setup(name)
    ckpt = tmp_path / "many.ckpt"
    full = [copy.deepcopy(m) for m in models]
    full_hists = train_many(full, masks, _interrupting_data(data, None), hp, seeds, 3, progress=False)

    interrupted = [copy.deepcopy(m) for m in models]
    with pytest.raises(_Interrupt):  # 3 models per step: interrupted during step 3 + 14 = 17
        train_many(interrupted, masks, _interrupting_data(data, 3 * 14), hp, seeds, 3, checkpoint=ckpt, progress=False)
    state = torch.load(ckpt, weights_only=True)
    assert state["step"] == 15 and len(state["histories"][0]) == 1

    resumed = [copy.deepcopy(m) for m in models]
    hists = train_many(resumed, masks, _interrupting_data(data, None), hp, seeds, 3, checkpoint=ckpt, progress=False)
    assert hists == full_hists
    for a, b in zip(resumed, full):
        for (n, t), (_, u) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(t, u), n

    # a checkpoint of another training (other seeds, steps, backend or caller identity) is refused
    with pytest.raises(IdentityError, match=r"many.ckpt holds seeds .* where seeds .* is expected"):
        train_many(resumed, masks, data, hp, seeds[::-1], 3, checkpoint=ckpt, progress=False)
    with pytest.raises(IdentityError, match="holds start step 3 where start step 4 is expected"):
        train_many(resumed, masks, data, hp, seeds, 4, checkpoint=ckpt, progress=False)
    with pytest.raises(IdentityError, match="holds trainer multitrain stacked where trainer multitrain vmap"):
        train_many(resumed, masks, data, hp, seeds, 3, checkpoint=ckpt, progress=False, backend="vmap")
    with pytest.raises(IdentityError, match="holds level none where level 2 is expected"):
        train_many(resumed, masks, data, hp, seeds, 3, checkpoint=ckpt, progress=False, identity={"level": 2})


def test_divergence_names_the_model():
    data = make_tensor_data()
    models, masks, seeds = _setup("mlp")
    with torch.no_grad():
        models[1].fc1.weight[0, 0] = float("nan")
    with pytest.raises(TrainingDiverged, match=r"model\(s\) \[1\] of 3"):
        train_many(models, masks, data, _hp(), seeds, 0, progress=False)


def test_bad_input_is_a_clear_error():
    data = make_tensor_data()
    models, masks, seeds = _setup("mlp")
    with pytest.raises(ValueError, match="same architecture"):
        train_many([models[0], build_model("mlp", 10, width=9)], [None, None], data, _hp(), seeds[:2], progress=False)
    with pytest.raises(ValueError, match="one Seeds per model"):
        train_many(models, masks, data, _hp(), seeds[:2], progress=False)
    with pytest.raises(ValueError, match="shape"):
        train_many(
            models[:1], [{"fc1.weight": torch.ones(3, 3, dtype=torch.bool)}], data, _hp(), seeds[:1], progress=False
        )
    with pytest.raises(ValueError, match="CUDA options"):
        train_many(models, masks, data, _hp(), seeds, bf16=True, progress=False)
