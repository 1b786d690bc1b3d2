"""A real single-node SLURM cluster (with accounting) for tests, in a temp dir.

Starts MariaDB, munged, slurmdbd, slurmctld and slurmd as child processes of
the current Python process, each with its own config, state and log files
under one temporary directory and on free ports of 127.0.0.1, so nothing in
/etc is used or changed and a system SLURM (if any) is left alone.

Debian's ``slurm-wlm``, ``slurmdbd``, ``munge`` and ``mariadb-server`` are
installed with apt-get when they are missing and we run as root.

The cluster is tuned for tests on a container: no cgroups
(``proctrack/linuxproc``, ``task/none``), jobs are purged quickly
(``MinJobAge``), the scheduler runs every second, and a requeued job waits
``cred_expire`` seconds (10 instead of SLURM's default 120) before it may start
again.

Use from Python::

    with SlurmCluster() as cluster:
        subprocess.run(["sbatch", ...], env=cluster.env)

or from a shell, to try things out by hand::

    python tests/slurm_cluster.py    # prints `export SLURM_CONF=...`, Ctrl-C stops
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

APT_PACKAGES = ("slurm-wlm", "slurmdbd", "munge", "mariadb-server")
REQUIRED_PROGRAMS = (
    "slurmctld",
    "slurmd",
    "slurmdbd",
    "munged",
    "mariadbd",
    "mariadb-install-db",
    "mariadb",
    "mariadb-admin",
    "sacctmgr",
    "sbatch",
    "srun",
    "sacct",
    "sinfo",
)
CLUSTER_NAME = "unmasking"
PARTITION = "debug"
REQUEUE_DELAY_S = 10
DB_USER = "slurm"
DB_PASSWORD = "slurm-test-only"


class SlurmUnavailable(RuntimeError):
    """SLURM cannot be installed or started on this machine."""


def missing_programs() -> list[str]:
    """Names of the programs the cluster needs that are not on PATH."""
    return [p for p in REQUIRED_PROGRAMS if shutil.which(p) is None]


def ensure_installed() -> None:
    """Install the Debian packages when programs are missing and we are root."""
    missing = missing_programs()
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise SlurmUnavailable(
            f"SLURM test cluster needs {', '.join(missing)}; install the Debian "
            f"packages {' '.join(APT_PACKAGES)} (or run the tests as root on Debian)"
        )
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "--no-install-recommends", *APT_PACKAGES]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, check=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise SlurmUnavailable(f"apt-get install failed:\n{result.stderr[-3000:]}")
    still_missing = missing_programs()
    if still_missing:
        raise SlurmUnavailable(f"still missing after apt-get: {', '.join(still_missing)}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_hardware() -> dict[str, str]:
    """The node line that ``slurmd -C`` detects, as a dict (CPUs, RealMemory, ...)."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True).stdout
    first = out.splitlines()[0]
    fields = dict(item.split("=", 1) for item in first.split())
    fields.pop("NodeName", None)
    return fields


