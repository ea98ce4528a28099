"""The LLM judge of Figure 2, against a fake OpenAI-compatible server on 127.0.0.1 through the real ``openai`` client:
verdicts and winners, retries (429, 5xx, malformed replies), the give-up record, the cache, bounded concurrency,
that the API key is never written or echoed, free-text replies, and both orders with their position statistics.
(A real judge, ``transformers serve`` with a real model: tests/test_judge_real.py.)"""
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from fake_openai import fake_openai_server
from repro.judge import (
    build_items,
    judge_messages,
    judge_status,
    parse_verdict,
    run_judge,
    summarize,
    verdict_source,
)
from repro.settings import JudgeSettings

KEY = "sk-test-SECRET-1234"
ENV = {"OPENAI_API_KEY": KEY}


def rows(n: int, tag: str) -> list[dict]:
    """Generation rows like the JSONL files hold; the prediction carries ``tag`` so tests can tell students apart."""
    return [{"prompt": f"prompt {i}", "instruction": f"Explain thing {i}.", "input": "some context" if i % 2 else "",
             "references": [f"ref {i}"], "prediction": f"{tag} answer {i}", "seed": 10, "rougeL": 1.0}
            for i in range(n)]


def settings(server=None, **overrides) -> JudgeSettings:
    fast = dict(n_prompts=4, timeout_s=10.0)
    return JudgeSettings(base_url=server.base_url if server else None, **(fast | overrides))


def items_for(s: JudgeSettings, n_rows: int = 8, comparison: str = "fkl") -> list[dict]:
    return build_items(rows(n_rows, "dskd"), rows(n_rows, "kd"), s, "dskd", "kd", comparison)


def test_answers_are_judged_through_the_server(tmp_path):
    with fake_openai_server() as server:
        s = settings(server)
        items = items_for(s)
        records = run_judge(items, s, tmp_path, environ=ENV)
        sent = server.chat_requests()
    assert len(sent) == len(items) == len(records) == 4
    assert {r["headers"]["authorization"] for r in sent} == {f"Bearer {KEY}"}
    bodies = sorted((json.dumps(r["json"]["messages"]) for r in sent))
    assert bodies == sorted(json.dumps(r["messages"]) for r in records)
    assert {(r["json"]["model"], r["json"]["temperature"]) for r in sent} == {("gpt-4-turbo", 0.1)}
    for item, record in zip(items, records):
        # The fake server always answers [[A]], so the winner is whoever was shown first.
        assert (record["comparison"], record["index"]) == (item["comparison"], item["index"])
        assert record["verdict"] == "A" and record["winner"] == item["label_a"]
        assert record["model"] == "gpt-4-turbo" and record["base_url"] == server.base_url
        assert record["messages"] == judge_messages(item) and record["reply"].endswith("[[A]]")
        assert record["attempts"] == 1 and record["error"] is None and record["cached"] is False
        assert item["answer_a"] in record["messages"][1]["content"]
    summary = summarize(records, "dskd", "kd")["fkl"]
    assert summary["n"] == 4 and summary["invalid"] == 0
    assert summary["wins"] == sum(i["label_a"] == "dskd" for i in items)
    assert summary["win_rate"] + summary["loss_rate"] + summary["tie_rate"] == pytest.approx(1.0)


def test_verdict_b_and_tie_map_back_through_the_order(tmp_path):
    with fake_openai_server([("verdict", "B"), ("verdict", "C")]) as server:
        s = settings(server, concurrency=1)
        items = items_for(s)[:3]
        records = run_judge(items, s, tmp_path, environ=ENV)
    assert [r["verdict"] for r in records] == ["B", "tie", "A"]
    assert [r["winner"] for r in records] == [items[0]["label_b"], "tie", items[2]["label_a"]]
    summary = summarize(records, "dskd", "kd")["fkl"]
    assert (summary["n"], summary["ties"], summary["tie_rate"]) == (3, 1, pytest.approx(1 / 3))


