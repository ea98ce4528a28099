"""LLM-as-judge pairwise comparison of two students' generations (the paper's Figure 2).

The paper asks GPT-4 (gpt-4-turbo, temperature 0.1) which of two responses to 100 random Dolly test prompts is
better, DSKD's or vanilla KD's with the same divergence, on their seed-10 generations; the answers' positions are
randomised and the judge may call a tie. Here the judge is any OpenAI-compatible endpoint reached through the
official ``openai`` client: OpenAI itself by default, or a local server (vLLM, ``transformers serve``, ...) through
``base_url``.

One random order per item cannot tell a judge's preference for a position from its preference for an answer. With
``both_orders`` every item is also judged with the answers swapped, and ``summarize`` reports how often the two
orders agree and the share of decisive verdicts that went to the answer shown first (0.5 for a judge without
position bias; 1.0 for one that always picks the first).

The API key is read from the environment variable that ``JudgeSettings.api_key_env`` names and is handed to the
client only: it never appears in settings, records, cache files, log lines or error messages. Every request is
cached on disk by the hash of what was sent, so a rerun repeats no paid call; requests that keep failing end as
records with ``verdict`` None and ``error`` set (never dropped, never cached), so a rerun tries them again.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Mapping

from .io import read_json, write_json
from .settings import JudgeSettings

logger = logging.getLogger(__name__)

VERDICT_RE = re.compile(r"\[\[([ABC])\]\]")
VERDICTS = {"A": "A", "B": "B", "C": "tie", "TIE": "tie"}
# A reply without a marker (a small judge answering in free text, "A: The capital of France is Paris"): its first
# word, after markdown and a lead-in such as "Verdict:" or "Response", when that word is A, B, C or tie standing
# alone (followed by the end of its line, punctuation or "is"/"wins"/"was"), so the article in "A good answer..." is
# no verdict.
FREE_TEXT_RE = re.compile(
    r"^[\s*#>\"'`(\[_-]*(?:(?:final\s+)?(?:verdict|answer|response|winner|output)\b[\s*:_-]*)?"
    r"(A|B|C|tie)(?=[*_\"'`]*[ \t]*(?:$|\n|[:.,;!?)\]]|(?:is|wins|was)\b))", re.IGNORECASE)
# Else the reply's first sentence (up to its first line break or sentence end), when it names exactly one verdict:
# A or B as a word of its own that is no article (not followed by a lower-case word other than is/wins/was), or
# "tie" ("The answer is A.", "The better one is response B.", "It is a tie.").
NAMED_RE = re.compile(r"\b(?:(A|B)\b(?![*_\"'`]*[ \t]+(?!(?:is|wins|was)\b)[a-z])|((?i:tie))\b)")
SENTENCE_END_RE = re.compile(r"\n|(?<=[.!?])\s")
ITEM_KEYS = ("comparison", "index", "order", "instruction", "input", "answer_a", "answer_b", "label_a", "label_b")
ROW_KEYS = ("prompt", "instruction", "input", "prediction")
# Statuses the client retries (with its backoff and the server's Retry-After): timeout, conflict, rate limit, 5xx.
RETRY_STATUSES = (408, 409, 429)


# ---------------------------------------------------------------------------------------------- configuration


def _api_key(settings: JudgeSettings, environ: Mapping[str, str] | None) -> str | None:
    """The key from the environment, or None when the variable is unset or blank."""
    value = (os.environ if environ is None else environ).get(settings.api_key_env, "")
    return value.strip() or None


def _endpoint(settings: JudgeSettings) -> str:
    return settings.base_url or "OpenAI's API"


def judge_status(settings: JudgeSettings, environ: Mapping[str, str] | None = None) -> dict:
    """Whether the judge can run (its key variable is set), with a sentence for the report; never the key."""
    if _api_key(settings, environ):
        return {"configured": True,
                "reason": f"judge {settings.model} at {_endpoint(settings)}, with the key from the environment "
                          f"variable {settings.api_key_env}"}
    return {"configured": False,
            "reason": f"Figure 2 needs a judge endpoint: set the environment variable {settings.api_key_env} "
                      f"(and figures.judge.base_url for a server other than OpenAI's), then rerun the workflow; "
                      f"no other result depends on it"}


# ---------------------------------------------------------------------------------------------- items


def build_items(first: list[dict], second: list[dict], settings: JudgeSettings, first_label: str,
                second_label: str, comparison: str) -> list[dict]:
    """The prompts to judge for one comparison, each with the two answers in a randomised order.

    ``first`` and ``second`` are the two students' generation rows on the same test set and seed, matched by
    position and required to share each row's prompt. The rows drawn depend only on ``sample_seed`` and the
    number of rows (so every comparison judges the same prompts); the order of each pair depends on
    ``(sample_seed, comparison, index)`` through a hash, so it is reproducible across processes and Python versions.
    Each item's ``order`` is 0 for that drawn order; with ``settings.both_orders`` every row also gives a second
    item, ``order`` 1, with the answers swapped (so the drawn orders, and their cached verdicts, stay the same).
    """
    if first_label == second_label or "tie" in (first_label, second_label):
        raise ValueError(f"judge comparison {comparison!r}: the labels must differ from each other and from 'tie' "
                         f"(the winner of a tied item), got {first_label!r} and {second_label!r}")
    _check_rows(first, second, comparison)
    k = min(settings.n_prompts, len(first))
    indices = sorted(random.Random(settings.sample_seed).sample(range(len(first)), k))
    items = []
    for i in indices:
        drawn = _first_is_a(settings.sample_seed, comparison, i)
        for order in (0, 1) if settings.both_orders else (0,):
            first_is_a = drawn != bool(order)
            a, b = (first[i], second[i]) if first_is_a else (second[i], first[i])
            items.append({"comparison": comparison, "index": i, "order": order, "instruction": first[i]["instruction"],
                          "input": first[i]["input"] or "", "answer_a": a["prediction"], "answer_b": b["prediction"],
                          "label_a": first_label if first_is_a else second_label,
                          "label_b": second_label if first_is_a else first_label})
    return items


def _check_rows(first: list[dict], second: list[dict], comparison: str) -> None:
    """Both students must have answered the same prompts, in the same order."""
    if len(first) != len(second):
        raise ValueError(f"judge comparison {comparison!r}: the two students have {len(first)} and {len(second)} "
                         f"generation rows; expected the same test set, so the same number")
    if not first:
        raise ValueError(f"judge comparison {comparison!r}: no generation rows to judge")
    for i, (x, y) in enumerate(zip(first, second)):
        for side, row in (("first", x), ("second", y)):
            missing = [key for key in ROW_KEYS if key not in row]
            if missing:
                raise ValueError(f"judge comparison {comparison!r}, row {i} of the {side} student: missing keys "
                                 f"{missing}; expected generation rows with {list(ROW_KEYS)}")
        if x["prompt"] != y["prompt"]:
            raise ValueError(f"judge comparison {comparison!r}, row {i}: the two students' prompts differ; expected "
                             f"generations on the same test set in the same order")


def _first_is_a(sample_seed: int, comparison: str, index: int) -> bool:
    """Whether the first student's answer is shown as answer A; a fair coin seeded by a hash of the arguments."""
    digest = hashlib.sha256(f"{sample_seed}\x00{comparison}\x00{index}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big")).random() < 0.5


