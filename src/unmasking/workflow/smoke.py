"""A smoke test of a workflow configuration: the same structure, every size shrunk mechanically.

A config with a ``smoke`` section (``config/smoke.yaml`` layered over any config, e.g.
``--configfile config/paper.yaml config/smoke.yaml``) is rewritten by :func:`shrink` before it is
planned.  What it keeps is everything structural: the architectures and their recipes, both (all)
rewind steps, the granularity, ``models_at_once`` and ``compile``, which experiments run on which
architectures, the BatchNorm modes, every figure and threshold.  What it shrinks, by rules rather
than by hand, so that the smoke cannot drift from the config it is layered over:

- seeds: the first ``seeds`` of every seed list (an experiment's own list keeps those among them, or
  else the first seed its architectures kept);
- levels: every architecture's last level becomes ``levels`` (never more than configured); an
  experiment's level list is mapped proportionally (level ℓ of the config's deepest run, L, becomes
  ℓ·levels/L rounded half up, clamped to the levels the experiment can run at, duplicates dropped);
- time: every recipe's ``train.steps`` becomes ``steps`` (never more than configured), and each
  step-valued hyperparameter is scaled by the same factor (milestones, warmup, the rewind steps: a
  positive step stays at least 1 and before the end, and steps that land on the same shrunk step
  merge; evaluation and checkpoint intervals, at most two per training); ``train.batch_size``,
  ``data.train_eval_size``, ``data.workers`` and ImageNet's crop size (``data.image_size``) are capped;
- resources: every rule's threads, memory and run time are capped, the workflow's fallbacks included
  (GPUs are left to ``device``);
- the name: results, logs and figures go to ``<name>-smoke``.

Experiment sizes (subset sizes, Lanczos steps, grids) are ordinary keys of the overlay file, which
Snakemake layers over the config's own (so the overlay must come last on the command line).  The
workflow plans the config itself before its smoke, so that the smoke does not hide a config that
cannot run.  Pure and torch-free: tests/test_plan.py checks it.
"""

from __future__ import annotations

import copy
import json
import math

from ..foundations.hparams import ConfigError
from ..foundations.recipes import build_recipe
from ..foundations.registry import ANALYSES, EXPERIMENTS
from .plan import FALLBACK_RESOURCES

SUFFIX = "-smoke"


def scale_step(step: int, factor: float, steps: int) -> int:
    """A step of the original schedule on the shrunk one: 0 stays 0, a positive step lands in [1, steps-1]
    (steps that land on the same shrunk step merge: milestones, or rewind steps closer than 1/steps)."""
    return 0 if step == 0 else min(steps - 1, max(1, _round(step * factor)))


def scale_interval(every: int, factor: float, steps: int) -> int:
    """An interval (0: never) on the shrunk schedule, at most two per training (so that intermediate
    evaluations and checkpoints still happen, without one at every step of a few-step training)."""
    return 0 if every == 0 else max(1, _round(every * factor), math.ceil(steps / 2))


def map_levels(levels, old: int, new: int, top: int):
    """An experiment's level list on the shrunk runs (`all`/`none` unchanged): level ℓ of ``old`` becomes
    ℓ·new/old rounded half up (the last pruned level stays a pruned level), at most ``top``."""
    if not isinstance(levels, list):
        return levels
    return sorted({min(top, _round(level * new / old)) for level in levels}) if old else [0]


def _round(x: float) -> int:
    """Half up (Python's round() rounds half to even: 0.5 would become 0)."""
    return math.floor(x + 0.5)