@pytest.mark.parametrize("failure", [("status", 429, {"Retry-After": "0"}), ("status", 500), ("status", 503)])
def test_a_failed_request_is_retried_by_the_client(tmp_path, failure):
    with fake_openai_server([failure]) as server:
        s = settings(server)
        records = run_judge(items_for(s)[:1], s, tmp_path, environ=ENV)
        sent = server.chat_requests()
    assert len(sent) == 2 and sent[1]["headers"].get("x-stainless-retry-count") == "1"  # the client's retry
    assert records[0]["verdict"] == "A" and records[0]["attempts"] == 1 and records[0]["error"] is None


@pytest.mark.parametrize("failure", [("malformed_json",), ("no_choices",), ("no_verdict",)])
def test_a_reply_without_a_verdict_is_asked_for_again(tmp_path, failure):
    with fake_openai_server([failure]) as server:
        s = settings(server)
        records = run_judge(items_for(s)[:1], s, tmp_path, environ=ENV)
        assert len(server.chat_requests()) == 2
    assert records[0]["verdict"] == "A" and records[0]["attempts"] == 2 and records[0]["error"] is None


def test_retry_after_is_honoured(tmp_path):
    # The client's Retry-After: 3 s asked for, waited out (its own backoff would be under a second)
    with fake_openai_server([("status", 429, {"Retry-After": "3"})]) as server:
        s = settings(server)
        start = time.monotonic()
        assert run_judge(items_for(s)[:1], s, tmp_path / "a", environ=ENV)[0]["verdict"] == "A"
        assert 2.9 <= time.monotonic() - start < 10


def test_a_request_that_keeps_failing_gives_an_invalid_record(tmp_path):
    with fake_openai_server([("status", 503)] * 3) as server:
        s = settings(server, max_retries=2, concurrency=1)
        records = run_judge(items_for(s)[:2], s, tmp_path, environ=ENV)
        assert len(server.chat_requests()) == 3 + 1
    assert records[0]["verdict"] is None and "HTTP 503" in records[0]["error"] and "2 retries" in records[0]["error"]
    assert records[1]["verdict"] == "A"


def test_persistent_failure_gives_an_invalid_record_and_is_not_cached(tmp_path):
    with fake_openai_server([("no_verdict",)] * 3) as server:
        s = settings(server, max_retries=2, concurrency=1)
        items = items_for(s)
        records = run_judge(items, s, tmp_path, environ=ENV)
        assert len(server.chat_requests()) == 3 + 3
        failed = records[0]
        assert failed["verdict"] is None and failed["winner"] is None and failed["attempts"] == 3
        assert "3 attempts" in failed["error"] and "verdict marker" in failed["error"]
        assert failed["reply"] is not None and failed["messages"] == judge_messages(items[0])
        assert all(r["verdict"] == "A" for r in records[1:])
        summary = summarize(records, "dskd", "kd")["fkl"]
        assert (summary["n"], summary["invalid"]) == (3, 1)
        assert summary["win_rate"] + summary["loss_rate"] == pytest.approx(1.0)
        # A rerun asks again about the failed item only.
        again = run_judge(items, s, tmp_path, environ=ENV)
        assert len(server.chat_requests()) == 7
    assert again[0]["verdict"] == "A" and not again[0]["cached"]
    assert all(r["cached"] for r in again[1:])


def test_cache_makes_a_rerun_free(tmp_path):
    with fake_openai_server([("verdict", "B"), ("verdict", "C")]) as server:
        s = settings(server, concurrency=1)
        items = items_for(s)
        first = run_judge(items, s, tmp_path, environ=ENV)
        n_requests = len(server.chat_requests())
        second = run_judge(items, s, tmp_path, environ=ENV)
        assert len(server.chat_requests()) == n_requests
    assert len(list(tmp_path.glob("*.json"))) == len(items)
    assert [r["verdict"] for r in second] == [r["verdict"] for r in first] == ["B", "tie", "A", "A"]
    assert [r["winner"] for r in second] == [r["winner"] for r in first]
    assert all(r["cached"] and r["attempts"] == 0 for r in second)
    # A different judge model is a different request, so it is not served from this cache.
    with fake_openai_server() as server:
        s2 = settings(server, model="other-judge")
        run_judge(items, s2, tmp_path, environ=ENV)
        assert len(server.chat_requests()) == len(items)


