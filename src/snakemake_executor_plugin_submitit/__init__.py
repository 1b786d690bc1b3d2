"""Snakemake executor plugin that runs each job through submitit (SLURM, local or debug).

Use it with ``snakemake --executor submitit`` (or ``executor: submitit`` in a
profile). Each Snakemake job becomes one submitit job whose callable,
:class:`JobCommand`, runs the job's Snakemake command in a subprocess. On a
timeout or preemption signal (SIGUSR2 by default, sent by SLURM
``--signal``), the command gets SIGTERM and a grace period, and submitit
requeues the job, which then runs the same command again: the job's program
resumes from its own checkpoints.

Snakemake resources map to submitit/SLURM parameters:

==================  =============================================
Snakemake           submitit / sbatch
==================  =============================================
threads             cpus_per_task (``--cpus-per-task``)
runtime (minutes)   timeout_min (``--time``)
mem_mb              mem_gb (``--mem``)
mem_mb_per_cpu      ``--mem-per-cpu``
gpu                 gpus_per_node (``--gpus-per-node``)
gpu + gpu_model     ``--gres=gpu:<model>:<gpu>``
slurm_partition     ``--partition``
slurm_account       ``--account``
qos                 ``--qos``
constraint          ``--constraint``
slurm_extra         any further sbatch options, e.g. ``"--reservation=x"``
==================  =============================================
"""

import asyncio
import math
import shlex
import signal
import subprocess
import threading
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import psutil
import submitit
from snakemake_interface_common.exceptions import WorkflowError
from snakemake_interface_executor_plugins.executors.base import SubmittedJobInfo
from snakemake_interface_executor_plugins.executors.remote import RemoteExecutor
from snakemake_interface_executor_plugins.jobs import JobExecutorInterface
from snakemake_interface_executor_plugins.settings import (
    CommonSettings,
    ExecutorSettingsBase,
)
from submitit.core.utils import pickle_load
from submitit.slurm.slurm import SlurmInfoWatcher

CLUSTERS = ("slurm", "local", "debug")
# sacct states of jobs that may still run (REQUEUED: submitit requeued it on timeout).
SLURM_ACTIVE_STATES = {
    "PENDING",
    "RUNNING",
    "REQUEUED",
    "REQUEUE_HOLD",
    "REQUEUE_FED",
    "RESIZING",
    "SUSPENDED",
    "COMPLETING",
    "CONFIGURING",
    "SIGNALING",
    "STAGE_OUT",
    "STOPPED",
    "UNKNOWN",
}
# A PREEMPTED job is usually requeued by SLURM (PreemptMode=REQUEUE); it only
# counts as failed once it has stayed PREEMPTED this long.
PREEMPTED_GRACE_S = 300.0


def slurm_base_state(state: str) -> str:
    """'CANCELLED by 0' -> 'CANCELLED', 'CANCELLED+' -> 'CANCELLED', '' -> 'UNKNOWN'."""
    return state.split()[0].rstrip("+") if state.strip() else "UNKNOWN"


class SlurmStateWatcher(SlurmInfoWatcher):
    """submitit's sacct watcher (one sacct call for all jobs), polled at Snakemake's pace.

    Unlike submitit's, it keeps polling jobs in every state that may still run
    (e.g. SUSPENDED, REQUEUE_HOLD, PREEMPTED).
    """

    def is_done(self, job_id: str, mode: str = "standard") -> bool:
        base = slurm_base_state(self.get_state(job_id, mode=mode))
        return base not in SLURM_ACTIVE_STATES and base != "PREEMPTED"