# ---------------------------------------------------------------------------------------------- prompt and verdict

INSTRUCTIONS = (
    "You are a careful, impartial evaluator of AI assistants. You will see an instruction given to two assistants "
    "and the response each of them wrote. Decide which response serves the user better, weighing helpfulness, "
    "relevance, accuracy, depth and an appropriate level of detail. The order in which the responses are shown "
    "says nothing about their quality, and length is no merit in itself: judge what the responses say."
)
SYSTEM_PROMPT = INSTRUCTIONS + (
    " Give a brief justification first. Then finish with a line holding exactly one verdict and nothing else: "
    "[[A]] if response A is better, [[B]] if response B is better, or [[C]] if they are equally good."
)
# ``JudgeSettings.prompt``: the system prompt and the closing request of each style. "reasoned" (the default) asks
# for a justification and then a marked verdict line, as a strong judge such as the paper's GPT-4 can give;
# "verdict" asks for the verdict alone, for a small local judge that never reaches a marked line after reasoning
# (its reply is read as free text, see ``parse_verdict``).
PROMPTS = {
    "reasoned": (SYSTEM_PROMPT,
                 "Compare the two responses, then give your final verdict line: [[A]], [[B]] or [[C]] (tie)."),
    "verdict": (INSTRUCTIONS, "Which response is better? Reply with exactly one of: A, B, tie."),
}


