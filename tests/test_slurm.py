"""The workflow on a real one-node SLURM cluster (tests/slurm.py) through the project's own profile, filled in as a
user fills it in (the account and the partitions, nothing else): the micro configuration's smallest tables (a
teacher trained in two data-parallel processes, a KD and a DSKD student) end with the same scores, tables and
checkpoints as the same targets run locally; a partition without GPUs is never asked for GPUs and one with (fake)
GPUs is; and every fault (the account placeholder, a cluster without accounting, a failed job, a cancelled job, a
drained node) ends the run within a bounded time, saying why and where the job's log is.

The run goes from a copy of the checkout (a clone elsewhere, with the project's environment): its jobs must import
that copy's code. Every Snakemake call has a timeout that fails the test instead of hanging it (SIGKILL: Snakemake
ignores SIGTERM while it waits on cluster jobs)."""
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import pytest
import snakemake_executor_plugin_slurm
import torch
import yaml
from slurm import ACCOUNT, PARTITIONS, slurm_cluster  # noqa: F401  (slurm_cluster: the session's cluster)

from conftest import REPO
from repro import slurm

CPU, GPU = PARTITIONS  # the cluster's partition names, which the tests fill into the profile
TABLE = "results/tables/table1.md"
RUNS = ("teacher", "kd-kl", "dskd-kl")


def checkout_copy(folder: Path) -> Path:
    """The repository's working tree (tracked and untracked files, not the ignored ones) copied into ``folder`` (a
    clone elsewhere, the project's environment still the one beside REPO), whose repro.training leaves
    ``repro/training.imported`` when a process imports it: only the notebook kernels of training jobs do (the
    workflow's own processes never import torch), so the file says whose code the jobs ran."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        if (REPO / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, folder / name)
    with open(folder / "repro" / "training.py", "a", encoding="utf-8") as f:
        f.write('\n__import__("pathlib").Path(__file__).with_name("training.imported").touch()\n')
    return folder


def filled_profile(folder: Path, account: str | None = ACCOUNT, **settings) -> Path:
    """profiles/slurm/config.yaml with this cluster's account (None: the placeholder left) and partitions filled
    in, as a user fills it in; ``settings``: further keys of the profile (a user without accounting)."""
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    if account is not None:
        profile["default-resources"]["slurm_account"] = account
    profile["default-resources"]["slurm_partition"] = CPU
    for resources in profile["set-resources"].values():
        if "slurm_partition" in resources:
            resources["slurm_partition"] = GPU
    profile.update(settings)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return folder


def small_config(path: Path, **student_training) -> Path:
    """config/micro.yaml cut to the tables of one pair: its teacher (in two data-parallel processes), a KD and a DSKD
    student, one training seed, no pretraining; ``student_training``: changes to the students' settings."""
    config = yaml.safe_load((REPO / "config" / "micro.yaml").read_text())
    config["pretraining"]["enabled"] = False
    for key, name in (("pairs", "qwen_gpt2"), ("models", "qwen_teacher"), ("tokenizers", "qwen")):
        del config[key][name]
    config.update(methods=["kd", "dskd"], ablation=[])
    config["training"]["seeds"] = [10]
    config["pairs"]["gpt2"]["teacher_training"]["processes"] = 2
    config["pairs"]["gpt2"]["student_training"].update(student_training)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def snakemake(checkout: Path, workdir: Path, profile: Path | None, configfile: Path, targets: list[str], env: dict,
              timeout: float, extra: tuple = (), wait: bool = True):
    """Snakemake on ``checkout``'s Snakefile in ``workdir`` (its current folder too, as a user's), submitting through
    the workflow profile ``profile`` (None: locally, with the default profile); returns the finished process, or
    the running one when not ``wait``."""
    command = [sys.executable, "-m", "snakemake", "-s", str(checkout / "Snakefile"), "--configfile", str(configfile),
               "--directory", str(workdir), *(["--workflow-profile", str(profile)] if profile else []), *extra, "--",
               *targets]
    workdir.mkdir(parents=True, exist_ok=True)
    if not wait:
        return subprocess.Popen(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env)
    return subprocess.run(command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=env, timeout=timeout)