@dataclass
class ExecutorSettings(ExecutorSettingsBase):
    """Settings of the submitit executor (``--submitit-<name>`` on the command line).

    Optional fields use ``typing.Optional``: Snakemake derives the argparse type from it.
    """

    cluster: Optional[str] = field(
        default=None,
        metadata={
            "help": "Where submitit runs the jobs: 'slurm', 'local' (subprocesses on "
            "this machine, with the same requeue logic) or 'debug' (in the Snakemake "
            "process, one at a time). Default: 'slurm' if srun is found, else 'local'.",
            "choices": list(CLUSTERS),
            "env_var": False,
            "required": False,
        },
    )
    folder: str = field(
        default=".snakemake/submitit/%j",
        metadata={
            "help": "Folder for submitit's job scripts, pickles and logs, relative to "
            "the working directory; '%%j' is replaced by the job id (appended if "
            "missing). Default: .snakemake/submitit/%%j",
            "env_var": False,
            "required": False,
        },
    )
    max_requeues: int = field(
        default=3,
        metadata={
            "help": "How often a job that reaches its time limit is requeued and "
            "resumed before it counts as failed; a preemption counts too unless it "
            "comes before 80%% of the time limit and at least 10 minutes before it. "
            "Default: 3",
            "env_var": False,
            "required": False,
        },
    )
    signal_delay: int = field(
        default=120,
        metadata={
            "help": "Seconds before the time limit at which SLURM sends the timeout "
            "signal (sbatch --signal=USR2@N); must exceed --submitit-grace-period. "
            "Default: 120",
            "env_var": False,
            "required": False,
        },
    )
    grace_period: int = field(
        default=60,
        metadata={
            "help": "Seconds a job's command gets to exit after SIGTERM (on timeout, "
            "preemption or cancel) before it is killed. Default: 60",
            "env_var": False,
            "required": False,
        },
    )
    default_runtime: int = field(
        default=60,
        metadata={
            "help": "Time limit in minutes for jobs without a 'runtime' resource. " "Default: 60",
            "env_var": False,
            "required": False,
        },
    )
    slurm_extra: Optional[str] = field(
        default=None,
        metadata={
            "help": "Extra sbatch options for every job, e.g. "
            "\"--reservation=foo --mail-type=FAIL\"; a job's 'slurm_extra' resource "
            "overrides them option by option.",
            "env_var": False,
            "required": False,
        },
    )


common_settings = CommonSettings(
    non_local_exec=True,
    implies_no_shared_fs=False,
    job_deploy_sources=False,
    pass_default_storage_provider_args=True,
    pass_default_resources_args=True,
    pass_envvar_declarations_to_cmd=True,
    auto_deploy_default_storage_provider=False,
)


def _alive(procs: list[psutil.Process]) -> list[psutil.Process]:
    """The processes that still run (zombies count as exited; nothing is reaped)."""
    alive = []
    for proc in procs:
        try:
            if proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(proc)
        except psutil.NoSuchProcess:
            pass
    return alive