def test_concurrency_is_bounded(tmp_path):
    with fake_openai_server() as server:
        server.delay_s = 0.2
        s = settings(server, concurrency=2, n_prompts=6)
        records = run_judge(items_for(s), s, tmp_path, environ=ENV)
        assert len(records) == 6 and all(r["verdict"] == "A" for r in records)
        assert server.max_in_flight == 2


def test_unauthorized_is_not_retried_and_hides_the_key(tmp_path):
    # The fake server echoes the bearer token in its 401 message; the error must not repeat it.
    with fake_openai_server([("status", 401)]) as server:
        s = settings(server, concurrency=1)
        with pytest.raises(RuntimeError) as error:
            run_judge(items_for(s)[:1], s, tmp_path, environ=ENV)
        assert len(server.chat_requests()) == 1
    message = str(error.value)
    assert "401" in message and "gpt-4-turbo" in message and KEY not in message
    assert KEY not in repr(error.value)


@pytest.mark.parametrize("status", [400, 404])
def test_other_client_errors_are_not_retried(tmp_path, status):
    with fake_openai_server([("status", status)]) as server:
        s = settings(server)
        with pytest.raises(RuntimeError, match=str(status)):
            run_judge(items_for(s)[:1], s, tmp_path, environ=ENV)
        assert len(server.chat_requests()) == 1


def test_the_key_is_written_nowhere(tmp_path, caplog):
    with fake_openai_server([("status", 429, {"Retry-After": "0"}), ("no_verdict",)]) as server:
        s = settings(server)
        records = run_judge(items_for(s), s, tmp_path, environ=ENV)
    files = [p for p in Path(tmp_path).rglob("*") if p.is_file()]
    assert files and not any(KEY.encode() in p.read_bytes() for p in files)
    assert KEY not in json.dumps(records) and KEY not in caplog.text
    assert KEY not in repr(s) and "SECRET" not in json.dumps(judge_status(s, ENV))


def test_missing_key(tmp_path):
    s = settings(api_key_env="JUDGE_KEY")
    status = judge_status(s, environ={"JUDGE_KEY": "  "})
    assert status["configured"] is False and "JUDGE_KEY" in status["reason"]
    configured = judge_status(s, environ={"JUDGE_KEY": KEY})
    assert configured["configured"] is True and KEY not in configured["reason"]
    with pytest.raises(RuntimeError, match="JUDGE_KEY"):
        run_judge(items_for(s), s, tmp_path, environ={})
    assert not list(tmp_path.iterdir())


def test_an_injected_client_is_used_without_a_key(tmp_path):
    calls = []

    def create(**kwargs):
        calls.append(kwargs)
        message = SimpleNamespace(content="Response B is more accurate.\n[[B]]")
        return SimpleNamespace(choices=[SimpleNamespace(message=message)])

    client = SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create)))
    s = settings(max_tokens=99)
    records = run_judge(items_for(s), s, tmp_path, client=client, environ={})
    assert [r["verdict"] for r in records] == ["B"] * 4
    assert {(c["model"], c["temperature"], c["max_tokens"]) for c in calls} == {("gpt-4-turbo", 0.1, 99)}


def test_build_items_is_deterministic_and_randomises_the_order():
    s = JudgeSettings(n_prompts=20)
    first, second = rows(50, "dskd"), rows(50, "kd")
    items = build_items(first, second, s, "dskd", "kd", "fkl")
    assert items == build_items(first, second, s, "dskd", "kd", "fkl")
    assert len(items) == 20 and len({i["index"] for i in items}) == 20
    assert {i["label_a"] for i in items} == {"dskd", "kd"}
    for item in items:
        shown = {item["label_a"]: item["answer_a"], item["label_b"]: item["answer_b"]}
        assert shown == {"dskd": f"dskd answer {item['index']}", "kd": f"kd answer {item['index']}"}
        assert item["instruction"] == f"Explain thing {item['index']}."
        assert set(item) == {"comparison", "index", "order", "instruction", "input", "answer_a", "answer_b",
                             "label_a", "label_b"} and item["order"] == 0
    # Every comparison judges the same prompts; another sample seed draws others.
    other = build_items(first, second, s, "dskd", "kd", "rkl")
    assert [i["index"] for i in other] == [i["index"] for i in items]
    reseeded = build_items(first, second, JudgeSettings(n_prompts=20, sample_seed=2), "dskd", "kd", "fkl")
    assert [i["index"] for i in reseeded] != [i["index"] for i in items]


