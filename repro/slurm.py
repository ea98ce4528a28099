"""The workflow on a SLURM cluster (``--workflow-profile profiles/slurm``, snakemake-executor-plugin-slurm): what
each job asks of the cluster, the checks before the first submission, and the watch that ends a run whose job can
never start.

- **GPUs only where the job gets them.** A GPU rule declares its devices (``resources: gpu``), which the plugin
  turns into ``sbatch --gpus=N``. ``job_gpus`` keeps that count only where the job runs on GPUs: when submitting,
  if a node of the job's partition has GPUs (``sinfo``); inside a SLURM job (the plugin's job step and the
  Snakemake it starts), if the allocation holds GPUs; on a local run, always (``repro.gpus`` claims them). So the
  same command runs on a CPU-only partition (no ``--gpus``, which such a partition refuses) and on a GPU one.
- **Nothing submitted that cannot run** (``preflight``, from the Snakefile's ``onstart``): the profile's account
  placeholder, a status command that would lose the jobs (``sacct`` without accounting: the plugin then drops
  every job from its watch and Snakemake waits forever; ``squeue`` with a ``MinJobAge`` shorter than the plugin's
  longest status interval), an unknown account or partition, and a job that asks more CPUs, memory or GPUs than
  a node of its partition has each stop the run before any submission, one line each, naming the key to set.
- **No job waited on forever** (``PendingWatch``, ``read_cancelled_jobs``): a job of the run that waits on a
  partition whose nodes all refuse jobs (drained, down, not responding) or for a reason that never clears on its
  own (a time limit above the partition's, an invalid account) is cancelled with one line saying why; a cancelled
  job (by ``scancel`` or by the watch) counts as failed, which the plugin does not see by itself in sacct's
  ``CANCELLED by <uid>``; the plugin then reports it with its log, and the run ends.
- **The cause of a failure on the console** (``job_causes``, from the Snakefile's ``onerror``): each failed job's
  own error, which its Snakemake printed only to the job's log, and that log's path.

Torch-free, reads nothing of the package above it: the rules import it while the job graph is built. Every SLURM
command runs with a timeout (``COMMAND_TIMEOUT``).
"""
from __future__ import annotations

import getpass
import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

PROFILE = "profiles/slurm/config.yaml"
PLACEHOLDER_ACCOUNT = "CHANGE-ME"  # the profile's slurm_account until a user puts theirs
COMMAND_TIMEOUT = 30.0  # seconds any SLURM command may take
# The plugin's status checks: every check without a finished job adds 10 s to the interval, up to 180 s
# (snakemake-executor-plugin-slurm's max_sleep_time); squeue only lists a finished job for MinJobAge seconds.
MAX_STATUS_INTERVAL = 180
SQUEUE_MARGIN = 30
WATCH_INTERVAL = 10.0  # seconds between two looks of the pending-job watch
WATCH_STRIKES = 2  # consecutive looks that must find a job unable to start before it is cancelled
# Node states (sinfo %T, flags stripped) in which a node takes new jobs; powered-down cloud nodes (~) boot on demand
USABLE_STATES = frozenset({"idle", "mixed", "allocated", "completing", "planned"})
# Pending reasons (squeue %r) that never clear without an administrator or a new submission
HOPELESS_REASONS = ("PartitionConfig", "PartitionTimeLimit", "PartitionNodeLimit", "PartitionDown",
                    "PartitionInactive", "InvalidAccount", "InvalidQOS", "BadConstraints", "AccountNotAllowed")


def import_path_first(folder: str | os.PathLike, environ=None) -> None:
    """Put ``folder`` first on ``PYTHONPATH`` in ``environ`` (default: this process's environment, which every job,
    its subprocesses and, through ``sbatch --export=ALL``, every cluster job inherit), so that they import the
    package from ``folder`` (the checkout that holds the Snakefile) before an editable install elsewhere."""
    environ = os.environ if environ is None else environ
    folder = str(folder)
    rest = [p for p in environ.get("PYTHONPATH", "").split(os.pathsep) if p and p != folder]
    environ["PYTHONPATH"] = os.pathsep.join([folder] + rest)


class SlurmError(RuntimeError):
    """A SLURM command failed or did not answer in time (the message names the command and its error)."""


