"""environment.yml (conda, for clusters), workflow/envs/unmasking.yaml (the jobs' conda environment) and
pyproject.toml list the same dependencies."""

import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PLUGIN = "plugins/snakemake-executor-plugin-submitit"


def pip_and_python(path: Path) -> tuple[list[str], str]:
    """The pip requirements and the Python version of a conda environment file."""
    env = yaml.safe_load(path.read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    return pip, python.split("=")[1]


def test_environment_yml_matches_pyproject():
    """The library's dependencies and those of the [workflow] and [slurm] extras, with the plugin of this
    repository and the package itself installed editable."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    pip, python = pip_and_python(ROOT / "environment.yml")
    local = {"snakemake-executor-plugin-submitit"}  # installed from this repository, not from an index
    wanted = project["dependencies"] + [r for r in extras["workflow"] + extras["slurm"] if r not in local]
    assert sorted(p for p in pip if not p.startswith("-e")) == sorted(wanted)
    assert [p for p in pip if p.startswith("-e")] == [f"-e ./{PLUGIN}", "-e .[workflow,slurm]"]
    assert project["requires-python"] == ">=" + python


def test_jobs_conda_env_matches_the_library_dependencies():
    """Jobs under `snakemake --use-conda` run the library: its dependencies, none of the extras."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip, python = pip_and_python(ROOT / "workflow" / "envs" / "unmasking.yaml")
    assert sorted(pip) == sorted(project["dependencies"])
    assert project["requires-python"] == ">=" + python


def test_plugin_package_requires_the_same_python_and_submitit():
    """The plugin in plugins/ is a package of its own, installed from there: no extra names it (a name
    resolved on PyPI would install whatever package holds that name there)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    plugin = tomllib.loads((ROOT / PLUGIN / "pyproject.toml").read_text())["project"]
    assert all(plugin["name"] not in reqs for reqs in project["optional-dependencies"].values())
    assert plugin["requires-python"] == project["requires-python"]
    slurm_pins = {r for r in project["optional-dependencies"]["slurm"] if r.startswith("submitit")}
    assert slurm_pins <= set(plugin["dependencies"])