class SlurmCluster:
    """Start/stop a single-node SLURM cluster with slurmdbd accounting.

    Attributes after :meth:`start`: ``root`` (temp dir), ``env`` (os.environ plus
    ``SLURM_CONF``), ``node``, ``partition``, ``startup_s`` (seconds to start).
    """

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="slurm-", dir="/tmp"))
        self.node = socket.gethostname().split(".")[0]
        self.partition = PARTITION
        self.startup_s: float | None = None
        self._procs: list[tuple[str, subprocess.Popen]] = []
        self._log_files: list = []
        self.env = dict(os.environ)

    def path(self, *parts: str) -> Path:
        return self.root.joinpath(*parts)

    @property
    def slurm_conf(self) -> Path:
        return self.path("etc", "slurm.conf")

    def __enter__(self) -> "SlurmCluster":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self, timeout_s: float = 120) -> None:
        """Install if needed, write configs, start all daemons, wait until usable."""
        t0 = time.monotonic()
        ensure_installed()
        for d in ("etc", "munge", "db", "state", "spool", "log", "run"):
            self.path(d).mkdir(parents=True, exist_ok=True)
        self.path("munge").chmod(0o755)
        self.env = dict(os.environ, SLURM_CONF=str(self.slurm_conf))
        try:
            self._start_munge()
            self._start_mariadb(timeout_s)
            self._start_slurmdbd(timeout_s)
            self._start_slurmctld_and_slurmd(timeout_s)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0

    def stop(self) -> None:
        """Stop the daemons in reverse order of start (SIGTERM, then SIGKILL)."""
        for name, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        self._procs.clear()
        for f in self._log_files:
            f.close()
        self._log_files.clear()

    def remove(self) -> None:
        """Delete the temp dir (configs, state, logs); call after :meth:`stop`."""
        shutil.rmtree(self.root, ignore_errors=True)

    def logs(self, tail: int = 30) -> str:
        """The last lines of every daemon log, for error messages."""
        parts = []
        for log in sorted(self.path("log").glob("*.log")):
            lines = log.read_text(errors="replace").splitlines()[-tail:]
            parts.append(f"==> {log} <==\n" + "\n".join(lines))
        return "\n".join(parts)

    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        out = open(self.path("log", f"{name}.stdout.log"), "ab")
        self._log_files.append(out)
        proc = subprocess.Popen(argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self._procs.append((name, proc))
        return proc

    def _wait_for(self, what: str, check, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for name, proc in self._procs:
                if proc.poll() is not None:
                    raise SlurmUnavailable(
                        f"{name} exited with code {proc.returncode} while waiting for {what}\n{self.logs()}"
                    )
            if check():
                return
            time.sleep(0.25)
        raise SlurmUnavailable(f"timed out after {timeout_s:.0f}s waiting for {what}\n{self.logs()}")

    def _ok(self, argv: list[str]) -> bool:
        return subprocess.run(argv, env=self.env, capture_output=True).returncode == 0

    def _start_munge(self) -> None:
        key = self.path("munge", "munge.key")
        key.write_bytes(os.urandom(1024))
        key.chmod(0o400)
        self.munge_socket = self.path("munge", "munge.socket")
        self._spawn(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--key-file={key}",
                f"--socket={self.munge_socket}",
                f"--pid-file={self.path('munge', 'munged.pid')}",
                f"--log-file={self.path('log', 'munged.log')}",
                f"--seed-file={self.path('munge', 'munged.seed')}",
            ],
        )
        self._wait_for("munged socket", self.munge_socket.exists, 30)

    def _start_mariadb(self, timeout_s: float) -> None:
        datadir = self.path("db", "data")
        self.db_socket = self.path("db", "mysqld.sock")
        self.db_port = _free_port()
        install = subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={datadir}",
                "--user=root",
                "--auth-root-authentication-method=socket",
                "--skip-test-db",
            ],
            capture_output=True,
            text=True,
        )
        if install.returncode != 0:
            raise SlurmUnavailable(f"mariadb-install-db failed:\n{install.stdout}\n{install.stderr}")
        self._spawn(
            "mariadb",
            [
                "mariadbd",
                "--no-defaults",
                f"--datadir={datadir}",
                f"--socket={self.db_socket}",
                f"--port={self.db_port}",
                "--bind-address=127.0.0.1",
                "--skip-name-resolve",
                "--user=root",
                f"--pid-file={self.path('db', 'mariadb.pid')}",
                f"--log-error={self.path('log', 'mariadb.log')}",
                "--innodb-buffer-pool-size=64M",
                "--innodb-lock-wait-timeout=900",
            ],
        )
        admin = ["mariadb-admin", "--no-defaults", f"--socket={self.db_socket}", "-u", "root"]
        self._wait_for("mariadb", lambda: self._ok([*admin, "ping"]), timeout_s)
        sql = " ".join(
            f"CREATE USER IF NOT EXISTS '{DB_USER}'@'{host}' IDENTIFIED BY '{DB_PASSWORD}'; "
            f"GRANT ALL ON slurm_acct_db.* TO '{DB_USER}'@'{host}';"
            for host in ("127.0.0.1", "localhost")
        )
        subprocess.run(
            ["mariadb", "--no-defaults", f"--socket={self.db_socket}", "-u", "root", "-e", sql],
            check=True,
            capture_output=True,
        )

    def _start_slurmdbd(self, timeout_s: float) -> None:
        self.dbd_port = _free_port()
        conf = self.path("etc", "slurmdbd.conf")
        conf.write_text(
            "\n".join(
                [
                    "AuthType=auth/munge",
                    f"AuthInfo=socket={self.munge_socket}",
                    "DbdHost=localhost",
                    "DbdAddr=127.0.0.1",
                    f"DbdPort={self.dbd_port}",
                    "SlurmUser=root",
                    "DebugLevel=info",
                    f"LogFile={self.path('log', 'slurmdbd.log')}",
                    f"PidFile={self.path('run', 'slurmdbd.pid')}",
                    "StorageType=accounting_storage/mysql",
                    "StorageHost=127.0.0.1",
                    f"StoragePort={self.db_port}",
                    f"StorageUser={DB_USER}",
                    f"StoragePass={DB_PASSWORD}",
                    "StorageLoc=slurm_acct_db",
                    "",
                ]
            )
        )
        conf.chmod(0o600)
        self._write_slurm_conf()
        self._spawn("slurmdbd", ["slurmdbd", "-D"])
        self._wait_for("slurmdbd", lambda: self._ok(["sacctmgr", "-n", "-P", "show", "cluster"]), timeout_s)
        add = subprocess.run(
            ["sacctmgr", "-i", "add", "cluster", CLUSTER_NAME],
            env=self.env,
            capture_output=True,
            text=True,
        )
        if add.returncode != 0 and "already exists" not in add.stdout + add.stderr:
            raise SlurmUnavailable(f"sacctmgr add cluster failed:\n{add.stdout}{add.stderr}")

    def _write_slurm_conf(self) -> None:
        hw = _node_hardware()
        cpus = int(hw["CPUs"])
        memory = int(hw["RealMemory"]) - 512
        node_hw = " ".join(f"{k}={v}" for k, v in hw.items() if k not in ("RealMemory", "UpTime"))
        self.ctld_port = _free_port()
        self.slurmd_port = _free_port()
        lines = [
            f"ClusterName={CLUSTER_NAME}",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            f"AuthInfo=socket={self.munge_socket},cred_expire={REQUEUE_DELAY_S}",
            "CredType=cred/munge",
            "MpiDefault=none",
            "SwitchType=switch/none",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/linux",
            "JobAcctGatherFrequency=30",
            "AccountingStorageType=accounting_storage/slurmdbd",
            "AccountingStorageHost=127.0.0.1",
            f"AccountingStoragePort={self.dbd_port}",
            f"AccountingStoragePass={self.munge_socket}",
            "SchedulerType=sched/backfill",
            "SchedulerParameters=sched_interval=1,bf_interval=1",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU_Memory",
            f"DefMemPerCPU={max(memory // (4 * cpus), 256)}",
            "MailProg=/bin/true",
            "MinJobAge=2",
            "JobRequeue=1",
            "KillWait=10",
            "InactiveLimit=0",
            "ReturnToService=2",
            "SlurmdParameters=config_overrides",
            f"StateSaveLocation={self.path('state')}",
            f"SlurmdSpoolDir={self.path('spool')}",
            f"SlurmctldPidFile={self.path('run', 'slurmctld.pid')}",
            f"SlurmdPidFile={self.path('run', 'slurmd.pid')}",
            f"SlurmctldLogFile={self.path('log', 'slurmctld.log')}",
            f"SlurmdLogFile={self.path('log', 'slurmd.log')}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"PlugStackConfig={self.path('etc', 'plugstack.conf')}",
            f"NodeName={self.node} NodeAddr=127.0.0.1 {node_hw} RealMemory={memory} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={self.node} Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
        self.slurm_conf.write_text("\n".join(lines))
        self.path("etc", "plugstack.conf").write_text("")
        self.path("etc", "cgroup.conf").write_text(
            "# Not used: proctrack/linuxproc and task/none need no cgroups (containers).\nCgroupPlugin=autodetect\n"
        )

    def _start_slurmctld_and_slurmd(self, timeout_s: float) -> None:
        self._spawn("slurmctld", ["slurmctld", "-D", "-i"])
        self._wait_for("slurmctld", lambda: self._ok(["scontrol", "ping"]), timeout_s)
        self._spawn("slurmd", ["slurmd", "-D", "-N", self.node])

        def node_idle() -> bool:
            out = subprocess.run(
                ["sinfo", "-h", "-N", "-o", "%T"], env=self.env, capture_output=True, text=True
            ).stdout.split()
            return out == ["idle"]

        self._wait_for("the node to be idle in sinfo", node_idle, timeout_s)
        self._wait_for("sacct", lambda: self._ok(["sacct", "-n", "-X"]), timeout_s)


def main() -> None:
    """Start a cluster in the foreground until Ctrl-C/SIGTERM, for manual use."""
    cluster = SlurmCluster()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        cluster.start()
        print(f"SLURM test cluster up in {cluster.startup_s:.1f}s; in another shell run:")
        print(f"  export SLURM_CONF={cluster.slurm_conf}")
        print("Press Ctrl-C to stop it.", flush=True)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        cluster.stop()
        cluster.remove()


if __name__ == "__main__":
    main()
