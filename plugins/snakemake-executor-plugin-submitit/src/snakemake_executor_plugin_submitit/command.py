"""The callable of each submitit job: run one Snakemake job command, stop it cleanly on a signal.

This runs inside the SLURM (or local) job, not in the Snakemake process: submitit pickles a
:class:`JobCommand` and calls it on the node.
"""

import signal
import subprocess
import threading
import time
from typing import Any

import psutil
import submitit


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