def finish(process: subprocess.Popen, timeout: float) -> tuple[int, str]:
    """Wait for a Snakemake started with ``wait=False``; killed (and the test failed) past ``timeout`` seconds."""
    try:
        out, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, _ = process.communicate()
        pytest.fail(f"Snakemake did not end within {timeout:g} s:\n{out[-3000:]}")
    return process.returncode, out


def run_id(console: str) -> str:
    return re.search(r"SLURM run ID: (\S+)", console).group(1)


def accounting(cluster, name: str) -> list[dict]:
    """The jobs of run ``name`` (the plugin's job name) as sacct records them."""
    fields = ("JobID", "Comment", "State", "AllocCPUS", "ReqTRES", "AllocTRES", "Partition")
    out = cluster.run("sacct", "-X", "-n", "-P", "--name", name, "-o", ",".join(fields)).stdout
    return [dict(zip(fields, line.split("|"))) for line in out.splitlines() if line]


def copy_results(source: Path, workdir: Path) -> Path:
    """A new working folder holding ``source``'s results (modification times kept, so nothing looks out of date)."""
    shutil.copytree(source / "results", workdir / "results", symlinks=True)
    return workdir


@pytest.fixture(scope="module")
def micro_runs(slurm_cluster, tmp_path_factory):  # noqa: F811
    """The tables of the small configuration through the SLURM profile (from a copy of the checkout) and, at the
    same time, locally with the same threads per job: the two working folders, the consoles and exit codes."""
    root = tmp_path_factory.mktemp("micro")
    checkout = checkout_copy(root / "clone")
    config = small_config(root / "small.yaml")
    profile = filled_profile(root / "profile")
    threads = yaml.safe_load((profile / "config.yaml").read_text())["set-threads"]
    local = snakemake(REPO, root / "local", None, config, [TABLE], dict(os.environ), 0,
                      extra=("--cores", "2", "--set-threads", *(f"{k}={v}" for k, v in threads.items())), wait=False)
    start = time.monotonic()
    cluster = snakemake(checkout, root / "slurm", profile, config, [TABLE], slurm_cluster.env, 0, wait=False)
    cluster_code, cluster_out = finish(cluster, 900)
    seconds = time.monotonic() - start
    local_code, local_out = finish(local, 900)
    return {"root": root, "checkout": checkout, "config": config, "profile": profile, "slurm": root / "slurm",
            "local": root / "local", "slurm_code": cluster_code, "slurm_out": cluster_out, "local_code": local_code,
            "local_out": local_out, "seconds": seconds}


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_the_micro_tables_through_the_profile_equal_a_local_run(micro_runs, slurm_cluster):  # noqa: F811
    assert micro_runs["local_code"] == 0, micro_runs["local_out"][-3000:]
    assert micro_runs["slurm_code"] == 0, micro_runs["slurm_out"][-3000:]
    slurm, local = micro_runs["slurm"] / "results", micro_runs["local"] / "results"
    for ext in ("md", "csv", "tex"):
        assert (slurm / "tables" / f"table1.{ext}").read_text() == (local / "tables" / f"table1.{ext}").read_text()
    for cell in RUNS:
        a, b = slurm / "runs" / "gpt2" / cell / "seed10", local / "runs" / "gpt2" / cell / "seed10"
        scores = [{k: v for k, v in json.loads((r / "scores.json").read_text()).items() if k != "memory"}
                  for r in (a, b)]  # the memory each process measured of itself differs
        assert scores[0] == scores[1], cell
        assert (a / "model" / "model.safetensors").read_bytes() == (b / "model" / "model.safetensors").read_bytes()
        for generations in sorted((b / "generations").iterdir()):
            assert (a / "generations" / generations.name).read_text() == generations.read_text()
    jobs = accounting(slurm_cluster, run_id(micro_runs["slurm_out"]))
    rules = sorted(re.sub(r"_wildcards_.*", "", j["Comment"]) for j in jobs)
    assert rules == ["rule_cache_teacher", "rule_make_tables", "rule_prepare_data"] + ["rule_run_cell"] * 3, jobs
    assert all(j["State"] == "COMPLETED" for j in jobs), jobs
    # a cluster without GPUs: no job asked for one (the plugin adds --gpus=N for a job whose gpu resource is N)
    assert not any("gpu" in j["ReqTRES"] for j in jobs), jobs
    assert {j["Partition"] for j in jobs if "run_cell" in j["Comment"] or "cache" in j["Comment"]} == {GPU}
    # the jobs ran the copy's code: their kernels imported the copy's repro.training (see checkout_copy)
    assert (micro_runs["checkout"] / "repro" / "training.imported").exists()
    print(f"SLURM run of the micro tables: {micro_runs['seconds']:.0f} s ({len(jobs)} cluster jobs)")


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_data_parallel_cell_runs_its_two_processes_in_one_allocation(micro_runs, slurm_cluster):  # noqa: F811
    """training.processes: 2 (the teacher of the small configuration): one cluster job, with a CPU per process,
    whose two processes (torchrun inside the allocation) end with the local run's weights (above)."""
    assert micro_runs["slurm_code"] == 0, micro_runs["slurm_out"][-3000:]
    jobs = accounting(slurm_cluster, run_id(micro_runs["slurm_out"]))
    for cell, cpus in (("teacher", "2"), ("kd-kl", "1"), ("dskd-kl", "1")):
        job = [j for j in jobs if j["Comment"].endswith(f"gpt2_{cell}_10")]
        assert len(job) == 1 and job[0]["AllocCPUS"] == cpus, jobs
        summary = json.loads((micro_runs["slurm"] / "results" / "runs" / "gpt2" / cell / "seed10" /
                              "train_summary.json").read_text())
        assert summary["batching"]["processes"] == int(cpus)
        assert summary["batching"]["gradient_accumulation"] == 2 // int(cpus)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_account_placeholder_stops_before_any_submission(micro_runs, slurm_cluster, tmp_path):  # noqa: F811
    profile = filled_profile(tmp_path / "profile", account=None)
    before = len(slurm_cluster.run("sacct", "-X", "-n", "-a", "-o", "JobID").stdout.split())
    workdir = copy_results(micro_runs["slurm"], tmp_path / "run")
    shutil.rmtree(workdir / "results" / "tables")
    result = snakemake(micro_runs["checkout"], workdir, profile, micro_runs["config"], [TABLE], slurm_cluster.env,
                       240)
    assert result.returncode != 0
    assert ("Nothing was run:\n  profiles/slurm/config.yaml: default-resources slurm_account is still the "
            "placeholder 'CHANGE-ME'") in result.stdout, result.stdout[-3000:]
    assert len(slurm_cluster.run("sacct", "-X", "-n", "-a", "-o", "JobID").stdout.split()) == before


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_failing_job_ends_the_run_with_its_error_and_log(micro_runs, slurm_cluster, tmp_path):  # noqa: F811
    """A KD student whose learning rate makes its loss non-finite: the run ends, and the console names the job's
    own error (not only FAILED) and the job's log."""
    config = small_config(tmp_path / "failing.yaml", lr=1.0e30)
    workdir = copy_results(micro_runs["slurm"], tmp_path / "run")
    shutil.rmtree(workdir / "results" / "runs" / "gpt2" / "kd-kl")
    start = time.monotonic()
    result = snakemake(micro_runs["checkout"], workdir, micro_runs["profile"], config,
                       ["results/runs/gpt2/kd-kl/seed10/scores.json"], slurm_cluster.env, 360)
    assert result.returncode != 0
    console = result.stdout
    line = next((x for x in console.splitlines() if "notebook train failed: FloatingPointError" in x), None)
    assert line is not None and line.startswith("SLURM job "), console[-3000:]
    log = Path(re.search(r"\(log: (\S+\.log)\)$", line).group(1))
    assert log.is_file() and log.is_relative_to(workdir / ".snakemake" / "slurm_logs" / "rule_run_cell")
    assert "SLURM status is: 'FAILED'" in console
    print(f"failed job: the run ended after {time.monotonic() - start:.0f} s")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_cancelled_job_ends_the_run(micro_runs, slurm_cluster, tmp_path):  # noqa: F811
    workdir = copy_results(micro_runs["slurm"], tmp_path / "run")
    shutil.rmtree(workdir / "results" / "tables")
    start = time.monotonic()
    process = snakemake(micro_runs["checkout"], workdir, micro_runs["profile"], micro_runs["config"], [TABLE],
                        slurm_cluster.env, 0, wait=False)
    try:
        job = slurm_cluster.wait_for(lambda: next((j["id"] for j in slurm_cluster.jobs() if j["state"] == "RUNNING"),
                                                  None), 180, "the tables' job to run", poll=0.2)
    except TimeoutError:
        process.kill()
        raise
    slurm_cluster.run("scancel", job)
    code, console = finish(process, 300)
    assert code != 0
    assert f"SLURM-job '{job}' failed, SLURM status is: 'CANCELLED'" in console, console[-3000:]
    line = next(x for x in console.splitlines() if x.startswith(f"SLURM job {job} "))
    assert f"JOB {job} ON {slurm_cluster.node} CANCELLED AT" in line
    assert (workdir / ".snakemake" / "slurm_logs" / "rule_make_tables" / f"{job}.log").is_file()
    print(f"cancelled job: the run ended {time.monotonic() - start:.0f} s after it began")