def judge_messages(item: dict, prompt: str = "reasoned") -> list[dict]:
    """The chat messages that ask the judge about one item in the style ``prompt`` (a key of ``PROMPTS``); the
    assistants' identities are never shown."""
    system, request = PROMPTS[prompt]
    parts = [f"## Instruction\n{item['instruction'].strip()}"]
    if (item.get("input") or "").strip():
        parts.append(f"## Input\n{item['input'].strip()}")
    parts += [f"## Response A\n{item['answer_a'].strip()}\n## End of response A",
              f"## Response B\n{item['answer_b'].strip()}\n## End of response B", request]
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


def parse_verdict(text: str) -> str | None:
    """'A', 'B' or 'tie' from the last verdict marker ``[[A]]``, ``[[B]]``, ``[[C]]`` in ``text``; without a marker,
    from a free-text reply that opens with the verdict (``FREE_TEXT_RE``: "A: ...", "**B**", "Verdict: tie") or
    whose first sentence names exactly one (``NAMED_RE``: "The answer is A."); None otherwise (an invalid verdict)."""
    return _parse(text)[0]


def verdict_source(text: str) -> str | None:
    """How ``parse_verdict`` read ``text``: "marker", "free text", or None when it found no verdict."""
    return _parse(text)[1]


def _parse(text: str) -> tuple[str | None, str | None]:
    found = VERDICT_RE.findall(text or "")
    if found:
        return VERDICTS[found[-1]], "marker"
    opening = FREE_TEXT_RE.match(text or "")
    if opening:
        return VERDICTS[opening.group(1).upper()], "free text"
    sentence = SENTENCE_END_RE.split((text or "").strip(), maxsplit=1)[0]
    named = {VERDICTS[(letter or tie).upper()] for letter, tie in NAMED_RE.findall(sentence)}
    return (named.pop(), "free text") if len(named) == 1 else (None, None)


# ---------------------------------------------------------------------------------------------- cache


