"""Cluster-free tests of params.py: the exact submitit parameters for given resources, and the settings."""

import ast
import sys
from pathlib import Path

import pytest
from snakemake_interface_common.exceptions import WorkflowError

from snakemake_executor_plugin_submitit import params
from snakemake_executor_plugin_submitit.params import (
    CLUSTERS,
    check_timing,
    job_folder,
    job_name,
    parse_sbatch_options,
    submitit_parameters,
)

PACKAGE = Path(params.__file__).parent


def map_resources(resources: dict, cluster: str = "slurm", threads: int = 1, **settings) -> dict:
    """submitit_parameters for job 3 of rule 'square', with the plugin's default settings."""
    settings = {"default_runtime": 60, "signal_delay": 120, "extra_sbatch": {}, **settings}
    return submitit_parameters(
        resources, name=job_name("square", {"i": 3}), threads=threads, cluster=cluster, **settings
    )


def test_slurm_job_gets_every_sbatch_option():
    resources = {
        "mem_mb": 256,
        "runtime": 5,
        "slurm_partition": "debug",
        "slurm_account": "lab",
        "qos": "high",
        "constraint": "avx2",
        "slurm_extra": "--comment=tiny-square --nice 5",
    }
    assert map_resources(resources, threads=4) == {
        "name": "square:i=3",
        "timeout_min": 5,
        "cpus_per_task": 4,
        "mem_gb": 0.25,
        "slurm_mem": "256M",
        "slurm_partition": "debug",
        "slurm_account": "lab",
        "slurm_qos": "high",
        "slurm_constraint": "avx2",
        "slurm_signal_delay_s": 120,
        "slurm_additional_parameters": {"requeue": True, "comment": "tiny-square", "nice": "5"},
    }


def test_local_and_debug_jobs_get_no_slurm_parameters():
    resources = {"mem_mb": 2048, "runtime": 5, "slurm_partition": "debug", "qos": "high", "slurm_extra": "--nice 5"}
    for cluster in ("local", "debug"):
        assert map_resources(resources, cluster=cluster, threads=2) == {
            "name": "square:i=3",
            "timeout_min": 5,
            "cpus_per_task": 2,
            "mem_gb": 2.0,
        }


def test_runtime_in_minutes_rounds_up_and_defaults_to_the_setting():
    assert map_resources({"runtime": 1.2})["timeout_min"] == 2
    assert map_resources({"runtime": "90"})["timeout_min"] == 90
    assert map_resources({})["timeout_min"] == 60
    assert map_resources({"runtime": 0}, default_runtime=30)["timeout_min"] == 30


def test_threads_become_cpus_per_task():
    assert map_resources({}, threads=8)["cpus_per_task"] == 8
    assert map_resources({}, threads="3")["cpus_per_task"] == 3


def test_memory_per_cpu_wins_on_slurm_only():
    resources = {"mem_mb": 4000, "mem_mb_per_cpu": 1000}
    slurm = map_resources(resources)
    assert slurm["slurm_mem_per_cpu"] == "1000M"
    assert not {"mem_gb", "slurm_mem"} & slurm.keys()
    local = map_resources(resources, cluster="local")
    assert local["mem_gb"] == pytest.approx(4000 / 1024)
    assert "slurm_mem_per_cpu" not in local
    assert not {"mem_gb", "slurm_mem", "slurm_mem_per_cpu"} & map_resources({"mem_mb": 0}).keys()


def test_gpus_per_node_or_a_gres_with_the_gpu_model():
    assert map_resources({"gpu": 2})["gpus_per_node"] == 2
    with_model = map_resources({"gpu": 2, "gpu_model": "a100"})
    assert with_model["slurm_gres"] == "gpu:a100:2"
    assert "gpus_per_node" not in with_model
    assert map_resources({"gpu": 1, "gpu_model": "a100"}, cluster="local")["gpus_per_node"] == 1
    for no_gpu in ({}, {"gpu": 0}, {"gpu": 0, "gpu_model": "a100"}):
        assert not {"gpus_per_node", "slurm_gres"} & map_resources(no_gpu).keys()


def test_empty_slurm_resources_mean_the_cluster_default():
    """The slurm profile's default-resources ('' for partition, account, qos, model, constraint)."""
    resources = {"slurm_partition": "", "slurm_account": "", "qos": "", "gpu_model": "", "constraint": "", "gpu": 1}
    assert map_resources(resources) == {
        "name": "square:i=3",
        "timeout_min": 60,
        "cpus_per_task": 1,
        "gpus_per_node": 1,
        "slurm_signal_delay_s": 120,
        "slurm_additional_parameters": {"requeue": True},
    }