@pytest.mark.slow
@pytest.mark.timeout(400)
def test_a_drained_node_ends_the_run(micro_runs, slurm_cluster, tmp_path):  # noqa: F811
    """Every node of the partition drained: the job would pend forever; the run cancels it, says why, and ends."""
    workdir = copy_results(micro_runs["slurm"], tmp_path / "run")
    shutil.rmtree(workdir / "results" / "tables")
    slurm_cluster.run("scontrol", "update", f"nodename={slurm_cluster.node}", "state=drain", "reason=test")
    try:
        start = time.monotonic()
        result = snakemake(micro_runs["checkout"], workdir, micro_runs["profile"], micro_runs["config"], [TABLE],
                           slurm_cluster.env, 300)
        seconds = time.monotonic() - start
    finally:
        slurm_cluster.run("scontrol", "update", f"nodename={slurm_cluster.node}", "state=resume")
    assert result.returncode != 0
    console = result.stdout
    line = next((x for x in console.splitlines() if "cannot start: no node of partition" in x), None)
    assert line is not None and f"partition {CPU} takes jobs" in line, console[-3000:]
    job = re.match(r"SLURM job (\d+) \(make_tables\)", line).group(1)
    assert f"SLURM-job '{job}' failed, SLURM status is: 'CANCELLED'" in console
    assert f".snakemake/slurm_logs/rule_make_tables/{job}.log" in console
    slurm_cluster.wait_idle(60)
    print(f"drained node: the run ended after {seconds:.0f} s")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_cluster_without_accounting(micro_runs, slurm_cluster, tmp_path):  # noqa: F811
    """Without accounting, sacct cannot see the jobs: the profile's run stops before any submission and says what
    to set; with that set (squeue, no account) the same targets run."""
    workdir = copy_results(micro_runs["slurm"], tmp_path / "run")
    shutil.rmtree(workdir / "results" / "tables")
    slurm_cluster.restart_slurm(accounting=False)
    try:
        refused = snakemake(micro_runs["checkout"], workdir, micro_runs["profile"], micro_runs["config"], [TABLE],
                            slurm_cluster.env, 240)
        assert refused.returncode != 0
        assert "Nothing was run:\n  this cluster keeps no job accounting" in refused.stdout, refused.stdout[-3000:]
        assert "--slurm-status-command squeue" in refused.stdout and not slurm_cluster.live_jobs()
        profile = filled_profile(tmp_path / "profile", account="", **{"slurm-status-command": "squeue"})
        result = snakemake(micro_runs["checkout"], workdir, profile, micro_runs["config"], [TABLE], slurm_cluster.env,
                           400)
        assert result.returncode == 0, result.stdout[-3000:]
        assert (workdir / TABLE).read_text() == (micro_runs["slurm"] / TABLE).read_text()
    finally:
        slurm_cluster.restart_slurm(accounting=True)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_gpu_partition_is_asked_for_gpus(micro_runs, slurm_cluster, tmp_path):  # noqa: F811
    """The same profile on a cluster whose node has two (fake) GPUs: the teacher-state cache (a GPU rule) asks for
    one, holds SLURM's device through repro.gpus, and computes what the CPU run did."""
    workdir = copy_results(micro_runs["slurm"], tmp_path / "run")
    shutil.rmtree(workdir / "results" / "teacher_states")
    slurm_cluster.restart_slurm(gpus=2)
    try:
        result = snakemake(micro_runs["checkout"], workdir, micro_runs["profile"], micro_runs["config"],
                           ["results/teacher_states/gpt2/states.pt"], slurm_cluster.env, 400)
        assert result.returncode == 0, result.stdout[-3000:]
        jobs = accounting(slurm_cluster, run_id(result.stdout))
        assert len(jobs) == 1 and "gres/gpu=1" in jobs[0]["AllocTRES"] and jobs[0]["Partition"] == GPU, jobs
        claims = workdir / "results" / ".gpus" / f"{slurm_cluster.node}-slurm{jobs[0]['JobID']}"
        assert [p.name for p in claims.iterdir()] == ["0.lock"]  # CUDA_VISIBLE_DEVICES=0, set by SLURM
        states = [torch.load(folder / "results" / "teacher_states" / "gpt2" / "states.pt", weights_only=True)
                  for folder in (workdir, micro_runs["slurm"])]
        assert states[0].keys() == states[1].keys() and states[0]["seconds"] > 0
        for key in ("hidden", "offsets"):
            assert torch.equal(states[0][key], states[1][key]), key
        assert states[0]["fingerprint"] == states[1]["fingerprint"] and states[0]["cma_sums"] == states[1]["cma_sums"]
    finally:
        slurm_cluster.restart_slurm(gpus=0)