def test_build_items_takes_all_rows_when_there_are_few():
    items = build_items(rows(5, "dskd"), rows(5, "kd"), JudgeSettings(), "dskd", "kd", "fkl")
    assert sorted(i["index"] for i in items) == list(range(5))


def test_build_items_rejects_mismatched_generations():
    second = rows(6, "kd")
    second[3]["prompt"] = "another prompt"
    with pytest.raises(ValueError, match=r"'fkl', row 3"):
        build_items(rows(6, "dskd"), second, JudgeSettings(), "dskd", "kd", "fkl")
    with pytest.raises(ValueError, match="6 and 5"):
        build_items(rows(6, "dskd"), rows(5, "kd"), JudgeSettings(), "dskd", "kd", "fkl")
    with pytest.raises(ValueError, match="labels must differ"):
        build_items(rows(6, "dskd"), rows(6, "kd"), JudgeSettings(), "kd", "kd", "fkl")


def test_judge_messages():
    item = {"comparison": "fkl", "index": 0, "order": 0, "instruction": "Name a colour.", "input": "",
            "answer_a": "Red.",
            "answer_b": "Blue.", "label_a": "dskd", "label_b": "kd"}
    system, user = judge_messages(item)
    assert (system["role"], user["role"]) == ("system", "user")
    assert "[[A]]" in system["content"] and "[[C]]" in system["content"] and "length" in system["content"]
    assert "Name a colour." in user["content"] and "Red." in user["content"] and "Blue." in user["content"]
    assert user["content"].index("Red.") < user["content"].index("Blue.")
    assert "Input" not in user["content"] and "dskd" not in user["content"]
    assert "the context" in judge_messages(item | {"input": "the context"})[1]["content"]
    # the short style for small judges: the same instruction and answers, a verdict alone asked for
    short_system, short_user = judge_messages(item, "verdict")
    assert "[[" not in short_system["content"] + short_user["content"]
    assert short_user["content"].endswith("Reply with exactly one of: A, B, tie.")
    assert short_user["content"].rsplit("\n\n", 1)[0] == user["content"].rsplit("\n\n", 1)[0]
    with pytest.raises(ValueError, match="'figures.judge.prompt': 'terse' is not one of"):
        JudgeSettings(prompt="terse")


def test_parse_verdict():
    assert parse_verdict("A is better. [[A]]") == "A"
    assert parse_verdict("Not [[A]] as I first thought, but [[B]]") == "B"
    assert parse_verdict("Equally good.\n[[C]]") == "tie"
    assert parse_verdict("B: the first response is wrong [[A]]") == "A"  # a marker outranks the opening
    assert verdict_source("B. [[A]]") == "marker"
    assert parse_verdict("[[D]]") is None and parse_verdict("") is None and parse_verdict(None) is None
    assert (parse_verdict("[A]"), verdict_source("[A]")) == ("A", "free text")  # not the marker, but the opening
    assert verdict_source("Both are fine.") is None


@pytest.mark.parametrize("reply, verdict", [
    ("A", "A"), ("B", "B"), ("tie", "tie"), ("Tie.", "tie"), ("C", "tie"),
    ("A: The capital of France is Paris", "A"),  # what a 135M judge answers
    ("A: 5 B: 4 for 2+2\n\nThe correct answer is A: 5", "A"),
    ("B is better: it names the right city.", "B"), ("A wins", "A"), ("  **B**\nIt is more accurate.", "B"),
    ("Verdict: B", "B"), ("Final verdict: tie", "tie"), ("Response A is more helpful.", "A"), ("(B)", "B"),
    ("\"A\"", "A"), ("Answer: A.", "A"), ("a: lower case", "A"),
    # a first sentence that names exactly one verdict (what the 135M judge says to the "verdict" prompt)
    ("The answer is A.", "A"), ("The response that is better is response A.", "A"), ("It is a tie.", "tie"),
    ("The better one is B\nbecause A is wrong", "B"), ("Because A is right, I choose it.", "A"),
    # no verdict: an article, a word that starts with the letter, both named, a verdict after the first sentence
    ("A good answer names Paris.", None), ("Both are fine; I cannot decide.", None), ("Bravo to both", None),
    ("Tied up in knots", None), ("The first response (A) is worse than B.", None), ("AI wins", None),
    ("The two responses differ. A is better.", None), ("A good answer. B is better", None),
])
def test_free_text_replies_are_read(reply, verdict):
    assert parse_verdict(reply) == verdict
    assert verdict_source(reply) == (None if verdict is None else "free text")