class JobCommand(submitit.helpers.Checkpointable):
    """Run one Snakemake job command in a subprocess, inside a submitit job.

    On the preemption/timeout signal submitit calls :meth:`checkpoint`: the
    command's process tree gets SIGTERM, up to ``grace_period_s`` seconds to
    exit, then SIGKILL, and the same command is requeued. A SIGTERM to this
    process (SLURM cancel, time limit, or preemption that SLURM requeues itself)
    is forwarded; then the job waits to be ended by SLURM rather than report a
    failure that would race with the requeue.
    """

    termination_wait_s = 120.0
    signal_settle_s = 5.0

    def __init__(self, command: str, grace_period_s: float = 60.0) -> None:
        self.command = command
        self.grace_period_s = grace_period_s
        self._child: subprocess.Popen | None = None
        self._terminated = False

    def __getstate__(self) -> dict[str, Any]:
        return {"command": self.command, "grace_period_s": self.grace_period_s}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(**state)

    def __call__(self) -> int:
        usr_sig = submitit.JobEnvironment._usr_sig()
        on_main_thread = threading.current_thread() is threading.main_thread()
        previous = signal.getsignal(signal.SIGTERM) if on_main_thread else None

        def on_sigterm(signum: int, frame: Any) -> None:
            self._terminated = True
            self._signal_tree(signal.SIGTERM)
            if callable(previous):
                previous(signum, frame)

        if on_main_thread:
            signal.signal(signal.SIGTERM, on_sigterm)
        # The command ignores the preemption signal: it gets SIGTERM from us instead.
        self._child = subprocess.Popen(f"trap '' {usr_sig.name[3:]}; {self.command}", shell=True)
        try:
            while (code := self._child.poll()) is None:
                time.sleep(0.2)
        except BaseException:
            self.stop(grace_period_s=1.0)
            raise
        finally:
            if on_main_thread:
                signal.signal(signal.SIGTERM, previous)
        if code == 0:
            return 0
        if self._terminated:
            time.sleep(self.termination_wait_s)
        elif code < 0 or code > 128:
            time.sleep(self.signal_settle_s)
        suffix = " after SIGTERM" if self._terminated else ""
        raise RuntimeError(f"Snakemake job command exited with code {code}{suffix}")

    def checkpoint(self, *args: Any, **kwargs: Any) -> submitit.helpers.DelayedSubmission:
        """Stop the command (SIGTERM, grace period, SIGKILL) and requeue it unchanged."""
        self.stop(self.grace_period_s)
        return super().checkpoint(*args, **kwargs)

    def _tree(self) -> list[psutil.Process]:
        if self._child is None or self._child.returncode is not None:
            return []
        try:
            root = psutil.Process(self._child.pid)
            return [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def _signal_tree(self, signum: int) -> list[psutil.Process]:
        procs = self._tree()
        for proc in procs:
            try:
                proc.send_signal(signum)
            except psutil.NoSuchProcess:
                pass
        return procs

    def stop(self, grace_period_s: float) -> None:
        """SIGTERM the command's process tree, wait up to the grace period, SIGKILL the rest."""
        procs = _alive(self._signal_tree(signal.SIGTERM))
        deadline = time.monotonic() + grace_period_s
        while procs and time.monotonic() < deadline:
            time.sleep(0.1)
            procs = _alive(procs)
        for proc in procs:
            try:
                proc.kill()
            except psutil.NoSuchProcess:
                pass


def parse_sbatch_options(text: str) -> dict[str, Any]:
    """Parse long sbatch options ("--a=1 --b 2 --flag") into submitit's additional_parameters."""
    tokens = shlex.split(text)
    options: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) == 2:
            raise WorkflowError(
                f"slurm_extra must consist of long sbatch options (--name=value or "
                f"--flag); got {token!r} in {text!r}"
            )
        name, has_value, value = token[2:].partition("=")
        if not has_value:
            if i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
                value = tokens[i + 1]
                i += 1
            else:
                value = True
        options[name.replace("-", "_")] = value
        i += 1
    return options