# ---------------------------------------------------------------------------------------------------------------
# What repro.slurm reads from SLURM's answers (no cluster needed)


def test_partitions_and_their_largest_node_from_sinfo():
    text = "batch*|2|24105|(null)\naccel|64|512000|gpu:a100:4(S:0-1),shard:8\naccel|32|256000|gpu:2\nbig|128+|1000|\n"
    parts = slurm.parse_partitions(text)
    assert parts["batch"] == slurm.Partition("batch", 2, 24105, 0, default=True)
    assert parts["accel"] == slurm.Partition("accel", 64, 512000, 4)
    assert parts["big"].cpus == 128 and parts["big"].gpus == 0
    assert [slurm.gres_gpus(g) for g in ("(null)", "gpu:2", "gpu:a100:4(S:0-1)", "gpu:1,gpu:v100:2", "mps:100")] == [
        0, 2, 4, 3, 0]


def test_which_node_states_take_jobs():
    assert [slurm.usable(s) for s in ("idle", "mixed", "allocated", "completing", "idle~", "planned")] == [True] * 6
    assert not any(slurm.usable(s) for s in ("drained", "draining", "down", "down*", "idle*", "fail", "maint",
                                             "inval", "unknown"))


def test_status_command_follows_the_plugins_own_switch():
    class Settings:
        status_command, init_seconds_before_status_checks = "squeue", 5

    assert slurm.status_command(Settings, {"MinJobAge": "300 sec"}, sacct_installed=True) == "squeue"
    assert slurm.status_command(Settings, {"MinJobAge": "10 sec"}, sacct_installed=True) == "sacct"
    assert slurm.status_command(Settings, {"MinJobAge": "10 sec"}, sacct_installed=False) == "squeue"
    Settings.status_command = "sacct"
    assert slurm.status_command(Settings, {}, sacct_installed=False) == "squeue"
    assert [slurm.seconds(v) for v in ("300 sec", "1h", "", None, "n/a")] == [300, 3600, None, None, None]