def test_settings_are_validated():
    with pytest.raises(ValueError, match="'figures.judge.concurrency': 0 is less than the minimum of 1"):
        JudgeSettings(concurrency=0)
    with pytest.raises(ValueError, match="temperature"):
        JudgeSettings(temperature=-0.1)
    with pytest.raises(ValueError, match="temperature': 2.5 is greater than the maximum of 2"):
        JudgeSettings(temperature=2.5)
    with pytest.raises(ValueError, match="base_url"):
        JudgeSettings(base_url="localhost:8000")
    with pytest.raises(ValueError, match="model"):
        JudgeSettings(model="  ")
    with pytest.raises(ValueError, match="timeout_s': expected a finite number"):
        JudgeSettings(timeout_s=float("nan"))
    with pytest.raises(ValueError) as error:
        JudgeSettings(api_key_env=KEY)
    assert "api_key_env" in str(error.value) and KEY not in str(error.value)


def test_an_unreachable_endpoint_stops_the_run_with_a_clear_error(tmp_path):
    """Nothing listens at the URL: after one item's retries the run stops (instead of every item waiting out its
    own retries), naming the endpoint and how to go on without a judge, never the key."""
    import socket

    with socket.socket() as s:  # a port that was free a moment ago and that nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    s = JudgeSettings(base_url=f"http://127.0.0.1:{port}/v1", max_retries=2, concurrency=1,
                      timeout_s=5)
    with pytest.raises(RuntimeError, match=r"could not be reached in 3 attempts.*unset OPENAI_API_KEY") as error:
        run_judge(items_for(s), s, tmp_path / "cache", environ={"OPENAI_API_KEY": KEY})
    assert KEY not in str(error.value) and f"127.0.0.1:{port}" in str(error.value)


def test_both_orders_judges_every_prompt_twice_and_reuses_the_drawn_order(tmp_path):
    """With both_orders every drawn prompt is also judged with the answers swapped; the drawn order's requests are
    the paper protocol's, so its cached verdicts serve again and only the swapped orders are sent."""
    with fake_openai_server() as server:
        single = settings(server)
        run_judge(items_for(single), single, tmp_path, environ=ENV)
        both = settings(server, both_orders=True)
        items = items_for(both)
        records = run_judge(items, both, tmp_path, environ=ENV)
        assert len(server.chat_requests()) == 4 + 4
    assert [(i["index"], i["order"]) for i in items] == [(i, o) for i in sorted({i["index"] for i in items})
                                                         for o in (0, 1)]
    for drawn, swapped in zip(items[::2], items[1::2]):
        assert (drawn["answer_a"], drawn["label_a"]) == (swapped["answer_b"], swapped["label_b"])
        assert (drawn["answer_b"], drawn["label_b"]) == (swapped["answer_a"], swapped["label_a"])
    assert items[::2] == [i | {"order": 0} for i in items_for(single)]
    assert [r["cached"] for r in records] == [True, False] * 4 and [r["order"] for r in records] == [0, 1] * 4
    # the fake server always answers [[A]]: every first position wins, so the orders never agree
    summary = summarize(records, "dskd", "kd")["fkl"]
    assert (summary["n"], summary["wins"], summary["losses"], summary["ties"]) == (8, 4, 4, 0)
    assert (summary["pairs"], summary["agreements"], summary["agreement"]) == (4, 0, 0.0)
    assert (summary["decisive"], summary["first_position_wins"], summary["first_position_share"]) == (8, 8, 1.0)