def _cache_path(cache_dir: Path, settings: JudgeSettings, messages: list[dict]) -> Path:
    """One file per distinct request: everything that shapes the reply goes into the name's hash."""
    request = {"model": settings.model, "base_url": settings.base_url, "temperature": settings.temperature,
               "max_tokens": settings.max_tokens, "messages": messages}
    digest = hashlib.sha256(json.dumps(request, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return cache_dir / f"{digest}.json"


def _read_cache(path: Path, messages: list[dict]) -> dict | None:
    """The cached entry at ``path`` when it holds a valid verdict for exactly these messages, else None."""
    if not path.exists():
        return None
    try:
        entry = read_json(path)
    except ValueError as e:
        logger.warning("judge cache: ignoring an unreadable entry (%s); the request will be sent again", e)
        return None
    valid = isinstance(entry, dict) and entry.get("messages") == messages and entry.get("verdict") in ("A", "B", "tie")
    return entry if valid else None


# ---------------------------------------------------------------------------------------------- requests


class _Retry(Exception):
    """A reply worth asking for again (no verdict, a malformed body): what the client's own retries cannot see."""

    def __init__(self, message: str, reply: str | None = None):
        super().__init__(message)
        self.reply = reply


class _ItemFailed(Exception):
    """A request that still failed after the client's own retries (rate limit, server error, timeout)."""


def _redact(text: str, key: str) -> str:
    return text.replace(key, "<redacted>") if key else text


def _reply_text(response) -> str:
    """The assistant's text from a chat completion; a body without it is malformed (raises ``_Retry``)."""
    try:
        content = response.choices[0].message.content
    except (AttributeError, IndexError, TypeError):
        raise _Retry(f"malformed response: expected a chat completion with choices, got {type(response).__name__}")
    if not isinstance(content, str):
        raise _Retry("malformed response: the first choice has no text content")
    return content


def _ask(client, messages: list[dict], settings: JudgeSettings, key: str) -> tuple[str, str]:
    """One request (the client retries rate limits, server errors, timeouts and lost connections itself, with its
    backoff and the server's Retry-After); returns (reply, verdict). Raises ``_Retry`` for a reply worth asking
    for again, ``_ItemFailed`` for a request the client's retries did not get through, and ``RuntimeError``
    (naming status and model, never the key) for refusals that another try would not change and for an endpoint
    that cannot be reached at all."""
    import openai

    try:
        response = client.chat.completions.create(model=settings.model, messages=messages,
                                                  temperature=settings.temperature, max_tokens=settings.max_tokens)
    except openai.APIStatusError as e:
        detail = _redact(str(getattr(e, "message", "") or e), key)
        code = getattr(e, "code", None)
        if (e.status_code in RETRY_STATUSES or e.status_code >= 500) and code != "insufficient_quota":
            raise _ItemFailed(f"HTTP {e.status_code}: {detail}") from None
        raise RuntimeError(f"the judge endpoint ({_endpoint(settings)}) refused the request for model "
                           f"{settings.model!r} with HTTP {e.status_code} ({detail.rstrip('.')}); check the model "
                           f"name, the base_url and the key in the environment variable "
                           f"{settings.api_key_env}") from None
    except openai.APITimeoutError as e:
        raise _ItemFailed(f"{type(e).__name__}: {_redact(str(e), key)}") from None
    except openai.APIConnectionError as e:  # every retry of the client failed to connect: so would the other items
        raise RuntimeError(f"the judge endpoint ({_endpoint(settings)}) could not be reached in "
                           f"{settings.max_retries + 1} attempts ({type(e).__name__}: {_redact(str(e), key)}); check "
                           f"figures.judge.base_url and the network, or unset {settings.api_key_env} to run the "
                           f"workflow without Figure 2") from None
    except (openai.APIResponseValidationError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise _Retry(f"malformed response body ({type(e).__name__})") from None
    reply = _reply_text(response)
    verdict = parse_verdict(reply)
    if verdict is None:
        raise _Retry("malformed reply: no [[A]], [[B]] or [[C]] verdict marker, and no A, B or tie in its opening "
                     "or first sentence", reply=reply)
    return reply, verdict


def _judge_one(item: dict, client, settings: JudgeSettings, cache_dir: Path, key: str) -> dict:
    """The record of one item: from the cache, or after up to ``1 + max_retries`` requests."""
    messages = judge_messages(item, settings.prompt)
    path = _cache_path(cache_dir, settings, messages)
    cached = _read_cache(path, messages)
    if cached is not None:
        return _record(item, settings, messages, cached["reply"], cached["verdict"], 0, None, True)
    reply, error = None, None
    for attempt in range(1, settings.max_retries + 2):
        try:
            reply, verdict = _ask(client, messages, settings, key)
        except _ItemFailed as e:
            error = f"{e} (after the client's {settings.max_retries} retries)"
            break
        except _Retry as e:
            reply, error = e.reply, str(e)
            if attempt <= settings.max_retries:
                logger.warning("judge %s item %s%s: %s; asking again (%d of %d)", item["comparison"], item["index"],
                               _swapped(item), error, attempt, settings.max_retries)
            continue
        write_json(path, {"model": settings.model, "base_url": settings.base_url, "temperature": settings.temperature,
                          "max_tokens": settings.max_tokens, "messages": messages, "reply": reply, "verdict": verdict,
                          "attempts": attempt})
        return _record(item, settings, messages, reply, verdict, attempt, None, False)
    else:
        attempt = settings.max_retries + 1
        error = f"no valid verdict after {attempt} attempts; last error: {error}"
    logger.warning("judge %s item %s%s: giving up: %s", item["comparison"], item["index"], _swapped(item), error)
    return _record(item, settings, messages, reply, None, attempt, error, False)


def _swapped(item: dict) -> str:
    return " (answers swapped)" if item["order"] else ""


def _record(item: dict, settings: JudgeSettings, messages: list[dict], reply: str | None, verdict: str | None,
            attempts: int, error: str | None, cached: bool) -> dict:
    winner = {"A": item["label_a"], "B": item["label_b"], "tie": "tie", None: None}[verdict]
    return {"comparison": item["comparison"], "index": item["index"], "order": item["order"],
            "label_a": item["label_a"], "label_b": item["label_b"], "verdict": verdict,
            "verdict_source": verdict_source(reply) if verdict is not None else None, "winner": winner,
            "model": settings.model, "base_url": settings.base_url, "temperature": settings.temperature,
            "prompt": settings.prompt, "messages": messages,
            "reply": reply, "attempts": attempts, "error": error, "cached": cached}


def _check_items(items: list[dict]) -> None:
    for n, item in enumerate(items):
        missing = [k for k in ITEM_KEYS if k not in item]
        if missing:
            raise ValueError(f"judge item {n}: missing keys {missing}; expected items from build_items")


def _default_client(settings: JudgeSettings, key: str):
    """The official client with ``max_retries`` retries of its own (rate limits, server errors, timeouts, lost
    connections; exponential backoff, the server's Retry-After honoured up to a minute)."""
    import openai

    return openai.OpenAI(api_key=key, base_url=settings.base_url, timeout=settings.timeout_s,
                         max_retries=settings.max_retries)


def run_judge(items: list[dict], settings: JudgeSettings, cache_dir: str | os.PathLike, client=None,
              environ: Mapping[str, str] | None = None) -> list[dict]:
    """Judge every item (at most ``settings.concurrency`` requests in flight); one record per item, in item order.

    Cached verdicts are reused without a request (``cached`` True, ``attempts`` 0). A reply without a verdict is
    asked for again, up to ``1 + max_retries`` attempts (``attempts`` counts them; the client's own retries of a
    request are not counted); an item that still has no valid verdict, or whose request failed after the client's
    retries, gets a record with ``verdict`` None and ``error`` set. A refusal that
    retrying cannot fix (401, 400, 404, exhausted quota) raises ``RuntimeError`` naming the status and model.
    ``client`` replaces the ``openai.OpenAI`` client (it needs ``.chat.completions.create``); without one, the
    key must be in the environment variable ``settings.api_key_env`` of ``environ`` (default ``os.environ``).
    """
    _check_items(items)
    key = _api_key(settings, environ)
    if client is None:
        if key is None:
            raise RuntimeError(f"the LLM judge needs an API key: the environment variable {settings.api_key_env} "
                               f"is not set or is empty")
        client = _default_client(settings, key)
    cache = Path(cache_dir)
    cache.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm

    records: list[dict | None] = [None] * len(items)
    with ThreadPoolExecutor(max_workers=settings.concurrency) as pool, \
            tqdm(total=len(items), desc=f"judge ({settings.model})") as bar:
        futures = {pool.submit(_judge_one, item, client, settings, cache, key or ""): n
                   for n, item in enumerate(items)}
        try:
            for future in as_completed(futures):
                records[futures[future]] = future.result()
                bar.update(1)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    return records


# ---------------------------------------------------------------------------------------------- summary


def summarize(records: list[dict], first_label: str, second_label: str) -> dict:
    """Win / tie / loss counts and rates of ``first_label`` against ``second_label``, per comparison.

    Rates are fractions of the validly judged verdicts (0 when there are none); items without a verdict are counted
    as ``invalid``, apart from the rates. With both orders judged (records of ``order`` 0 and 1), every verdict
    counts, and each comparison also gets its position statistics:

    - ``pairs``: prompts whose two orders both have a verdict; ``agreements`` of them got the same winner (both
      orders chose the same student, or both called a tie), ``agreement`` = agreements / pairs;
    - ``decisive``: verdicts that are not ties; ``first_position_wins`` of them chose the answer shown first (A),
      ``first_position_share`` = first_position_wins / decisive (0.5 without position bias).

    Without both orders those keys are absent: one random order per prompt cannot separate position from answer.
    """
    out: dict[str, dict] = {}
    winners: dict[str, dict[int, dict[int, str]]] = {}
    for r in records:
        if {r["label_a"], r["label_b"]} != {first_label, second_label}:
            raise ValueError(f"judge comparison {r['comparison']!r}, item {r['index']}: labels "
                             f"{r['label_a']!r}/{r['label_b']!r}; expected {first_label!r} and {second_label!r}")
        s = out.setdefault(r["comparison"], {"n": 0, "wins": 0, "ties": 0, "losses": 0, "invalid": 0})
        orders = winners.setdefault(r["comparison"], {}).setdefault(r["index"], {})
        if r["order"] in orders:
            raise ValueError(f"judge comparison {r['comparison']!r}, item {r['index']}: order {r['order']} given "
                             f"twice; expected one record per item and order")
        orders[r["order"]] = r["winner"]
        if r["verdict"] is None:
            s["invalid"] += 1
            continue
        s["n"] += 1
        s[{first_label: "wins", second_label: "losses", "tie": "ties"}[r["winner"]]] += 1
    for s in out.values():
        for count, rate in (("wins", "win_rate"), ("ties", "tie_rate"), ("losses", "loss_rate")):
            s[rate] = s[count] / s["n"] if s["n"] else 0.0
    for name, by_index in winners.items():
        if not any(1 in orders for orders in by_index.values()):
            continue
        both = [orders for orders in by_index.values() if orders.get(0) is not None and orders.get(1) is not None]
        decisive = [r for r in records if r["comparison"] == name and r["verdict"] in ("A", "B")]
        first = sum(r["verdict"] == "A" for r in decisive)
        out[name].update(pairs=len(both), agreements=sum(o[0] == o[1] for o in both),
                         decisive=len(decisive), first_position_wins=first)
        out[name]["agreement"] = out[name]["agreements"] / len(both) if both else 0.0
        out[name]["first_position_share"] = first / len(decisive) if decisive else 0.0
    return out
