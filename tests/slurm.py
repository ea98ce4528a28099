"""A real one-node SLURM cluster for the tests, as plain processes in a temporary folder.

Debian's slurm-wlm 22.05 (slurmctld, slurmd, slurmdbd), munge and MariaDB, installed by scripts/install_slurm.sh
(which `make test` runs first). ``Cluster`` starts munged, mariadbd, slurmdbd, slurmctld and slurmd with their own
slurm.conf, munge key and socket, database and free ports; the node has this machine's real CPUs and memory
(``slurmd -C``) and no GPUs, or fake ones declared in gres.conf (``restart_slurm(gpus=N)``). Nothing of the machine's
own configuration (/etc/slurm, /etc/munge, /run/munge) is read or touched: client commands find the cluster through
``SLURM_CONF`` in ``Cluster.env``.

Every process the cluster starts, and every process of its jobs, carries ``MARKER=<folder>`` in its environment
(the daemons get it at start, the jobs through ``sbatch --export=ALL`` from ``Cluster.env``); ``stop`` cancels the
jobs, stops the daemons it started and then ends whatever process still carries the marker, so nothing of the
cluster outlives the test session, also when a test fails. The session fixture ``slurm_cluster`` skips the SLURM
tests, with the reason, where the packages are missing or the cluster does not start.
"""
from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import time
from pathlib import Path

import pytest

MARKER = "DSKD_TEST_SLURM"  # the environment variable that marks the cluster's processes
DAEMONS = ("munged", "mariadbd", "mariadb-install-db", "slurmctld", "slurmd", "slurmdbd", "sacctmgr")
ACCOUNT = "dskd"  # the account the tests submit with (a real association, as on a cluster with accounting)
PARTITIONS = ("batch", "accel")  # both on the one node; "batch" is the default. Not the profile's names (cpu, gpu):
# the tests fill in the profile as a user of this cluster would


class ClusterError(RuntimeError):
    """The cluster did not start, or a command of it failed (the message says which, and where the logs are)."""


def missing_programs() -> list[str]:
    """The programs the cluster needs that are not installed."""
    return [p for p in DAEMONS + ("sbatch", "squeue", "sacct", "scontrol", "mungekey")
            if shutil.which(p) is None and not Path("/usr/sbin", p).exists()]


def _program(name: str) -> str:
    return shutil.which(name) or str(Path("/usr/sbin", name))


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports of 127.0.0.1 that are free now (bound together, then released)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def node_line() -> str:
    """This machine as a slurm.conf node: ``slurmd -C``'s CPUs, sockets, cores, threads and real memory."""
    out = subprocess.run([_program("slurmd"), "-C"], capture_output=True, text=True, timeout=30).stdout
    first = out.splitlines()[0] if out else ""
    fields = dict(item.split("=", 1) for item in first.split() if "=" in item)
    keys = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    if not all(k in fields for k in keys):
        raise ClusterError(f"`slurmd -C` printed no node description: {out!r}")
    return " ".join(f"{k}={fields[k]}" for k in keys)