def test_gpus_only_where_the_job_gets_them(monkeypatch):
    """A local run keeps a job's GPUs; a submission keeps them only for a partition with GPUs; inside a SLURM job
    the allocation decides."""

    class Plugin:
        name = "slurm"

    class Settings:
        overwrite_resources = {"run_cell": {"slurm_partition": "accel"}}
        default_resources = {"slurm_partition": "batch"}

    class Workflow:
        executor_plugin, resource_settings = None, Settings

    monkeypatch.setattr(slurm, "partitions", lambda: slurm.parse_partitions("batch*|2|1000|(null)\naccel|2|1000|gpu:2"))
    for name in ("SLURM_JOB_ID", "SLURM_GPUS_ON_NODE", "SLURM_STEP_GPUS", "SLURM_JOB_GPUS"):
        monkeypatch.delenv(name, raising=False)
    assert slurm.job_gpus(Workflow, "run_cell", 2) == 2 and slurm.job_gpus(Workflow, "run_cell", 0) == 0
    Workflow.executor_plugin = Plugin
    assert slurm.configured_partition(Workflow, "run_cell") == "accel"
    assert slurm.job_gpus(Workflow, "run_cell", 2) == 2 and slurm.job_gpus(Workflow, "cache_teacher", 1) == 0
    Settings.default_resources = {}
    assert slurm.configured_partition(Workflow, "cache_teacher") == "batch"  # the cluster's default
    Workflow.executor_plugin = type("Plugin", (), {"name": "slurm-jobstep"})
    monkeypatch.setenv("SLURM_JOB_ID", "7")
    assert slurm.job_gpus(Workflow, "run_cell", 2) == 0
    monkeypatch.setenv("SLURM_JOB_GPUS", "0,1")
    assert slurm.allocated_gpus() == 2 and slurm.job_gpus(Workflow, "run_cell", 2) == 2