def query(*command: str, timeout: float = COMMAND_TIMEOUT) -> str:
    """The standard output of SLURM command ``command``; raises ``SlurmError`` naming it when it fails or hangs."""
    try:
        result = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError:
        raise SlurmError(f"`{command[0]}` is not installed here") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"`{' '.join(command)}` did not answer within {timeout:g} s") from None
    if result.returncode != 0:
        error = " ".join(result.stderr.split()) or f"exit status {result.returncode}"
        raise SlurmError(f"`{' '.join(command)}` failed: {error}")
    return result.stdout


@dataclass(frozen=True)
class Partition:
    """What a node of a partition offers at most: CPUs, memory (MB) and GPUs; ``default``: sbatch's default."""

    name: str
    cpus: int
    memory_mb: int
    gpus: int
    default: bool = False


def gres_gpus(gres: str) -> int:
    """The GPUs in a node's generic resources as sinfo prints them (``%G``): ``gpu:4``, ``gpu:a100:4(S:0-1)``,
    ``gpu:2,shard:8``; 0 for ``(null)``."""
    total = 0
    for entry in re.split(r",(?![^(]*\))", gres):
        fields = entry.split("(")[0].split(":")
        if fields[0] == "gpu" and len(fields) > 1 and fields[-1].isdigit():
            total += int(fields[-1])
    return total


def parse_partitions(text: str) -> dict[str, Partition]:
    """Partitions from ``sinfo -h -a -N -o %P|%c|%m|%G`` (one line per partition and node): each one's largest
    node."""
    found: dict[str, Partition] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) != 4 or not fields[0]:
            continue
        name, cpus, memory, gres = fields
        node = Partition(name.rstrip("*"), _leading_int(cpus), _leading_int(memory), gres_gpus(gres),
                         name.endswith("*"))
        old = found.get(node.name)
        if old is not None:
            node = Partition(node.name, max(old.cpus, node.cpus), max(old.memory_mb, node.memory_mb),
                             max(old.gpus, node.gpus), old.default or node.default)
        found[node.name] = node
    return found


def _leading_int(text: str) -> int:
    # a line of sinfo without -N marks a range of sizes with "+" (``32+``): its smallest
    return int(re.match(r"\d*", text).group() or 0)


@lru_cache(maxsize=None)
def partitions() -> dict[str, Partition]:
    """This cluster's partitions (``sinfo``), asked once per process."""
    return parse_partitions(query("sinfo", "-h", "-a", "-N", "-o", "%P|%c|%m|%G"))


def default_partition() -> str | None:
    return next((p.name for p in partitions().values() if p.default), None)


def submitting(workflow) -> bool:
    """Whether ``workflow`` (Snakemake's) submits its jobs to SLURM: the plugin's executor, in the main process."""
    plugin = getattr(workflow, "executor_plugin", None)
    return getattr(plugin, "name", None) == "slurm"


def _raw(resources, key: str):
    value = resources.get(key) if resources is not None else None
    return getattr(value, "raw", value)


def configured_partition(workflow, rule: str) -> str | None:
    """The partition the profile gives rule ``rule`` (``set-resources``, else ``default-resources``), else the
    cluster's default partition."""
    settings = workflow.resource_settings
    partition = _raw(settings.overwrite_resources.get(rule), "slurm_partition")
    if partition is None:
        partition = _raw(settings.default_resources, "slurm_partition")
    if isinstance(partition, str):
        partition = partition.strip().strip("'\"")
    return str(partition) if partition not in (None, "") else default_partition()


def allocated_gpus(environ=None) -> int:
    """The GPUs of the SLURM allocation this process runs in (0 outside one, or without GPUs)."""
    environ = os.environ if environ is None else environ
    on_node = environ.get("SLURM_GPUS_ON_NODE", "")
    if on_node.isdigit():
        return int(on_node)
    listed = environ.get("SLURM_STEP_GPUS") or environ.get("SLURM_JOB_GPUS") or ""
    return len([g for g in listed.split(",") if g])


def job_gpus(workflow, rule: str, count: int) -> int:
    """The GPUs a job of rule ``rule`` that can use ``count`` asks for (its ``gpu`` resource): ``count`` on a local
    run; when submitting to SLURM, ``count`` if a node of the rule's partition has GPUs, else 0 (a CPU partition
    refuses ``--gpus``); inside a SLURM job, ``count`` if the allocation holds GPUs, else 0 (the job step's
    ``srun`` asks the same as the submission did)."""
    if count <= 0:
        return 0
    if submitting(workflow):
        partition = partitions().get(configured_partition(workflow, rule) or "")
        return count if partition is None or partition.gpus else 0  # an unknown partition: preflight says so
    if os.environ.get("SLURM_JOB_ID"):
        return count if allocated_gpus() else 0
    return count