def test_both_orders_statistics_of_a_judge_without_position_bias(tmp_path):
    """A judge that always prefers DSKD's answer, wherever it is shown (and calls one prompt a tie both times)."""
    s = settings(both_orders=True, n_prompts=5, concurrency=1)
    items = items_for(s)
    verdicts = ["C" if item["index"] == items[0]["index"] else "A" if item["label_a"] == "dskd" else "B"
                for item in items]
    with fake_openai_server([("verdict", v) for v in verdicts]) as server:
        s = settings(server, both_orders=True, n_prompts=5, concurrency=1)
        records = run_judge(items, s, tmp_path, environ=ENV)
    summary = summarize(records, "dskd", "kd")["fkl"]
    assert (summary["n"], summary["wins"], summary["ties"], summary["losses"]) == (10, 8, 2, 0)
    assert (summary["pairs"], summary["agreements"], summary["agreement"]) == (5, 5, 1.0)
    assert (summary["decisive"], summary["first_position_wins"], summary["first_position_share"]) == (8, 4, 0.5)


def record(index, order, verdict, label_a="dskd", comparison="fkl"):
    label_b = "kd" if label_a == "dskd" else "dskd"
    winner = {"A": label_a, "B": label_b, "tie": "tie", None: None}[verdict]
    return {"comparison": comparison, "index": index, "order": order, "label_a": label_a, "label_b": label_b,
            "verdict": verdict, "winner": winner}


def test_summarize_position_statistics_by_hand():
    records = [record(0, 0, "A"), record(0, 1, "B", "kd"),      # both orders: DSKD (agree; first wins once)
               record(1, 0, "A", "kd"), record(1, 1, "A"),      # KD, then DSKD: the first position both times
               record(2, 0, "tie"), record(2, 1, None, "kd"),   # an invalid verdict: no pair, counted invalid
               record(3, 0, "B"), record(3, 1, "tie", "kd"),    # KD, then a tie: disagree
               record(0, 0, "B", comparison="rkl")]             # one order only in another comparison
    summary = summarize(records, "dskd", "kd")
    fkl = summary["fkl"]
    assert (fkl["n"], fkl["invalid"], fkl["wins"], fkl["losses"], fkl["ties"]) == (7, 1, 3, 2, 2)
    assert (fkl["pairs"], fkl["agreements"]) == (3, 1) and fkl["agreement"] == pytest.approx(1 / 3)
    assert (fkl["decisive"], fkl["first_position_wins"]) == (5, 3) and fkl["first_position_share"] == 0.6
    assert "agreement" not in summary["rkl"] and "first_position_share" not in summary["rkl"]
    with pytest.raises(ValueError, match="'fkl', item 0: order 0 given twice"):
        summarize(records + [record(0, 0, "A")], "dskd", "kd")


def test_the_table_shows_the_position_statistics_only_with_both_orders():
    from repro.figures import judge_table

    one = summarize([record(0, 0, "A"), record(1, 0, "B")], "dskd", "kd")
    assert "Orders agree" not in judge_table(one) and judge_table(one).count("|---") == 6
    both = summarize([record(0, 0, "A"), record(0, 1, "A", "kd"), record(1, 0, "B"), record(1, 1, "B", "kd")],
                     "dskd", "kd")
    table = judge_table(both)
    assert "| Orders agree | First position wins |" in table
    assert "| fkl | 2 | 0 | 2 | 4 | 0 | 0/2 (0%) | 2/4 (50%) |" in table and "50% without position bias" in table


def test_a_free_text_reply_is_a_verdict_and_says_so(tmp_path):
    """A small judge's reply without a marker ("A: ...") is read, not asked for again, and recorded as free text."""
    calls = []

    def create(**kwargs):
        calls.append(kwargs)
        message = SimpleNamespace(content="A: The capital of France is Paris")
        return SimpleNamespace(choices=[SimpleNamespace(message=message)])

    client = SimpleNamespace(chat=SimpleNamespace(completions=SimpleNamespace(create=create)))
    s = settings()
    items = items_for(s)
    records = run_judge(items, s, tmp_path, client=client, environ={})
    assert len(calls) == 4
    assert all(r["verdict"] == "A" and r["verdict_source"] == "free text" and r["attempts"] == 1 for r in records)
    assert [r["winner"] for r in records] == [i["label_a"] for i in items]
    again = run_judge(items, s, tmp_path, client=client, environ={})
    assert len(calls) == 4 and all(r["cached"] and r["verdict_source"] == "free text" for r in again)
