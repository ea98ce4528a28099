"""Figure 2 judged for real: the workflow's Figure 2 step of the micro configuration (and the report) against
``transformers serve`` answering with the real SmolLM2-135M-Instruct (tests/real_model.py), each prompt judged in
both orders. It checks the wiring, not the verdicts' quality: requests made, verdicts recorded with prompt, model
and raw reply, free-text replies read, the position statistics in the table and report, the cache reused on a
rerun, the key written nowhere, and no server process left behind. Skips, saying why, where the model package or
the server cannot be had. (Fault cases, retries and the key's redaction: the fake server of tests/test_judge.py.)"""
import json
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from real_model import Unavailable, group_processes, judge_server
from repro.judge import parse_verdict, summarize
from test_workflow import _job_counts, _run

SECRET = "sk-real-judge-0123456789-do-not-leak"
FIGURE2 = "results/analysis/figure2_judge.json"
# the two students Figure 2 compares, each from its first training run, with their generations
STUDENTS = ["results/runs/gpt2/kd-kl/seed10/scores.json", "results/runs/gpt2/dskd-kl/seed10/scores.json"]


@pytest.mark.slow
def test_figure2_through_a_real_server(tmp_path, smollm2):
    config = yaml.safe_load((REPO / "config" / "micro.yaml").read_text())
    path = tmp_path / "judged.yaml"
    micro = ["--cores", "2", "--configfile", str(path), "--directory", str(tmp_path)]
    env = {"OPENAI_API_KEY": SECRET}
    # The judge's whole reply is kept, but the verdict is its opening: a few tokens bound each request's time.
    judge = dict(n_prompts=4, both_orders=True, prompt="verdict", max_tokens=12, max_retries=1, concurrency=2,
                 timeout_s=300)
    try:
        with judge_server(smollm2, tmp_path / "serve.log", threads=2, wait=False) as server:
            config["figures"]["judge"].update(judge, base_url=server.base_url, model=server.model)
            path.write_text(yaml.safe_dump(config))
            # the students train while the server loads its model
            students = _run(micro + STUDENTS, REPO, env={"OPENAI_API_KEY": None})
            assert students.returncode == 0, students.stdout[-3000:] + students.stderr[-3000:]
            server.wait_healthy()
            plan = _run(micro + ["-n", FIGURE2], REPO, env=env)
            assert _job_counts(plan.stdout + plan.stderr) == {"convert_notebook": 1, "make_figure2": 1, "total": 2}
            judged = _run(micro + [FIGURE2], REPO, env=env)
            assert judged.returncode == 0, judged.stdout[-3000:] + judged.stderr[-3000:]
            sent = server.chat_requests()
            # the step again (forced): every verdict comes from the cache, no request is made
            again = _run(micro + ["--forcerun", "make_figure2", "--", FIGURE2], REPO, env=env)
            assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
            assert server.chat_requests() == sent
            pgid = server.process.pid
    except Unavailable as e:
        pytest.skip(str(e))
    assert group_processes(pgid) == [], "transformers serve left processes behind"

    results = tmp_path / "results"
    analysis = json.loads((results / "analysis" / "figure2_judge.json").read_text())
    assert analysis["status"]["configured"] and analysis["settings"]["both_orders"] is True
    records = [json.loads(line) for line in (results / "analysis" / "figure2_judge_verdicts.jsonl").open()]
    assert len(records) == 2 * 4 and sorted((r["index"], r["order"]) for r in records) == sorted(
        (i, o) for i in {r["index"] for r in records} for o in (0, 1))
    assert all(r["cached"] and r["attempts"] == 0 for r in records)  # the rerun's records
    assert sent >= len(records)  # one request per verdict, more where a reply had none
    for r in records:
        assert r["model"] == str(smollm2) and r["base_url"] == analysis["settings"]["base_url"]
        assert r["messages"][0]["role"] == "system" and "## Response A" in r["messages"][1]["content"]
        assert isinstance(r["reply"], str) and r["reply"].strip()
        assert r["verdict"] == parse_verdict(r["reply"])
        assert r["verdict_source"] == (None if r["verdict"] is None else
                                       "marker" if "[[" in r["reply"] else "free text")
    assert any(r["verdict_source"] == "free text" for r in records), [r["reply"] for r in records]
    # the statistics are those of the recorded verdicts, in the JSON, the table and the report
    (title, summary), = analysis["summary"].items()
    assert summary == summarize(records, "DSKD", "KD")[title]
    assert summary["n"] + summary["invalid"] == 8 and summary["pairs"] <= 4
    report = subprocess.run([sys.executable, "-m", "repro.report", str(path)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120)
    assert report.returncode == 0, report.stderr[-3000:]
    html = (results / "report" / "index.html").read_text()
    share = f"{summary['first_position_wins']}/{summary['decisive']}"
    assert "Orders agree" in html and "First position wins" in html and share in html
    assert "each in both orders" in html and "figure2_judge_win_rates.png" in html
    assert (results / "figures" / "figure2_judge_win_rates.png").stat().st_size > 1000
    print(f"real judge: {sent} requests; first position won {share} decisive verdicts; the orders agreed on "
          f"{summary['agreements']}/{summary['pairs']} prompts; replies: {[r['reply'] for r in records]}")
    for file in tmp_path.rglob("*"):  # the key is in no output, log, params file, notebook or server log
        if file.is_file():
            assert SECRET.encode() not in file.read_bytes(), file