def test_the_cause_of_a_failed_job_from_its_log(tmp_path):
    logs = tmp_path / "slurm_logs"
    failed = logs / "rule_run_cell" / "gpt2_teacher_10" / "12.log"
    cancelled = logs / "rule_make_tables" / "13.log"
    old = logs / "rule_make_tables" / "3.log"
    for path, text in ((failed, 'Building DAG\nNotebookFailed in file "/x/rules/render.smk", line 40:\nnotebook train '
                                'failed: FloatingPointError: non-finite loss\nWorkflowError in file "a", line 1:\nx\n'),
                       (cancelled, "slurmstepd: error: *** JOB 13 ON vm CANCELLED AT 2026-01-01T00:00:00 ***\n"),
                       (old, 'KeyError in file "a", line 1:\nold\n')):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    os.utime(old, (0, 0))
    assert slurm.job_causes(logs, since=1000) == [
        f"SLURM job 13 (rule_make_tables): JOB 13 ON vm CANCELLED AT 2026-01-01T00:00:00 (log: {cancelled})",
        f"SLURM job 12 (rule_run_cell/gpt2_teacher_10): notebook train failed: FloatingPointError: non-finite loss "
        f"(log: {failed})"]


def test_the_checkout_goes_first_on_the_import_path():
    environ = {"PYTHONPATH": "/a:/repo:/b"}
    slurm.import_path_first("/repo", environ)
    assert environ["PYTHONPATH"] == os.pathsep.join(["/repo", "/a", "/b"])
    environ = {}
    slurm.import_path_first("/repo", environ)
    assert environ == {"PYTHONPATH": "/repo"}


