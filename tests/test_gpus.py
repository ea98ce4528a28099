"""repro.gpus with fake device ids: concurrent claims (threads, processes) never share a device, a job that fails or
is killed with SIGKILL gives its devices back, a claim that finds too few free ones waits and then fails with a
message that names the cure, a machine without GPUs leaves every environment untouched, and the environment a job
hands its subprocess (a notebook's kernel and what the kernel starts) names exactly the job's devices."""
import os
import re
import signal
import subprocess
import sys
import threading
import time

import nbformat
import pytest

from conftest import REPO
from repro import gpus, render

NVIDIA_SMI_L = """GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-0aa1c9e2-8a5e-4b6e-9f3e-1c2d3e4f5a6b)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-1bb2d0f3-9b6f-5c7f-0a4f-2d3e4f5a6b7c)
  MIG 3g.20gb     Device  0: (UUID: MIG-5c1e2f3a-1111-2222-3333-444455556666)
  MIG 3g.20gb     Device  1: (UUID: MIG-GPU-1bb2d0f3-9b6f-5c7f-0a4f-2d3e4f5a6b7c/2/0)
GPU 2: NVIDIA H100 80GB HBM3 (UUID: GPU-2cc3e1a4-0c7a-6d8a-1b5a-3e4f5a6b7c8d)
"""

# One process that claims devices of a pool, prints them, and holds them until its stdin closes.
CLAIMER = """
import sys
from repro.gpus import DevicePool
with DevicePool(sys.argv[1], sys.argv[2].split(",")).claim(int(sys.argv[3]), timeout=60, job="child") as ids:
    print(",".join(ids), flush=True)
    sys.stdin.read()
"""


