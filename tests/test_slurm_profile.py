"""workflow/profiles/slurm and docs/slurm.md agree with the executor plugin, without a cluster.

The plugin's own unit tests (plugins/snakemake-executor-plugin-submitit/tests) pin its parameter mapping;
these check what this workflow sends through it: the profile's settings and default resources.
"""

import ast
import dataclasses
from pathlib import Path

import yaml

from snakemake_executor_plugin_submitit import ExecutorSettings
from snakemake_executor_plugin_submitit.params import (
    CLUSTERS,
    check_timing,
    job_name,
    parse_sbatch_options,
    submitit_parameters,
)

ROOT = Path(__file__).resolve().parents[1]
PROFILE = yaml.safe_load((ROOT / "workflow" / "profiles" / "slurm" / "config.yaml").read_text())


def profile_settings() -> dict:
    """The profile's `submitit-*` keys as ExecutorSettings field names."""
    return {
        key.removeprefix("submitit-").replace("-", "_"): value
        for key, value in PROFILE.items()
        if key.startswith("submitit-")
    }


def profile_default_resources() -> dict:
    """`default-resources` entries ("name=<python expression>") as values."""
    pairs = (entry.split("=", 1) for entry in PROFILE["default-resources"])
    return {name: ast.literal_eval(value) for name, value in pairs}


def test_profile_uses_the_plugin_with_valid_settings():
    assert PROFILE["executor"] == "submitit"
    settings = profile_settings()
    assert settings.keys() <= {f.name for f in dataclasses.fields(ExecutorSettings)}
    assert settings["cluster"] in CLUSTERS
    check_timing(settings["signal_delay"], settings["grace_period"])
    assert ExecutorSettings(**settings).folder == ".snakemake/submitit/%j"


def test_profile_default_resources_give_the_cluster_defaults():
    """'' for partition, account, qos, GPU model and constraint: sbatch gets none of them."""
    settings = dataclasses.replace(ExecutorSettings(), **profile_settings())
    params = submitit_parameters(
        profile_default_resources(),
        name=job_name("aggregate", {"arch": "cnn", "exp": "imp"}),
        threads=1,
        cluster="slurm",
        default_runtime=settings.default_runtime,
        signal_delay=settings.signal_delay,
        extra_sbatch=parse_sbatch_options(settings.slurm_extra or ""),
    )
    assert params == {
        "name": "aggregate:arch=cnn,exp=imp",
        "timeout_min": 60,
        "cpus_per_task": 1,
        "mem_gb": 2000 / 1024,
        "slurm_mem": "2000M",
        "slurm_signal_delay_s": 180,
        "slurm_additional_parameters": {"requeue": True},
    }


def test_the_profile_states_the_plugins_defaults():
    """Each submitit setting of the profile is the plugin's own default: what the profile documents is
    also what `--executor submitit` without the profile gives."""
    defaults = ExecutorSettings()
    settings = profile_settings()
    assert sorted(settings) == ["cluster", "folder", "grace_period", "max_requeues", "signal_delay"]
    for name, value in settings.items():
        default = getattr(defaults, name)
        assert value == default or (name == "cluster" and default is None and value == "slurm"), name


def test_docs_quote_the_profiles_values():
    docs = (ROOT / "docs" / "slurm.md").read_text()
    settings = profile_settings()
    assert f"(default in the profile: {settings['signal_delay']})" in docs
    assert f"`submitit-grace-period` seconds ({settings['grace_period']})" in docs
    assert f"`submitit-max-requeues` times ({settings['max_requeues']})" in docs
    assert "plugins/snakemake-executor-plugin-submitit" in docs