def test_a_jobs_slurm_extra_overrides_the_settings_option_by_option():
    extra = parse_sbatch_options("--mail-type=FAIL --comment=all")
    got = map_resources({"slurm_extra": "--comment=mine --exclusive"}, extra_sbatch=extra, signal_delay=180)
    assert got["slurm_signal_delay_s"] == 180
    assert got["slurm_additional_parameters"] == {
        "requeue": True,
        "mail_type": "FAIL",
        "comment": "mine",
        "exclusive": True,
    }


def test_slurm_extra_parsing():
    assert parse_sbatch_options("--comment='a b' --nice 5 --exclusive --gres=gpu:a100:2") == {
        "comment": "a b",
        "nice": "5",
        "exclusive": True,
        "gres": "gpu:a100:2",
    }
    with pytest.raises(WorkflowError, match="long sbatch options"):
        parse_sbatch_options("-p gpu")


def test_sbatch_options_edge_cases():
    assert parse_sbatch_options("") == {}
    assert parse_sbatch_options("--requeue=false --mem-per-gpu 8G") == {"requeue": "false", "mem_per_gpu": "8G"}
    assert parse_sbatch_options("--exclusive --hold") == {"exclusive": True, "hold": True}
    with pytest.raises(WorkflowError, match="got '-5'"):
        parse_sbatch_options("--nice -5")
    with pytest.raises(WorkflowError, match=r"got '--' in '-- x'"):
        parse_sbatch_options("-- x")


def test_job_names_and_folders():
    assert job_name("all") == "all"
    wildcards = {"arch": "resnet20", "rewind": "1000", "seed": "0", "level": "03"}
    assert job_name("train_level", wildcards) == "train_level:arch=resnet20,rewind=1000,seed=0,level=03"
    assert job_name("fig", {"arch": "a b", "split": "x/y'z"}) == "fig:arch=a_b,split=x_y_z"
    assert len(job_name("r", {"w": "x" * 300})) == 128
    assert job_folder(".snakemake/submitit/%j") == Path.cwd() / ".snakemake/submitit/%j"
    assert job_folder("logs") == Path.cwd() / "logs" / "%j"
    assert job_folder("~/runs/%j") == Path.home() / "runs" / "%j"


def test_signal_delay_must_exceed_the_grace_period():
    check_timing(120, 60)
    with pytest.raises(WorkflowError) as error:
        check_timing(60, 60)
    assert str(error.value) == "--submitit-signal-delay (60s) must be larger than --submitit-grace-period (60s)"


def test_settings_defaults_are_the_documented_ones():
    """Each setting's help ends with "Default: X" for its real default (argparse escapes % as %%)."""
    from dataclasses import fields

    from snakemake_executor_plugin_submitit import ExecutorSettings

    settings = ExecutorSettings()
    assert (settings.cluster, settings.folder, settings.slurm_extra) == (None, ".snakemake/submitit/%j", None)
    assert (settings.max_requeues, settings.signal_delay, settings.grace_period, settings.default_runtime) == (
        5,
        180,
        90,
        60,
    )
    check_timing(settings.signal_delay, settings.grace_period)
    documented = 0
    for f in fields(ExecutorSettings):
        help_text = f.metadata["help"]
        if "Default: " in help_text and f.default is not None:
            assert help_text.rsplit("Default: ", 1)[1].replace("%%", "%") == str(f.default), f.name
            documented += 1
    assert documented == 5
    assert next(f for f in fields(ExecutorSettings) if f.name == "cluster").metadata["choices"] == list(CLUSTERS)


@pytest.mark.parametrize("module", ["params", "states"])
def test_pure_modules_import_neither_snakemake_nor_submitit(module):
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    imported = {
        alias.name if isinstance(node, ast.Import) else node.module
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    outside = {name for name in imported if name.split(".")[0] not in sys.stdlib_module_names}
    assert outside <= {"snakemake_interface_common.exceptions"}, outside


def test_a_partition_and_account_from_slurm_extra_keep_the_default_resources():
    """`--submitit-slurm-extra "--partition=gpu --account=proj"` adds both to every job and leaves the
    profile's default resources (memory, run time) as they are (docs/slurm.md)."""
    extra = parse_sbatch_options("--partition=gpu --account=proj")
    params = submitit_parameters(
        {"mem_mb": 2000, "runtime": 60, "slurm_partition": "", "slurm_account": ""},
        name="r",
        threads=1,
        cluster="slurm",
        default_runtime=60,
        signal_delay=180,
        extra_sbatch=extra,
    )
    assert params["slurm_additional_parameters"] == {"requeue": True, "partition": "gpu", "account": "proj"}
    assert (params["slurm_mem"], params["timeout_min"]) == ("2000M", 60)
    assert "slurm_partition" not in params and "slurm_account" not in params
