"""A fake OpenAI-compatible chat server for tests, on the standard library only (nothing leaves 127.0.0.1).

``fake_openai_server()`` starts a ``ThreadingHTTPServer`` on a free local port and yields a ``FakeOpenAI`` whose
``base_url`` is given to the ``openai`` client. ``POST /v1/chat/completions`` answers with a valid chat completion
whose content ends with the verdict ``[[A]]`` by default (``server.default_verdict`` changes it), so a test can
predict every winner from the record's ``label_a``. Behaviours queued with ``server.queue(...)`` (or the ``script``
argument) are consumed first-in first-out, one per request, before falling back to the default:

- ``("status", 429, {"Retry-After": "0"})``: that HTTP status with an OpenAI-style error body (headers optional);
  a 401's message echoes the bearer token, as a careless server might, so tests can check that it is redacted;
- ``("malformed_json",)``: status 200, ``Content-Type: application/json``, a body that is not JSON;
- ``("no_choices",)``: status 200, valid JSON without ``choices``;
- ``("no_verdict",)``: a valid completion whose content has no verdict marker;
- ``("verdict", "B")``: a valid completion ending with ``[[B]]`` (``"C"`` for a tie);
- ``("sleep", 0.2, behaviour)``: wait, then carry out ``behaviour`` (a tuple above, or None for the default).

Every request is recorded in ``server.requests`` as ``{"path", "headers", "json"}`` (header names lower-cased, as
HTTP treats them case-insensitively; ``json`` is None when the body is not JSON). ``server.delay_s`` makes every
request wait (to hold requests in flight), and ``server.max_in_flight`` is the most requests handled at once.
"""
from __future__ import annotations

import json
import threading
import time
from collections import deque
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterable, Iterator

CHAT_PATH = "/v1/chat/completions"
BEHAVIOURS = ("status", "malformed_json", "no_choices", "no_verdict", "verdict", "sleep")


class FakeOpenAI:
    """The state of one fake server: queued behaviours, received requests, and the in-flight count."""

    def __init__(self, script: Iterable[tuple] | None = None):
        self.base_url = ""
        self.requests: list[dict] = []
        self.default_verdict = "A"
        self.delay_s = 0.0
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._queue: deque[tuple] = deque()
        self.queue(*(script or ()))

    def queue(self, *behaviours: tuple) -> None:
        """Append behaviours for the next requests, one per request, in order."""
        for b in behaviours:
            _check_behaviour(b)
        with self._lock:
            self._queue.extend(behaviours)

    def pending(self) -> int:
        """How many queued behaviours no request has consumed yet."""
        with self._lock:
            return len(self._queue)

    def chat_requests(self) -> list[dict]:
        """The recorded requests to the chat completions endpoint."""
        with self._lock:
            return [r for r in self.requests if r["path"] == CHAT_PATH]

    def _next(self) -> tuple | None:
        with self._lock:
            return self._queue.popleft() if self._queue else None

    def _record(self, request: dict) -> None:
        with self._lock:
            self.requests.append(request)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def _done(self) -> None:
        with self._lock:
            self.in_flight -= 1


def _check_behaviour(b: tuple) -> None:
    """Reject a misspelt behaviour when it is queued, not when a request happens to reach it."""
    if not isinstance(b, tuple) or not b or b[0] not in BEHAVIOURS:
        raise ValueError(f"fake openai: unknown behaviour {b!r}; expected a tuple starting with one of {BEHAVIOURS}")
    if b[0] == "sleep" and b[2] is not None:
        _check_behaviour(b[2])


def completion(content: str, model: str) -> dict:
    """A minimal but valid ``chat.completion`` body carrying ``content``."""
    return {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                     "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }


def verdict_reply(verdict: str) -> str:
    """A judge reply with some reasoning and then the verdict marker on its own line."""
    return f"Both responses address the instruction; weighing them up.\n[[{verdict}]]"


def _make_handler(state: FakeOpenAI):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format, *args):
            pass  # keep test output clean

        def do_GET(self):
            self._record(None)
            try:
                self._send_json(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})
            finally:
                state._done()

        def do_POST(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            self._record(body)
            try:
                if self.path != CHAT_PATH:
                    self._send_json(404, {"error": {"message": f"no route {self.path}",
                                                    "type": "invalid_request_error"}})
                    return
                if state.delay_s:
                    time.sleep(state.delay_s)
                self._behave(state._next(), body or {})
            finally:
                state._done()

        def _record(self, body):
            headers = {name.lower(): value for name, value in self.headers.items()}
            state._record({"path": self.path, "headers": headers, "json": body})

        def _behave(self, behaviour: tuple | None, body: dict):
            model = body.get("model", "fake-model")
            kind = behaviour[0] if behaviour else "verdict"
            if kind == "sleep":
                time.sleep(behaviour[1])
                return self._behave(behaviour[2], body)
            if kind == "status":
                return self._send_status(behaviour[1], behaviour[2] if len(behaviour) > 2 else {})
            if kind == "malformed_json":
                return self._send(200, b'{"id": "chatcmpl-fake", "choices": [', "application/json")
            if kind == "no_choices":
                return self._send_json(200, {"id": "chatcmpl-fake", "object": "chat.completion", "model": model})
            if kind == "no_verdict":
                return self._send_json(200, completion("Both responses are fine; I cannot decide.", model))
            verdict = behaviour[1] if behaviour else state.default_verdict
            return self._send_json(200, completion(verdict_reply(verdict), model))

        def _send_status(self, status: int, headers: dict):
            message = f"fake error {status}"
            if status == 401:
                token = self.headers.get("Authorization", "").removeprefix("Bearer ")
                message = f"Incorrect API key provided: {token}."
            error = {"message": message, "type": "fake_error", "code": None, "param": None}
            self._send_json(status, {"error": error}, headers)

        def _send_json(self, status: int, obj: dict, headers: dict | None = None):
            self._send(status, json.dumps(obj).encode(), "application/json", headers)

        def _send(self, status: int, data: bytes, content_type: str, headers: dict | None = None):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler


@contextmanager
def fake_openai_server(script: Iterable[tuple] | None = None) -> Iterator[FakeOpenAI]:
    """Serve a ``FakeOpenAI`` on 127.0.0.1 (a free port) for the duration of the ``with`` block."""
    state = FakeOpenAI(script)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(state))
    server.daemon_threads = True
    state.base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    # A short poll interval makes shutdown quick (it waits for the serving loop to notice).
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="fake-openai",
                              daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
