"""Masked training: exact zeros, the schedule, continuing from step t, resume, divergence, determinism."""

import pytest
import torch
from torch import nn

from unmasking import masks as M
from unmasking.foundations.hparams import TrainHparams
from unmasking.models import build_model, prunable_names
from unmasking.training import Seeds, TrainingDiverged, lr_at, train


def _hp(**kw):
    base = dict(batch_size=20, lr=0.05, momentum=0.9, weight_decay=5e-4, steps=24, milestones=[10, 20], gamma=0.1)
    return TrainHparams(**{**base, **kw})


def _pruned_model(name="cnn1d", seed=0, fraction=0.6):
    model = build_model(name, 10, width=8, seed=seed)
    mask = M.magnitude_prune(dict(model.named_parameters()), M.dense_mask(model, prunable_names(model)), fraction)
    return model, mask


def test_schedule_at_milestones_and_warmup():
    hp = _hp(lr=0.4, milestones=[100, 200], gamma=0.1, warmup_steps=10)
    assert lr_at(0, hp) == pytest.approx(0.04)
    assert lr_at(4, hp) == pytest.approx(0.2)
    assert lr_at(9, hp) == pytest.approx(0.4)
    assert lr_at(99, hp) == pytest.approx(0.4)
    assert lr_at(100, hp) == pytest.approx(0.04)
    assert lr_at(199, hp) == pytest.approx(0.04)
    assert lr_at(200, hp) == pytest.approx(0.004)
    assert lr_at(10**6, hp) == pytest.approx(0.004)


def test_pruned_weights_stay_exactly_zero_without_momentum(tiny_data):
    model, mask = _pruned_model()
    train(model, mask, tiny_data, _hp(), Seeds.from_seed(0), progress=False)
    params = dict(model.named_parameters())
    for n, m in mask.items():
        assert torch.count_nonzero(params[n][~m]) == 0
        assert torch.count_nonzero(params[n][m]) == int(m.sum())