def _recipe_sets(entry: dict, smoke: dict) -> tuple[dict, list]:
    """The architecture's `set` with the smoke's sizes, and its rewind steps on the shrunk schedule."""
    sets = {k: v for k, v in entry["set"].items()}
    rewind = [f"prune.rewind_step={min(entry['rewind_steps'])}"] if entry.get("rewind_steps") else []
    try:
        recipe = build_recipe(entry["recipe"], None, [f"{k}={json.dumps(v)}" for k, v in sets.items()] + rewind)
    except ConfigError:
        return sets, entry["rewind_steps"]  # the plan reports the recipe's problems, with their keys
    t, cap = recipe.train, smoke["train_eval_size"]
    n = min(smoke["steps"], t.steps)  # a smoke never trains longer than the config
    factor = n / t.steps
    rewinds = entry["rewind_steps"] or [recipe.prune.rewind_step]
    sets.update(
        {
            "train.steps": n,
            "train.milestones": sorted({scale_step(m, factor, n) for m in t.milestones}),
            "train.warmup_steps": scale_step(t.warmup_steps, factor, n),
            "train.eval_every": scale_interval(t.eval_every, factor, n),
            "train.checkpoint_every": scale_interval(t.checkpoint_every, factor, n),
            "train.batch_size": min(t.batch_size, smoke["batch_size"]),
            "data.train_eval_size": min(recipe.data.train_eval_size or cap, cap),
            "data.workers": min(recipe.data.workers, smoke["workers"]),
        }
    )
    if recipe.data.name == "imagenet":
        sets["data.image_size"] = min(recipe.data.image_size or 224, smoke["image_size"])
    return sets, sorted({scale_step(r, factor, n) for r in rewinds})


def _cap(resources: dict, caps: dict, fallback: dict | None = None) -> dict:
    """Every rule's entry capped; with ``fallback`` (the top-level table) the `default` entry states each
    capped key, so that rules that set none get at most the cap too (not the workflow's fallback)."""
    out = {
        rule: {k: (min(v, caps[k]) if k in caps else v) for k, v in entry.items()} for rule, entry in resources.items()
    }
    if fallback is not None:
        default = out.setdefault("default", {})
        for k, cap in caps.items():
            default[k] = min(default.get(k, fallback[k]), cap)
    return out


def shrink(config: dict) -> dict:
    """The smoke version of a validated config (defaults filled in) with a ``smoke`` section; a config
    without one is returned unchanged."""
    smoke = config.get("smoke")
    if not smoke:
        return config
    out = copy.deepcopy(config)
    out["smoke"] = None  # applied: a second shrink changes nothing
    out["name"] = config["name"] + SUFFIX
    out["seeds"] = config["seeds"][: smoke["seeds"]]
    caps = {k: smoke[k] for k in ("threads", "mem_mb", "runtime")}
    out["resources"] = _cap(config["resources"], caps, FALLBACK_RESOURCES)

    deepest, seeds_of = 0, {}
    for entry in out["architectures"]:
        levels = entry["levels"] if entry["levels"] is not None else _recipe_levels(entry)
        deepest = max(deepest, levels)
        entry["levels"] = min(levels, smoke["levels"])
        if entry["seeds"]:
            entry["seeds"] = entry["seeds"][: smoke["seeds"]]
        seeds_of[entry["name"]] = entry["seeds"] or out["seeds"]
        entry["set"], entry["rewind_steps"] = _recipe_sets(entry, smoke)
        entry["resources"] = _cap(entry.get("resources", {}), caps)

    for exp in ANALYSES:
        sec = out["experiments"].get(exp)
        if not sec:
            continue
        if sec.get("seeds"):  # those kept; else the first seed every architecture it runs on kept
            names = sec.get("architectures") or list(seeds_of)
            common = set.intersection(*(set(seeds_of[n]) for n in names if n in seeds_of))
            sec["seeds"] = [s for s in sec["seeds"] if s in common] or sorted(common)[:1]
        if "levels" in sec:
            top = min(smoke["levels"], deepest) - (1 if EXPERIMENTS[exp].needs_next_level else 0)
            sec["levels"] = map_levels(sec["levels"], deepest, min(smoke["levels"], deepest), top)
    return out


def _recipe_levels(entry: dict) -> int:
    try:
        return build_recipe(entry["recipe"]).prune.levels
    except ConfigError:
        return 0