# ---------------------------------------------------------------------------------------------------------------
# Before the first submission


def cluster_config() -> dict[str, str]:
    """``scontrol show config`` as a mapping (``MinJobAge`` -> ``300 sec``, ...)."""
    pairs = (line.split("=", 1) for line in query("scontrol", "show", "config").splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def seconds(value: str | None) -> int | None:
    """``300 sec`` -> 300, ``1h`` -> 3600 (scontrol's spelling of a time); None for anything else."""
    match = re.match(r"^(\d+)\s*([a-z]*)", (value or "").strip().lower())
    if not match:
        return None
    return int(match.group(1)) * (3600 if match.group(2) in ("h", "hour", "hours") else 1)


def status_command(settings, config: dict[str, str], sacct_installed: bool) -> str:
    """The status command the plugin will use: its setting, with the plugin's own switch from squeue back to sacct
    when ``MinJobAge`` is below three initial intervals."""
    command = getattr(settings, "status_command", None) or "sacct"
    initial = getattr(settings, "init_seconds_before_status_checks", None) or 40
    age = seconds(config.get("MinJobAge"))
    if command == "squeue" and (age is None or age < 3 * initial) and sacct_installed:
        return "sacct"
    return command if sacct_installed or command == "squeue" else "squeue"


def _accounts() -> set[str]:
    out = query("sacctmgr", "-n", "-P", "list", "associations", f"user={getpass.getuser()}", "format=account")
    return {line.strip().lower() for line in out.splitlines() if line.strip()}


def _cpus(job, gpus: int) -> int:
    per_task = job.resources.get("cpus_per_task")
    if isinstance(per_task, int) and per_task > 0:
        return per_task
    per_gpu = job.resources.get("cpus_per_gpu")
    if gpus and isinstance(per_gpu, int) and per_gpu > 0:
        return per_gpu * gpus
    return job.threads


def preflight(workflow) -> list[str]:
    """What would make a run submitted to SLURM fail late or wait forever, one line each (empty: submit). Reads the
    jobs Snakemake is about to submit (``workflow.dag``; local rules excluded) and asks the cluster."""
    jobs = [job for job in workflow.dag.needrun_jobs() if not job.is_local]
    problems: list[str] = []
    cores = workflow.resource_settings.cores
    if cores is not None:
        # Snakemake applies the workflow's own profile (profiles/default: one thread per job, every core of this
        # machine) on top of --profile, and the cores of the submitting machine cap every job's threads
        problems.append(f"this machine's {cores} cores (--cores, or profiles/default, which Snakemake applies on top "
                        "of --profile) would cap the threads of every cluster job and replace the SLURM profile's: "
                        "run with --workflow-profile profiles/slurm instead of --profile, and without --cores")
    try:
        config = cluster_config()
        known = partitions()
    except SlurmError as error:
        return [f"the SLURM cluster does not answer: {error}"]
    accounting = config.get("AccountingStorageType", "accounting_storage/none") != "accounting_storage/none"
    problems += _status_problems(workflow.executor_settings, config, accounting)
    problems += _account_problems({str(job.resources.get("slurm_account") or "") for job in jobs}, accounting)
    problems += _size_problems(jobs, known)
    return problems


def _status_problems(settings, config: dict[str, str], accounting: bool) -> list[str]:
    """Whether the plugin's status command will see every job until it ends."""
    if status_command(settings, config, shutil.which("sacct") is not None) == "squeue":
        age = seconds(config.get("MinJobAge"))
        if age is None or age < MAX_STATUS_INTERVAL + SQUEUE_MARGIN:
            return [f"the status command squeue needs the cluster's MinJobAge (now {age} s) to be at least "
                    f"{MAX_STATUS_INTERVAL + SQUEUE_MARGIN} s, or a finished job can vanish between two status "
                    "checks and the run would wait forever: use sacct (accounting) or ask for a longer MinJobAge"]
        return []
    if not accounting:
        return ["this cluster keeps no job accounting (AccountingStorageType=accounting_storage/none): the status "
                "command sacct would lose every job; set slurm-status-command: squeue (--slurm-status-command "
                f"squeue) and slurm_account: '' in {PROFILE} (README, \"On a SLURM cluster\")"]
    try:
        query("sacct", "-X", "-n", "-j", "1", "-o", "JobID")
    except SlurmError as error:
        return [f"the status command sacct does not answer ({error}): ask for the cluster's accounting (slurmdbd), "
                "or run with --slurm-status-command squeue"]
    return []


def _account_problems(accounts: set[str], accounting: bool) -> list[str]:
    """Whether the accounts the jobs give (``slurm_account``, '' for none) can submit."""
    given = sorted(accounts - {""})
    if PLACEHOLDER_ACCOUNT in given:
        return [f"{PROFILE}: default-resources slurm_account is still the placeholder '{PLACEHOLDER_ACCOUNT}': put "
                "your SLURM account there (sbatch -A)"]
    if given and not accounting:
        return [f"slurm_account {', '.join(given)} cannot be checked on a cluster without accounting (the plugin "
                f"would refuse every job): set slurm_account: '' in {PROFILE}"]
    if not given:
        return []
    user = getpass.getuser()
    try:
        mine = _accounts()
    except SlurmError as error:
        return [f"the accounts of user {user} cannot be read: {error}"]
    unknown = [a for a in given if a.lower() not in mine]
    if unknown:
        return [f"slurm_account {', '.join(unknown)} is not an account of user {user} on this cluster (theirs: "
                f"{', '.join(sorted(mine)) or 'none'}): set slurm_account in {PROFILE}"]
    return []


def _size_problems(jobs, known: dict[str, Partition]) -> list[str]:
    """Whether each rule's partition exists and a node of it has the CPUs, memory and GPUs its jobs ask for."""
    problems, seen = [], set()
    for job in jobs:
        rule = job.rule.name
        if rule in seen:
            continue
        seen.add(rule)
        name = str(job.resources.get("slurm_partition") or "") or default_partition()
        partition = known.get(name or "")
        if partition is None:
            problems.append(f"rule {rule}: partition {name!r} does not exist on this cluster (partitions: "
                            f"{', '.join(sorted(known))}): set slurm_partition in {PROFILE}")
            continue
        gpus = job.resources.get("gpu") or 0
        needs = {"CPUs": (_cpus(job, gpus), partition.cpus, f"set-threads {rule}"),
                 "MB of memory": (job.resources.get("mem_mb") or 0, partition.memory_mb, f"mem_mb of {rule}"),
                 "GPUs": (gpus, partition.gpus, f"gpu of {rule}")}
        for what, (asked, offered, key) in needs.items():
            if isinstance(asked, int) and asked > offered:
                problems.append(f"rule {rule} asks {asked} {what} and a node of partition {name} has {offered}: "
                                f"lower {key} ({PROFILE}) or choose another partition")
    return problems


# ---------------------------------------------------------------------------------------------------------------
# While the run waits


def read_cancelled_jobs(workflow) -> bool:
    """Let the plugin see a cancelled job fail. sacct writes the state of a job that ``scancel`` ended as ``CANCELLED
    by <uid>``, which snakemake-executor-plugin-slurm (2.x) does not count among failed states, so it keeps waiting
    on the job forever. This wraps the plugin's status query (its module's ``query_job_status``, of the executor
    ``workflow`` submits with) so that every state it reads is the state's first word. Returns whether there was a
    query to wrap (another version of the plugin: nothing changed)."""
    plugin = sys.modules.get(getattr(getattr(workflow.executor_plugin, "executor", None), "__module__", ""))
    original = getattr(plugin, "query_job_status", None)
    if original is None or getattr(original, "first_words", False):
        return original is not None

    async def first_words(command, logger):
        states, duration = await original(command, logger)
        if states:
            states = {job: (state.split() or [state])[0] for job, state in states.items()}
        return states, duration

    first_words.first_words = True
    plugin.query_job_status = first_words
    return True



def usable(state: str) -> bool:
    """Whether a node in state ``state`` (sinfo ``%T``: ``idle``, ``mixed~``, ``drained``, ``down*``) takes new
    jobs: not drained or down, and answering (``*`` marks a node that does not)."""
    if "*" in state:
        return False
    return re.sub(r"[~#!%$@^\-+]+$", "", state.strip().lower()) in USABLE_STATES


def partition_usable(partition: str) -> bool:
    """Whether some node of ``partition`` takes new jobs."""
    return any(usable(line) for line in query("sinfo", "-h", "-p", partition, "-o", "%T").split())


def stuck_reason(state: str, partition: str, reason: str) -> str | None:
    """Why a job in ``state`` on ``partition``, pending for ``reason`` (squeue ``%r``), cannot start, or None."""
    if state != "PENDING":
        return None
    if any(code in reason for code in HOPELESS_REASONS):
        return f"squeue says {reason}, which does not clear on its own"
    if not partition_usable(partition):
        return (f"no node of partition {partition} takes jobs (drained, down or not responding; squeue says "
                f"{reason})")
    return None


class PendingWatch(threading.Thread):
    """Every ``interval`` seconds, the run's jobs (``squeue``: this user's jobs submitted from ``workdir`` by the
    plugin); one that cannot start (``stuck_reason``) at ``strikes`` looks in a row is cancelled, with one line on
    ``stream``. A daemon thread: it ends with Snakemake."""

    def __init__(self, workdir: str, interval: float = WATCH_INTERVAL, strikes: int = WATCH_STRIKES,
                 stream=None):
        super().__init__(name="slurm-pending-watch", daemon=True)
        self.workdir = os.path.realpath(workdir)
        self.interval = interval
        self.strikes = strikes
        self.stream = stream or sys.stderr
        self.counts: dict[str, int] = {}
        self.cancelled: list[str] = []
        self.stopped = threading.Event()

    def look(self) -> None:
        out = query("squeue", "--me", "-h", "-o", "%i|%T|%P|%Z|%k|%r")
        counts = {}
        for line in out.splitlines():
            job, state, partition, workdir, comment, reason = (line.split("|", 5) + [""] * 6)[:6]
            if os.path.realpath(workdir) != self.workdir or not comment.startswith("rule_"):
                continue
            why = stuck_reason(state, partition, reason)
            if why is None:
                continue
            counts[job] = self.counts.get(job, 0) + 1
            if counts[job] >= self.strikes and job not in self.cancelled:
                query("scancel", job)
                self.cancelled.append(job)
                print(f"SLURM job {job} ({comment.removeprefix('rule_')}) cannot start: {why}; cancelled so "
                      "that the run ends instead of waiting (run the same command again once the cluster can "
                      "take it)", file=self.stream, flush=True)
        self.counts = counts

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.look()
            except SlurmError as error:  # a busy controller: look again next time
                print(f"pending-job watch: {error}", file=self.stream, flush=True)


# ---------------------------------------------------------------------------------------------------------------
# After a failed run

_EXCEPTION = re.compile(r'^(\w+) in file ".*", line \d+:$')  # how a job's Snakemake prints the error that ended it
_CANCELLED = re.compile(r"\*\*\* (JOB \d+ ON \S+ CANCELLED AT \S+.*?) \*\*\*")  # slurmstepd's line in the job's log


def log_dir(workflow) -> Path:
    """The folder of the plugin's job logs (``--slurm-logdir``, else ``.snakemake/slurm_logs``)."""
    logdir = getattr(workflow.executor_settings, "logdir", None)
    if logdir is None:
        return Path(".snakemake/slurm_logs").resolve()
    return Path(logdir) if Path(logdir).is_absolute() else Path(workflow.workdir_init) / logdir


def job_causes(logdir: str | os.PathLike, since: float) -> list[str]:
    """One line per SLURM job log in ``logdir`` (the plugin's, which keeps only the logs of failed jobs) written
    since ``since`` (a time stamp): the error that ended the job, as the job's Snakemake printed it (``notebook
    train failed: FloatingPointError: ...``) or SLURM's cancellation, and the log's path. The main console otherwise
    only says that the job FAILED."""
    lines = []
    for log in sorted(Path(logdir).rglob("*.log")):
        try:
            if log.stat().st_mtime < since:
                continue
            text = log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        cause = None
        for i, line in enumerate(text):
            match = _EXCEPTION.match(line.strip())
            if match and match.group(1) != "WorkflowError" and i + 1 < len(text) and text[i + 1].strip():
                cause = text[i + 1].strip()
                break
            if cancelled := _CANCELLED.search(line):
                cause = cancelled.group(1)
        if cause:
            lines.append(f"SLURM job {log.stem} ({log.parent.relative_to(logdir)}): {cause} (log: {log})")
    return lines
