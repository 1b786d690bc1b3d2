"""Remove an IMP run folder that was made with another recipe or seed, so the run starts over.

Usage: ``python fresh_run.py RUN_DIR RECIPE_HASH SEED``.  Snakemake reruns a run's first job
when the recipe in the config changes (its ``hash`` param changed); the folder still holds the
old run, which ``unmasking`` refuses to mix with the new recipe.  A folder of the same recipe
and seed (an interrupted run) is kept, so its checkpoints resume.
"""

import json
import shutil
import sys
from pathlib import Path


def main(run_dir: str, recipe_hash: str, seed: str) -> None:
    root = Path(run_dir)
    info_path = root / "run.json"
    if not info_path.exists():
        return
    try:
        info = json.loads(info_path.read_text())
    except json.JSONDecodeError:
        info = {}
    if info.get("recipe_hash") == recipe_hash and info.get("seed") == int(seed):
        return
    print(
        f"removing {root}: it holds recipe {info.get('recipe_hash')} seed {info.get('seed')}, "
        f"the config now asks for recipe {recipe_hash} seed {seed}",
        file=sys.stderr,
    )
    shutil.rmtree(root)


if __name__ == "__main__":
    main(*sys.argv[1:])