def test_a_cancelled_job_is_seen_failed_by_the_plugin(monkeypatch):
    """sacct says ``CANCELLED by 0``; the wrapped status query of the plugin's module says ``CANCELLED``, one of
    the states the plugin counts as failed. The installed plugin has the query that is wrapped."""
    assert callable(snakemake_executor_plugin_slurm.query_job_status)

    async def query(command, logger):
        return {"8": "CANCELLED by 0", "9": "RUNNING", "10": "COMPLETED"}, 0.1

    plugin = types.ModuleType("fake_slurm_plugin")
    plugin.query_job_status = query
    plugin.Executor = type("Executor", (), {"__module__": "fake_slurm_plugin"})
    monkeypatch.setitem(sys.modules, "fake_slurm_plugin", plugin)
    workflow = types.SimpleNamespace(executor_plugin=types.SimpleNamespace(executor=plugin.Executor))
    assert slurm.read_cancelled_jobs(workflow) and slurm.read_cancelled_jobs(workflow)  # wrapped once
    states, _ = asyncio.run(plugin.query_job_status("sacct ...", None))
    assert states == {"8": "CANCELLED", "9": "RUNNING", "10": "COMPLETED"}
    assert not slurm.read_cancelled_jobs(types.SimpleNamespace(executor_plugin=None))


def test_a_job_larger_than_its_partitions_nodes_is_named_before_submission(monkeypatch):
    known = slurm.parse_partitions("batch*|2|24000|(null)\naccel|8|64000|gpu:1")
    monkeypatch.setattr(slurm, "partitions", lambda: known)

    def job(rule, threads=1, **resources):
        return types.SimpleNamespace(rule=types.SimpleNamespace(name=rule), threads=threads, resources=resources)

    jobs = [job("prepare_data", threads=4, mem_mb=8000), job("prepare_data", threads=4),
            job("run_cell", slurm_partition="accel", cpus_per_task=2, gpu=2, mem_mb=120000),
            job("make_tables", slurm_partition="gpu"), job("cache_teacher", slurm_partition="accel", gpu=1)]
    assert slurm._size_problems(jobs, known) == [
        "rule prepare_data asks 4 CPUs and a node of partition batch has 2: lower set-threads prepare_data "
        "(profiles/slurm/config.yaml) or choose another partition",
        "rule run_cell asks 120000 MB of memory and a node of partition accel has 64000: lower mem_mb of run_cell "
        "(profiles/slurm/config.yaml) or choose another partition",
        "rule run_cell asks 2 GPUs and a node of partition accel has 1: lower gpu of run_cell "
        "(profiles/slurm/config.yaml) or choose another partition",
        "rule make_tables: partition 'gpu' does not exist on this cluster (partitions: accel, batch): set "
        "slurm_partition in profiles/slurm/config.yaml"]
    assert slurm._account_problems({"CHANGE-ME"}, accounting=True)[0].startswith(
        "profiles/slurm/config.yaml: default-resources slurm_account is still the placeholder 'CHANGE-ME'")
    assert "cluster without accounting" in slurm._account_problems({"abc"}, accounting=False)[0]
    assert slurm._account_problems({""}, accounting=False) == []
    monkeypatch.setattr(slurm, "_accounts", lambda: {"dskd", "root"})
    assert slurm._account_problems({"dskd", ""}, accounting=True) == []
    assert slurm._account_problems({"other"}, accounting=True) == [
        f"slurm_account other is not an account of user {slurm.getpass.getuser()} on this cluster (theirs: dskd, "
        "root): set slurm_account in profiles/slurm/config.yaml"]