class Cluster:
    """A one-node SLURM cluster with accounting in ``root`` (a fresh folder); ``start()``, then ``stop()``."""

    def __init__(self, root: Path, gpus: int = 0, accounting: bool = True):
        self.root = Path(root)
        self.gpus = gpus
        self.accounting = accounting
        self.node = socket.gethostname().split(".")[0] or "localhost"
        self.name = "t" + secrets.token_hex(4)  # cluster name, also in the database's name
        self.ctld_port, self.slurmd_port, self.dbd_port, self.db_port = free_ports(4)
        self.processes: dict[str, subprocess.Popen] = {}
        self.conf = self.root / "etc" / "slurm.conf"
        self.munge_socket = self.root / "munge" / "munge.socket"
        self.db_socket = self.root / "mysql" / "mysqld.sock"
        self.db_password = secrets.token_hex(8)

    # -- what tests use ------------------------------------------------------------------------------------------

    @property
    def env(self) -> dict[str, str]:
        """The environment for client commands and for Snakemake runs that submit to the cluster (jobs inherit it
        through ``--export=ALL``, marker included)."""
        path = f"{self.root / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"
        return {**os.environ, "SLURM_CONF": str(self.conf), MARKER: str(self.root), "PATH": path}

    def run(self, *command: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        """A SLURM client command (``sinfo``, ``scontrol``, ``sacctmgr -i ...``) against this cluster."""
        result = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, env=self.env)
        if check and result.returncode != 0:
            raise ClusterError(f"`{' '.join(command)}` failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def node_state(self) -> str:
        return self.run("sinfo", "-h", "-n", self.node, "-o", "%T").stdout.strip()

    def jobs(self) -> list[dict[str, str]]:
        """Every job slurmctld still lists: id, name, state, reason."""
        out = self.run("squeue", "-h", "--states=all", "-o", "%i|%j|%T|%r").stdout
        return [dict(zip(("id", "name", "state", "reason"), line.split("|"))) for line in out.splitlines() if line]

    def wait_for(self, predicate, timeout: float, what: str, poll: float = 0.5):
        """Poll ``predicate()`` until it returns something true (returned), at most ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout:g} s for {what}")
            time.sleep(poll)

    def wait_idle(self, timeout: float = 60) -> None:
        """Wait (at most ``timeout`` seconds) until the node takes jobs: idle, no job left."""
        self.wait_for(lambda: self.node_state() == "idle" and not self.live_jobs(), timeout, "an idle node")

    def cancel_all(self, timeout: float = 60) -> None:
        """Cancel every job and wait until none is pending or running."""
        self.run("scancel", "--full", f"--partition={','.join(PARTITIONS)}", check=False)
        self.wait_for(lambda: not self.live_jobs(), timeout, "the cancelled jobs to end")

    def live_jobs(self) -> list[dict[str, str]]:
        """The jobs not yet ended."""
        return [j for j in self.jobs() if j["state"] in ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING",
                                                           "SUSPENDED", "REQUEUED", "RESIZING", "STOPPED")]

    # -- start and stop ------------------------------------------------------------------------------------------

    def start(self) -> None:
        for folder in ("bin", "etc", "munge", "mysql", "db", "state", "spool", "log", "run"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        # The plugin's job step removes SLURM_CONF from the environment of the srun it starts (keeping only the job's
        # own SLURM_* variables); an installed cluster's srun reads /etc/slurm/slurm.conf instead, which this one
        # must leave alone: an srun first on PATH that sets it back.
        srun = self.root / "bin" / "srun"
        srun.write_text(f"#!/bin/sh\nSLURM_CONF={self.conf} exec {_program('srun')} \"$@\"\n")
        srun.chmod(0o755)
        self.node_spec = node_line()
        try:
            self._start_munge()
            if self.accounting:
                self._start_database()
                self._write_dbd_conf()
                self._spawn("slurmdbd", [_program("slurmdbd"), "-D"], self.root / "log" / "slurmdbd.log")
                self.wait_for(lambda: self._port_open(self.dbd_port), 30, "slurmdbd to listen")
            self._write_slurm_conf()
            self._start_slurm()
            if self.accounting:
                self._add_associations()
            self.wait_idle(60)
        except BaseException:
            self.stop()
            raise

    def _start_munge(self) -> None:
        key = self.root / "munge" / "munge.key"
        subprocess.run([_program("mungekey"), "--create", f"--keyfile={key}"], check=True, capture_output=True,
                       timeout=30)
        key.chmod(0o600)
        self.root.chmod(0o755)  # munged refuses a key or socket in a group- or world-writable folder
        self._spawn("munged", [_program("munged"), "--foreground", "--force", f"--key-file={key}",
                               f"--socket={self.munge_socket}", f"--pid-file={self.root / 'run' / 'munged.pid'}",
                               f"--seed-file={self.root / 'munge' / 'munged.seed'}",
                               f"--log-file={self.root / 'log' / 'munged.log'}"], self.root / "log" / "munged.out")
        self.wait_for(self.munge_socket.exists, 20, "munged's socket")

    def _start_database(self) -> None:
        datadir = self.root / "db"
        common = ["--no-defaults", f"--datadir={datadir}", "--user=root"]
        result = subprocess.run([_program("mariadb-install-db"), *common, "--auth-root-authentication-method=normal",
                                 "--skip-test-db"], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise ClusterError(f"mariadb-install-db failed: {result.stderr.strip()[-500:]}")
        self._spawn("mariadbd", [_program("mariadbd"), *common, f"--socket={self.db_socket}", f"--port={self.db_port}",
                                 "--bind-address=127.0.0.1", "--skip-name-resolve", "--innodb-buffer-pool-size=32M",
                                 f"--pid-file={self.root / 'run' / 'mariadbd.pid'}",
                                 f"--log-error={self.root / 'log' / 'mariadbd.log'}"],
                    self.root / "log" / "mariadbd.out")
        self.wait_for(self.db_socket.exists, 60, "mariadbd's socket")
        sql = (f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{self.db_password}'; "
               f"GRANT ALL ON `{self.name}_acct`.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;")
        subprocess.run([shutil.which("mariadb") or "mysql", "--no-defaults", f"--socket={self.db_socket}", "-u",
                        "root", "-e", sql], check=True, capture_output=True, timeout=30)

    def _write_dbd_conf(self) -> None:
        path = self.conf.parent / "slurmdbd.conf"
        path.write_text("\n".join([
            "AuthType=auth/munge", f"AuthInfo=socket={self.munge_socket}", "DbdHost=localhost",
            "DbdAddr=127.0.0.1", f"DbdPort={self.dbd_port}", "SlurmUser=root",
            f"PidFile={self.root / 'run' / 'slurmdbd.pid'}", f"LogFile={self.root / 'log' / 'slurmdbd.log'}",
            "DebugLevel=info", "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1",
            f"StoragePort={self.db_port}", "StorageUser=slurm", f"StoragePass={self.db_password}",
            f"StorageLoc={self.name}_acct", ""]))
        path.chmod(0o600)

    def _write_slurm_conf(self) -> None:
        r = self.root
        lines = [
            f"ClusterName={self.name}", f"SlurmctldHost={self.node}(127.0.0.1)", f"SlurmctldPort={self.ctld_port}",
            f"SlurmdPort={self.slurmd_port}", "AuthType=auth/munge", f"AuthInfo=socket={self.munge_socket}",
            "CredType=cred/munge", "SlurmUser=root", "SlurmdUser=root", f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}", f"SlurmctldPidFile={r / 'run' / 'slurmctld.pid'}",
            f"SlurmdPidFile={r / 'run' / 'slurmd.pid'}", f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}",
            f"SlurmdLogFile={r / 'log' / 'slurmd.log'}", "SlurmctldDebug=info", "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "MpiDefault=none",
            "SelectType=select/cons_tres", "SelectTypeParameters=CR_Core_Memory", "SchedulerType=sched/backfill",
            "ReturnToService=2", "SlurmdTimeout=30", "InactiveLimit=0", "KillWait=5", "MinJobAge=300",
            "JobAcctGatherType=jobacct_gather/linux", "JobAcctGatherFrequency=30", "JobCompType=jobcomp/none",
            "MailProg=/bin/true",
        ]
        if self.accounting:
            lines += ["AccountingStorageType=accounting_storage/slurmdbd", "AccountingStorageHost=localhost",
                      f"AccountingStoragePort={self.dbd_port}", f"AccountingStoragePass={self.munge_socket}",
                      "AccountingStorageEnforce=associations,limits", "AccountingStoreFlags=job_comment",
                      "AccountingStorageTRES=gres/gpu"]  # sacct shows GPUs asked and held only with this
        else:
            lines += ["AccountingStorageType=accounting_storage/none"]
        gres = ""
        if self.gpus:
            lines.append("GresTypes=gpu")
            gres = f" Gres=gpu:{self.gpus}"
            # character devices (gres/gpu refuses anything else) of harmless kinds, null, zero, full...: nothing
            # opens them; SLURM numbers the GPUs by the files' trailing digits for CUDA_VISIBLE_DEVICES
            devices = [r / "run" / f"nvidia{i}" for i in range(self.gpus)]
            for device, minor in zip(devices, (3, 5, 7, 8, 9)):
                if not device.exists():
                    os.mknod(device, 0o600 | stat.S_IFCHR, os.makedev(1, minor))
            (self.conf.parent / "gres.conf").write_text(
                "AutoDetect=off\n" + "".join(f"NodeName={self.node} Name=gpu File={d}\n" for d in devices))
        lines.append(f"NodeName={self.node} NodeAddr=127.0.0.1 {self.node_spec}{gres} State=UNKNOWN")
        for i, partition in enumerate(PARTITIONS):
            lines.append(f"PartitionName={partition} Nodes={self.node} Default={'YES' if i == 0 else 'NO'} "
                         "MaxTime=INFINITE State=UP")
        self.conf.write_text("\n".join(lines) + "\n")

    def _start_slurm(self) -> None:
        self._spawn("slurmctld", [_program("slurmctld"), "-D", "-i", "-f", str(self.conf)],
                    self.root / "log" / "slurmctld.out")
        self.wait_for(lambda: self.run("scontrol", "ping", check=False).returncode == 0, 30, "slurmctld to answer")
        self._spawn("slurmd", [_program("slurmd"), "-D", "-N", self.node, "-f", str(self.conf)],
                    self.root / "log" / "slurmd.out")

    def _add_associations(self) -> None:
        for command in (["sacctmgr", "-i", "add", "cluster", self.name],
                        ["sacctmgr", "-i", "add", "account", ACCOUNT, f"cluster={self.name}"],
                        ["sacctmgr", "-i", "add", "user", "root", f"account={ACCOUNT}", f"cluster={self.name}"]):
            result = self.run(*command, check=False)
            if result.returncode != 0 and "already exist" not in result.stdout + result.stderr:
                raise ClusterError(f"`{' '.join(command)}` failed: {(result.stdout + result.stderr).strip()}")

    def restart_slurm(self, gpus: int | None = None, accounting: bool | None = None) -> None:
        """Stop slurmctld and slurmd (no job may run), rewrite slurm.conf with ``gpus`` fake GPUs and accounting on
        or off, and start them again; munged, the database and slurmdbd keep running."""
        self.cancel_all()
        for name in ("slurmd", "slurmctld"):
            self._terminate(name)
        if gpus is not None:
            self.gpus = gpus
        if accounting is not None:
            self.accounting = accounting
        for saved in (self.root / "state").glob("node_state*"):  # the node's old GRES would come back from it
            saved.unlink()
        self._write_slurm_conf()
        self._start_slurm()
        self.wait_idle(60)

    def _spawn(self, name: str, command: list[str], output: Path) -> None:
        with open(output, "ab") as out:
            self.processes[name] = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT,
                                                    stdin=subprocess.DEVNULL, env=self.env, start_new_session=True,
                                                    cwd=self.root)
        time.sleep(0.2)
        if self.processes[name].poll() is not None:
            raise ClusterError(f"{name} exited at once ({self.processes[name].returncode}): see {output} and "
                               f"{self.root / 'log'}")

    def _port_open(self, port: int) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    def _terminate(self, name: str, timeout: float = 15) -> None:
        process = self.processes.pop(name, None)
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)

    def marked_processes(self) -> list[int]:
        """The ids of the live processes that carry this cluster's marker in their environment (its daemons, its
        jobs' processes)."""
        needle = f"{MARKER}={self.root}\0".encode()
        found = []
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                with open(f"/proc/{entry.name}/environ", "rb") as f:
                    environ = f.read() + b"\0"
                with open(f"/proc/{entry.name}/stat", "rb") as f:
                    state = f.read().rsplit(b")", 1)[1].split()[0]
            except OSError:
                continue
            if needle in environ and state != b"Z":
                found.append(int(entry.name))
        return found

    def stop(self) -> None:
        """Cancel the jobs, stop the daemons in the reverse order of their start, then end any process that still
        carries the marker (a job step that outlived its slurmd)."""
        if "slurmctld" in self.processes:
            try:
                self.cancel_all(timeout=30)
            except (TimeoutError, ClusterError, subprocess.TimeoutExpired):
                pass
        for name in reversed(list(self.processes)):
            self._terminate(name)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.marked_processes():
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 10
            while self.marked_processes() and time.monotonic() < deadline:
                time.sleep(0.2)


def _log_tail(root: Path) -> str:
    tails = []
    for log in sorted((root / "log").glob("*")):
        text = log.read_text(errors="replace").strip().splitlines()[-3:]
        if text:
            tails.append(f"{log.name}: " + " / ".join(text))
    return "; ".join(tails)


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """The session's cluster (accounting, no GPUs at start); skips with the reason where it cannot run."""
    missing = missing_programs()
    if missing:
        pytest.skip(f"SLURM is not installed ({', '.join(missing)} missing): `make test` installs Debian's "
                    "slurm-wlm, slurmdbd, munge and mariadb-server with scripts/install_slurm.sh where apt-get can run "
                    "as root; it could not here")
    if os.geteuid() != 0:
        pytest.skip("the test cluster's slurmd runs jobs as root: run the SLURM tests as root")
    root = tmp_path_factory.mktemp("slurm")
    cluster = Cluster(root)
    try:
        cluster.start()
    except (ClusterError, TimeoutError, OSError, subprocess.SubprocessError) as error:
        pytest.skip(f"the test SLURM cluster did not start: {error} (logs in {root / 'log'}: {_log_tail(root)})")
    try:
        yield cluster
    finally:
        cluster.stop()
        left = cluster.marked_processes()
        assert not left, f"processes of the test cluster outlived it: {left}"

