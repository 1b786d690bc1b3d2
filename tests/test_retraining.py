"""train_jobs: K models at once give the one-at-a-time results, resume, divergence inside a group."""

from __future__ import annotations

import copy

import pytest
import torch

from unmasking import masks as M
from unmasking.analyses import retraining as R
from unmasking.foundations.hparams import ConfigError

from conftest import tiny_imp_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return tiny_imp_run(tmp_path_factory.mktemp("run"))


def make_jobs(run, n: int, blow_up: int | None = None) -> list[R.TrainJob]:
    """``n`` jobs from the level-1 rewind point with their own data orders; job ``blow_up`` has a NaN bias."""
    mask = run.mask(1)
    start = run.rewind_model()
    M.apply_mask(start, mask)
    jobs = []
    for i in range(n):
        model = copy.deepcopy(start)
        if i == blow_up:
            with torch.no_grad():
                model.fc.bias.fill_(float("nan"))
        jobs.append(R.TrainJob(f"job{i}", model, mask, run.seeds.with_order(0, "test", i)))
    return jobs


def states(models) -> list[dict[str, torch.Tensor] | None]:
    return [None if m is None else {k: v.clone() for k, v in m.state_dict().items()} for m in models]


def train(run, jobs, scratch, **kw):
    return R.train_jobs(jobs, run.data, run.recipe.train, 5, scratch, progress=False, **kw)


def test_single_job_is_the_imp_training_and_resumes_only_for_the_same_inputs(run, tmp_path):
    mask = run.mask(1)
    start = run.rewind_model()
    M.apply_mask(start, mask)
    job = R.TrainJob("job", copy.deepcopy(start), mask, run.seeds)
    (trained,) = train(run, [job], tmp_path)
    assert all(torch.equal(a, b) for a, b in zip(trained.state_dict().values(), run.solution(1).state_dict().values()))
    other = R.TrainJob("job", copy.deepcopy(start), mask, run.seeds.with_order(0, "x"))  # same name, other seeds
    (retrained,) = train(run, [other], tmp_path)
    assert not torch.equal(retrained.conv2.weight, trained.conv2.weight)


def test_models_at_once_match_one_at_a_time(run, tmp_path):
    single = states(train(run, make_jobs(run, 5), tmp_path / "a", models_at_once=1))
    grouped = states(train(run, make_jobs(run, 5), tmp_path / "b", models_at_once=3))
    for a, b in zip(single, grouped):
        for name in a:
            torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-5)
    assert not torch.equal(single[0]["conv2.weight"], single[1]["conv2.weight"])  # own data orders


def test_a_rerun_retrains_a_whole_unfinished_group_to_the_same_numbers(run, tmp_path, monkeypatch):
    first = states(train(run, make_jobs(run, 5), tmp_path, models_at_once=3))
    (tmp_path / "job1.pt").unlink()  # an interrupted group: jobs 0-2 train again, together
    calls = []
    real = R.train_many
    monkeypatch.setattr(R, "train_many", lambda models, *a, **k: calls.append(len(models)) or real(models, *a, **k))
    monkeypatch.setattr(R, "train", lambda *a, **k: pytest.fail("the finished group (jobs 3-4) was retrained"))
    again = states(train(run, make_jobs(run, 5), tmp_path, models_at_once=3))
    assert calls == [3]
    for a, b in zip(first, again):
        assert all(torch.equal(a[n], b[n]) for n in a)


def test_a_diverging_model_loses_only_itself(run, tmp_path):
    alone = states(train(run, make_jobs(run, 3, blow_up=1), tmp_path / "a", models_at_once=1))
    grouped = states(train(run, make_jobs(run, 3, blow_up=1), tmp_path / "b", models_at_once=3))
    assert alone[1] is None and grouped[1] is None
    for i in (0, 2):  # the group's survivors were trained again one at a time: the same numbers exactly
        assert all(torch.equal(alone[i][n], grouped[i][n]) for n in alone[i])
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["job0.pt", "job1.pt", "job2.pt"]


def test_bad_group_size(run, tmp_path):
    with pytest.raises(ConfigError, match="models_at_once"):
        train(run, make_jobs(run, 1), tmp_path, models_at_once=0)