def _claimer(folder, ids, count):
    return subprocess.Popen([sys.executable, "-c", CLAIMER, str(folder), ",".join(ids), str(count)], cwd=REPO,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


@pytest.mark.parametrize("value, ids", [("0,1,2", ["0", "1", "2"]), (" 3, 1 ", ["3", "1"]), ("", []), ("-1", []),
                                        ("0,-1,2", ["0"]), ("NoDevFiles", []), ("1,1,2", ["1", "2"]),
                                        ("GPU-abc,MIG-def", ["GPU-abc", "MIG-def"])])
def test_visible_ids_read_cuda_visible_devices_as_cuda_does(value, ids):
    assert gpus.visible_ids(value) == ids


def test_nvidia_smi_listing_gives_indices_and_the_mig_instances_of_a_split_gpu():
    assert gpus.listed_ids(NVIDIA_SMI_L) == ["0", "MIG-5c1e2f3a-1111-2222-3333-444455556666",
                                             "MIG-GPU-1bb2d0f3-9b6f-5c7f-0a4f-2d3e4f5a6b7c/2/0", "2"]
    assert gpus.listed_ids("") == []


def test_machine_gpus_from_the_environment_else_nvidia_smi_else_none(tmp_path):
    listing = tmp_path / "listing.txt"
    listing.write_text(NVIDIA_SMI_L, encoding="utf-8")
    smi = (sys.executable, "-c", f"print(open({str(listing)!r}).read(), end='')")
    assert gpus.machine_gpus({"CUDA_VISIBLE_DEVICES": "4,5"}, command=smi) == ["4", "5"]  # as SLURM sets it
    assert gpus.machine_gpus({"CUDA_VISIBLE_DEVICES": ""}, command=smi) == []
    assert gpus.machine_gpus({}, command=smi) == gpus.listed_ids(NVIDIA_SMI_L)
    assert gpus.machine_gpus({}, command=(str(tmp_path / "no-such-nvidia-smi"), "-L")) == []
    assert gpus.machine_gpus({}, command=(sys.executable, "-c", "raise SystemExit(9)")) == []  # no driver
    started = time.monotonic()
    with pytest.raises(gpus.GPUClaimError, match=r"did not answer within 0.5 s; set CUDA_VISIBLE_DEVICES"):
        gpus.machine_gpus({}, command=(sys.executable, "-c", "import time; time.sleep(30)"), timeout=0.5)
    assert time.monotonic() - started < 10


def test_the_pool_folder_is_per_host_and_per_slurm_job(tmp_path):
    here = gpus.pool_dir(tmp_path, {})
    assert here.parent == tmp_path / gpus.POOL
    slurm = gpus.pool_dir(tmp_path, {"SLURM_JOB_ID": "123"})
    assert slurm.parent == here.parent and slurm.name == f"{here.name}-slurm123"


def test_concurrent_claims_from_threads_never_share_a_device(tmp_path):
    pool = gpus.DevicePool(tmp_path, ["0", "1", "2"], poll=0.01)
    in_use, guard, errors, claims = set(), threading.Lock(), [], []

    def job(worker):
        try:
            for i in range(15):
                with pool.claim(1 + (worker + i) % 3, timeout=60, job=f"thread {worker}") as ids:
                    with guard:
                        assert len(set(ids)) == len(ids) and not in_use & set(ids), (ids, in_use)
                        in_use.update(ids)
                        claims.append(ids)
                    time.sleep(0.002)
                    with guard:
                        in_use.difference_update(ids)
        except BaseException as error:  # noqa: BLE001 - reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=job, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(claims) == 6 * 15

    # three jobs that hold one device each at the same moment hold all three
    barrier, held = threading.Barrier(3), []

    def hold():
        with pool.claim(1, timeout=10) as ids:
            held.extend(ids)
            barrier.wait(timeout=10)

    threads = [threading.Thread(target=hold) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(held) == ["0", "1", "2"]


def test_concurrent_claims_from_processes_never_share_a_device(tmp_path):
    ids = ["0", "1", "2"]
    children = [_claimer(tmp_path, ids, 1) for _ in range(3)]
    try:
        held = [c.stdout.readline().strip() for c in children]
        assert sorted(held) == ids
        with pytest.raises(gpus.GPUClaimError), gpus.DevicePool(tmp_path, ids).claim(1, timeout=0.3):
            pass
    finally:
        for c in children:
            c.stdin.close()
            c.wait(timeout=30)
    assert [c.returncode for c in children] == [0, 0, 0]
    with gpus.DevicePool(tmp_path, ids).claim(3, timeout=5) as claimed:
        assert claimed == ids


def test_a_job_killed_with_sigkill_gives_its_devices_back(tmp_path):
    ids = ["0", "1", "2"]
    child = _claimer(tmp_path, ids, 2)
    assert child.stdout.readline().strip() == "0,1"
    pool = gpus.DevicePool(tmp_path, ids)
    with pytest.raises(gpus.GPUClaimError, match="pid"):
        with pool.claim(2, timeout=0.3):
            pass
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    with pool.claim(3, timeout=5) as claimed:
        assert claimed == ids


def test_a_failed_job_gives_its_devices_back(tmp_path):
    pool = gpus.DevicePool(tmp_path, ["0", "1"])
    with pytest.raises(ValueError, match="the job failed"), pool.claim(2, timeout=1) as claimed:
        assert claimed == ["0", "1"]
        raise ValueError("the job failed")
    with pool.claim(2, timeout=0) as claimed:
        assert claimed == ["0", "1"]


def test_more_than_the_free_devices_waits_then_fails_naming_the_cure(tmp_path):
    pool = gpus.DevicePool(tmp_path, ["0", "1", "2"], poll=0.05)
    with pool.claim(2, job="results/runs/a/train.ipynb") as first:
        assert first == ["0", "1"]
        started = time.monotonic()
        with pytest.raises(gpus.GPUClaimError) as error, pool.claim(2, timeout=0.5, job="results/runs/b/train.ipynb"):
            pass
        assert time.monotonic() - started >= 0.5
        message = str(error.value)
        assert message.startswith("results/runs/b/train.ipynb waited 0.5 s for 2 free GPUs of 3")
        assert re.search(r"0 pid \d+ results/runs/a/train\.ipynb", message) and "2 free" in message
        assert "--resources gpu=3" in message and "\n" not in message
        with pool.claim(1, timeout=0) as third:  # what is free is still given to a job that fits
            assert third == ["2"]
    with pool.claim(3, timeout=0) as claimed:  # a claim that failed holds nothing
        assert claimed == ["0", "1", "2"]


def test_more_devices_than_the_machine_has_fails_at_once(tmp_path):
    started = time.monotonic()
    with pytest.raises(gpus.GPUClaimError, match=r"^job x needs 4 GPUs and this machine has 3 \(0,1,2\)"):
        with gpus.DevicePool(tmp_path, ["0", "1", "2"]).claim(4, timeout=30, job="job x"):
            pass
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("visible", ["", None])
def test_without_gpus_a_job_gets_nothing_and_the_environment_is_untouched(tmp_path, monkeypatch, visible):
    if visible is None:  # no CUDA_VISIBLE_DEVICES and no nvidia-smi on PATH: a CPU machine
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    before = dict(os.environ)
    with gpus.job_devices(tmp_path, 2, job="cpu job") as env:
        assert env is None
        assert dict(os.environ) == before
    assert dict(os.environ) == before
    assert not (tmp_path / gpus.POOL).exists()


def test_the_environment_of_a_gpu_job_names_its_devices_and_os_environ_stays(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    monkeypatch.setenv("REPRO_TEST_MARK", "kept")
    with gpus.job_devices(tmp_path, 2) as first, gpus.job_devices(tmp_path, 1) as second:
        assert first["CUDA_VISIBLE_DEVICES"] == "0,1" and second["CUDA_VISIBLE_DEVICES"] == "2"
        assert first["REPRO_TEST_MARK"] == "kept"
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2"
        assert sorted(p.name for p in gpus.pool_dir(tmp_path).iterdir()) == ["0.lock", "1.lock", "2.lock"]
    with gpus.job_devices(tmp_path, 0) as none:  # a job that declares no GPU
        assert none is None


def test_every_gpu_rule_hands_its_gpu_resource_to_the_claim():
    """Every rule that declares a `gpu` resource passes it (resources.gpu) to render_notebook or
    build_teacher_states, which run their subprocess in job_gpus' environment."""
    gpu_rules = 0
    for path in sorted((REPO / "rules").glob("*.smk")):
        text = path.read_text(encoding="utf-8")
        for block in re.split(r"\n\s*rule (?=\w+:)", text)[1:]:
            name = block.split(":", 1)[0]
            if re.search(r"^\s+gpu=", block, re.M):
                gpu_rules += 1
                run = block.split("run:", 1)[1]
                assert "resources.gpu" in run, f"{path.name}: rule {name} declares gpu but does not pass it on"
    assert gpu_rules >= 4
    render_rules = (REPO / "rules" / "render.smk").read_text(encoding="utf-8")
    common = (REPO / "rules" / "common.smk").read_text(encoding="utf-8")
    assert "with job_gpus(gpu, " in render_rules and "env=env" in render_rules
    assert "with job_gpus(gpu, " in common and "env=env" in common


KERNEL_SOURCE = '''# ---
# jupyter:
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% tags=["parameters"]
value = 1

# %%
import os
import subprocess
import sys

print("kernel sees", os.environ.get("CUDA_VISIBLE_DEVICES"))
# what run_training's accelerate/torchrun launch would see
child = subprocess.run([sys.executable, "-c", "import os; print(os.environ.get('CUDA_VISIBLE_DEVICES'))"],
                       capture_output=True, text=True, check=True)
print("launch sees", child.stdout.strip())
'''


def test_a_rendered_notebook_and_its_subprocesses_see_the_jobs_devices(tmp_path, monkeypatch):
    """The variable, not CUDA: on a CPU machine torch finds no device behind a fake id."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    source, notebook = tmp_path / "gpu_env.py", tmp_path / "gpu_env.ipynb"
    source.write_text(KERNEL_SOURCE, encoding="utf-8")
    render.convert(source, notebook, tmp_path / "convert.log")
    out = tmp_path / "out.ipynb"
    with gpus.DevicePool(gpus.pool_dir(tmp_path), ["0", "1", "2"]).claim(1):  # another job holds device 0
        with gpus.job_devices(tmp_path, 2, job=str(out)) as env:
            render.render(notebook, {"value": 2}, out, tmp_path / "render.log", env=env)
    text = "".join(o.get("text", "") for c in nbformat.read(str(out), as_version=4).cells if c.cell_type == "code"
                   for o in c.get("outputs", []))
    assert "kernel sees 1,2" in text and "launch sees 1,2" in text
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1,2"