class Executor(RemoteExecutor):
    """Submit Snakemake jobs with ``submitit.AutoExecutor`` and poll their state."""

    def __post_init__(self) -> None:
        self.settings: ExecutorSettings = self.workflow.executor_settings or ExecutorSettings()
        if self.settings.signal_delay <= self.settings.grace_period:
            raise WorkflowError(
                f"--submitit-signal-delay ({self.settings.signal_delay}s) must be larger "
                f"than --submitit-grace-period ({self.settings.grace_period}s)"
            )
        self.cluster = self.settings.cluster or submitit.AutoExecutor.which()
        if self.cluster == "slurm" and submitit.SlurmExecutor.affinity() <= 0:
            raise WorkflowError(
                "--submitit-cluster slurm needs the SLURM commands (srun, sbatch, sacct) "
                "on PATH; use --submitit-cluster local to run without SLURM"
            )
        folder = Path(self.settings.folder).expanduser()
        if "%j" not in str(folder):
            folder = folder / "%j"
        self.folder = folder.absolute()
        self.extra_sbatch = parse_sbatch_options(self.settings.slurm_extra or "")
        self.latency_wait = float(getattr(self.workflow.execution_settings, "latency_wait", 5))
        # Jobs submitted and not yet reported; Snakemake's own list of active jobs is
        # empty while a status check runs, and cancel must not miss any job.
        self.unfinished: dict[str, SubmittedJobInfo] = {}
        self.unfinished_lock = threading.Lock()
        self.slurm_watcher = SlurmStateWatcher()
        self.logger.info(f"submitit executor: cluster={self.cluster}, logs in {self.folder}")

    def submitit_parameters(self, job: JobExecutorInterface) -> dict[str, Any]:
        """AutoExecutor.update_parameters() arguments for a Snakemake job's resources."""
        res = job.resources
        slurm = self.cluster == "slurm"
        runtime = res.get("runtime") or self.settings.default_runtime
        params: dict[str, Any] = {
            "name": f"snakemake-{job.name}-{job.jobid}",
            "timeout_min": int(math.ceil(float(runtime))),
            "cpus_per_task": int(job.threads),
        }
        if slurm and res.get("mem_mb_per_cpu"):
            params["slurm_mem_per_cpu"] = f"{int(res['mem_mb_per_cpu'])}M"
        elif res.get("mem_mb"):
            params["mem_gb"] = float(res["mem_mb"]) / 1024
            if slurm:
                params["slurm_mem"] = f"{int(res['mem_mb'])}M"
        gpus = int(res.get("gpu") or 0)
        if gpus and slurm and res.get("gpu_model"):
            params["slurm_gres"] = f"gpu:{res['gpu_model']}:{gpus}"
        elif gpus:
            params["gpus_per_node"] = gpus
        if not slurm:
            return params
        slurm_names = {
            "slurm_partition": "slurm_partition",
            "slurm_account": "slurm_account",
            "qos": "slurm_qos",
            "constraint": "slurm_constraint",
        }
        for resource, param in slurm_names.items():
            if res.get(resource):
                params[param] = str(res[resource])
        params["slurm_signal_delay_s"] = self.settings.signal_delay
        extra = {"requeue": True, **self.extra_sbatch}
        if res.get("slurm_extra"):
            extra.update(parse_sbatch_options(str(res["slurm_extra"])))
        params["slurm_additional_parameters"] = extra
        return params

    def run_job(self, job: JobExecutorInterface) -> None:
        executor = submitit.AutoExecutor(
            folder=self.folder,
            cluster=self.cluster,
            slurm_max_num_timeout=self.settings.max_requeues,
            local_max_num_timeout=self.settings.max_requeues,
        )
        params = self.submitit_parameters(job)
        try:
            executor.update_parameters(**params)
        except (NameError, ValueError, AssertionError) as e:
            raise WorkflowError(f"Invalid submitit parameters {params} for {job.name}: {e}") from e
        command = JobCommand(self.format_job_exec(job), grace_period_s=self.settings.grace_period)
        try:
            sjob = executor.submit(command)
        except Exception as e:
            raise WorkflowError(
                f"submitit could not submit job {job.name} to {self.cluster}: {e}"
            ) from e
        self.logger.info(
            f"Job {job.jobid} submitted as submitit {self.cluster} job {sjob.job_id}, "
            f"log: {sjob.paths.stdout}"
        )
        job_info = SubmittedJobInfo(
            job, external_jobid=str(sjob.job_id), aux={"submitit_job": sjob}
        )
        if self.cluster == "slurm":
            self.slurm_watcher.register_job(job_info.external_jobid)
        with self.unfinished_lock:
            self.unfinished[job_info.external_jobid] = job_info
        self.report_job_submission(job_info)

    def report_job_success(self, job_info: SubmittedJobInfo) -> None:
        with self.unfinished_lock:
            self.unfinished.pop(job_info.external_jobid, None)
        super().report_job_success(job_info)

    def report_job_error(self, job_info: SubmittedJobInfo, msg=None, **kwargs) -> None:
        with self.unfinished_lock:
            self.unfinished.pop(job_info.external_jobid, None)
        super().report_job_error(job_info, msg, **kwargs)

    async def check_active_jobs(
        self, active_jobs: list[SubmittedJobInfo]
    ) -> AsyncGenerator[SubmittedJobInfo, None]:
        if not active_jobs:
            # Also guards against the status thread running before __post_init__.
            return
        if self.cluster == "slurm":
            async with self.status_rate_limiter:
                await asyncio.to_thread(self.slurm_watcher.update)
        for job_info in active_jobs:
            if self.cluster == "debug":
                await asyncio.to_thread(self._run_debug_job, job_info)
                continue
            state = self._finished_state(job_info)
            if state is None:
                yield job_info
                continue
            sjob = job_info.aux["submitit_job"]
            if sjob.paths.result_pickle.exists():
                outcome, payload = pickle_load(sjob.paths.result_pickle)
                if outcome == "success":
                    self.report_job_success(job_info)
                    continue
                reason = str(payload).strip().splitlines()[-1]
            else:
                reason = f"ended with state {state} without a result"
            self._report_failure(job_info, reason)

    def _finished_state(self, job_info: SubmittedJobInfo) -> str | None:
        """The job's final state, or None while it is pending, running or requeued."""
        sjob = job_info.aux["submitit_job"]
        if sjob.paths.result_pickle.exists():
            return "COMPLETED"
        if self.cluster == "slurm":
            state = self.slurm_watcher.get_state(job_info.external_jobid, mode="cache")
            base_state = slurm_base_state(state)
            if base_state in SLURM_ACTIVE_STATES:
                return None
            if base_state == "PREEMPTED":
                first_seen = job_info.aux.setdefault("preempted_since", time.monotonic())
                if time.monotonic() - first_seen < PREEMPTED_GRACE_S:
                    return None
        else:
            state = sjob.state
            if not sjob.done():
                return None
        if state.startswith("COMPLETED") or state == "FINISHED":
            first_seen = job_info.aux.setdefault("completed_without_result", time.monotonic())
            if time.monotonic() - first_seen < self.latency_wait:
                return None
        return state

    def _run_debug_job(self, job_info: SubmittedJobInfo) -> None:
        try:
            job_info.aux["submitit_job"].submission().result()
        except Exception as e:
            self._report_failure(job_info, f"{type(e).__name__}: {e}")
        else:
            self.report_job_success(job_info)

    def _report_failure(self, job_info: SubmittedJobInfo, reason: str) -> None:
        paths = job_info.aux["submitit_job"].paths
        logs = [str(p) for p in (paths.stdout, paths.stderr) if p.exists()]
        where = " and ".join(logs) if logs else f"none written (folder {paths.folder})"
        self.report_job_error(
            job_info,
            msg=(
                f"submitit {self.cluster} job {job_info.external_jobid} failed: {reason}\n"
                f"    submitit logs: {where}\n"
            ),
            aux_logs=logs,
        )

    def cancel_jobs(self, active_jobs: list[SubmittedJobInfo]) -> None:
        with self.unfinished_lock:
            jobs = {j.external_jobid: j for j in [*active_jobs, *self.unfinished.values()]}
        if not jobs or self.cluster == "debug":
            return
        if self.cluster == "slurm":
            ids = sorted(jobs, key=int)
            self.logger.info(f"Cancelling SLURM jobs {' '.join(ids)}")
            result = subprocess.run(["scancel", *ids], capture_output=True, text=True)
            if result.returncode != 0:
                self.logger.error(f"scancel {' '.join(ids)} failed: {result.stderr.strip()}")
            return
        for job_info in jobs.values():
            job_info.aux["submitit_job"].cancel(check=False)