def test_rewound_masked_steps_are_sgd_on_the_subspace(tiny_data):
    """Reference by hand: from step t with a fresh momentum buffer, masked gradients, weight decay."""
    model, mask = _pruned_model()
    hp = _hp(steps=12, milestones=[10], warmup_steps=0)
    ref = build_model("cnn1d", 10, width=8, seed=0)
    ref.load_state_dict(model.state_dict())
    M.apply_mask(ref, mask)
    bufs = {n: torch.zeros_like(p) for n, p in ref.named_parameters()}
    seeds = Seeds.from_seed(5)
    for step, x, y in tiny_data.train_batches(8, 12, hp.batch_size, seeds.order, seeds.augment):
        ref.zero_grad()
        nn.functional.cross_entropy(ref(x), y).backward()
        with torch.no_grad():
            for n, p in ref.named_parameters():
                g = p.grad * mask[n] if n in mask else p.grad
                d = g + hp.weight_decay * p
                bufs[n] = d if step == 8 else hp.momentum * bufs[n] + d
                p -= lr_at(step, hp) * bufs[n]
    train(model, mask, tiny_data, hp, seeds, start_step=8, progress=False)
    for (n, p), (_, q) in zip(model.named_parameters(), ref.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_training_from_step_t_continues_the_schedule(tiny_data):
    """Starting at t uses lr_at(t), lr_at(t+1), …: compare with a run that records the lrs it set."""
    hp = _hp(milestones=[10, 20])
    seen = []
    original = torch.optim.SGD.step

    def spy(self, *a, **k):
        seen.append(self.param_groups[0]["lr"])
        return original(self, *a, **k)

    model, mask = _pruned_model()
    torch.optim.SGD.step = spy
    try:
        train(model, mask, tiny_data, hp, Seeds.from_seed(0), start_step=8, end_step=22, progress=False)
    finally:
        torch.optim.SGD.step = original
    assert seen == pytest.approx([lr_at(s, hp) for s in range(8, 22)])
    assert (
        seen[:2] == pytest.approx([0.05, 0.05]) and seen[2] == pytest.approx(0.005) and seen[-1] == pytest.approx(5e-4)
    )


class _Interrupt(Exception):
    pass


class _InterruptingData:
    """Wraps a data set and raises after ``at`` training batches, like a killed job."""

    def __init__(self, data, at):
        self.data, self.at = data, at

    def __getattr__(self, name):
        return getattr(self.data, name)

    def train_batches(self, start, end, *a, **k):
        for i, item in enumerate(self.data.train_batches(start, end, *a, **k)):
            if i == self.at:
                raise _Interrupt
            yield item


def test_resume_after_interrupt_equals_uninterrupted(tiny_data, tmp_path):
    hp = _hp(checkpoint_every=5, eval_every=6)
    seeds = Seeds.from_seed(1)
    model, mask = _pruned_model()
    state = model.state_dict()
    full = build_model("cnn1d", 10, width=8)
    full.load_state_dict(state)
    hist_full = train(full, mask, tiny_data, hp, seeds, start_step=2, progress=False)

    ckpt = tmp_path / "train.ckpt"
    resumed = build_model("cnn1d", 10, width=8)
    resumed.load_state_dict(state)
    with pytest.raises(_Interrupt):
        train(resumed, mask, _InterruptingData(tiny_data, 13), hp, seeds, start_step=2, checkpoint=ckpt, progress=False)
    assert ckpt.exists()
    restarted = build_model("cnn1d", 10, width=8)
    restarted.load_state_dict(state)
    hist = train(restarted, mask, tiny_data, hp, seeds, start_step=2, checkpoint=ckpt, progress=False)
    for a, b in zip(full.state_dict().values(), restarted.state_dict().values()):
        assert torch.equal(a, b)
    assert hist == hist_full


def test_a_checkpoint_of_another_training_is_refused(tiny_data, tmp_path):
    """A checkpoint resumes only the training that wrote it: same steps, same trainer (eager train, not
    multitrain), same caller identity; anything else is one IdentityError naming the difference."""
    from unmasking.foundations.identity import IdentityError
    from unmasking.multitrain import train_many

    hp = _hp(checkpoint_every=5)
    seeds = Seeds.from_seed(1)
    model, mask = _pruned_model()
    ckpt = tmp_path / "train.ckpt"
    with pytest.raises(_Interrupt):
        train(
            model,
            mask,
            _InterruptingData(tiny_data, 8),
            hp,
            seeds,
            checkpoint=ckpt,
            progress=False,
            identity={"level": 3},
        )
    with pytest.raises(IdentityError, match="holds level 3 where level 4 is expected"):
        train(model, mask, tiny_data, hp, seeds, checkpoint=ckpt, progress=False, identity={"level": 4})
    with pytest.raises(IdentityError, match="holds end step 24 where end step 19 is expected"):
        train(model, mask, tiny_data, hp, seeds, end_step=19, checkpoint=ckpt, progress=False, identity={"level": 3})
    with pytest.raises(IdentityError, match="holds trainer eager, seeds none where trainer multitrain stacked"):
        train_many([model], [mask], tiny_data, hp, [seeds], checkpoint=ckpt, progress=False, identity={"level": 3})


def test_identical_runs_give_identical_weights(tiny_data):
    out = []
    for _ in range(2):
        model, mask = _pruned_model(seed=4)
        train(model, mask, tiny_data, _hp(), Seeds.from_seed(9), progress=False)
        out.append(model.state_dict())
    assert all(torch.equal(out[0][k], out[1][k]) for k in out[0])


def test_divergence_is_a_clear_error(tiny_data):
    model, mask = _pruned_model()
    with pytest.raises(TrainingDiverged, match="lower train.lr"):
        train(model, mask, tiny_data, _hp(lr=1e30, momentum=0.0, weight_decay=0.0), Seeds.from_seed(0), progress=False)


def test_seeds_are_separate_streams():
    s = Seeds.from_seed(0)
    assert len({s.init, s.order, s.augment}) == 3
    assert s.with_order(1, "replicate", 0).init == s.init
    assert s.with_order(1, "replicate", 0).order != s.order
