"""Clients that leave, stall or are too many: cancellation of queued and running generation, the client timeout,
the queue bound.

Generated tokens are counted in the model's decode loop (`Steps`, a test-only logits processor: HF calls it once
per generated token), never from the responses. Where a test needs the disconnect to land at a given decode step,
`Steps` holds that step until the server has registered the cancellation (a condition with a generous deadline,
not a timed assertion): the count then shows how many tokens were generated after it.
"""
import asyncio
import concurrent.futures
import dataclasses
import functools
import json
import socket
import threading
import time

import httpx
import pytest
from transformers import LogitsProcessor, LogitsProcessorList

from helpers import tiny_model
from minigptv2 import generate
from minigptv2.serve import engine as E
from minigptv2.serve import server as srv
from minigptv2.errors import MiniGPTv2Error
from test_server import ForceText, Recorder, forced_generate, live_server, unconstrained, user

WORDS = "red " * 120        # one token per word, each streamed as soon as it is generated, and never an EOS
LIMITS = srv.Limits(max_body_bytes=200_000, max_image_pixels=50_000, max_tokens=100, default_max_tokens=16)
DEADLINE_S = 60


def wait_until(condition, what: str):
    deadline = time.monotonic() + DEADLINE_S
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for: {what}"
        time.sleep(0.01)


class Steps(LogitsProcessor):
    """Counts decode steps. At step `hold_at` it waits until `release()` is true (or the deadline passes)."""

    def __init__(self, hold_at=None, release=lambda: True):
        self.count, self.hold_at, self.release = 0, hold_at, release
        self.holding = threading.Event()

    def __call__(self, input_ids, scores):
        self.count += 1
        if self.count == self.hold_at:
            self.holding.set()
            deadline = time.monotonic() + DEADLINE_S
            while not self.release() and time.monotonic() < deadline:
                time.sleep(0.005)
        return scores


@pytest.fixture(scope="module")
def mp(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("clients"), seed=1)


def counted_engine(mp, hold_at, **kw):
    """An engine whose model answers WORDS; its decode steps are counted, and step `hold_at` is held until the
    engine has been asked to cancel something."""
    model, proc = mp
    engine = None
    steps = Steps(hold_at, lambda: engine.stats["cancel_requests"] > 0)
    fn = unconstrained(functools.partial(generate, logits_processor=LogitsProcessorList([steps, ForceText(proc, WORDS)])))
    engine = srv.Engine(model, proc, "tiny", generate_fn=fn, **kw)
    return engine, steps


def raw_request(body: dict) -> bytes:
    data = json.dumps(body).encode()
    return (b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(data)) + data


def read_response(s: socket.socket) -> tuple[bytes, bytes]:
    """(status line + headers, body) of one HTTP response with a Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += s.recv(65536) or b"\r\n\r\n"
    head, _, body = data.partition(b"\r\n\r\n")
    length = [int(ln.split(b":")[1]) for ln in head.split(b"\r\n") if ln.lower().startswith(b"content-length:")]
    while length and len(body) < length[0] and (chunk := s.recv(65536)):
        body += chunk
    return head, body


def port_of(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


# ---- clients that disconnect -------------------------------------------------------------------------------
def test_a_streamed_request_stops_within_one_step_of_the_disconnect(mp):
    engine, steps = counted_engine(mp, hold_at=2)
    app = srv.create_app(engine, LIMITS, webui=False)
    try:
        with live_server(app) as url, httpx.Client(timeout=DEADLINE_S) as client:
            body = {"stream": True, "max_tokens": 100, "messages": [user("[vqa] what?")]}
            with client.stream("POST", f"{url}/v1/chat/completions", json=body) as r:
                assert r.status_code == 200
                for line in r.iter_lines():       # read up to the first token's text, then hang up
                    if line.startswith("data: {") and json.loads(line[6:])["choices"][0]["delta"].get("content"):
                        break
            wait_until(lambda: engine.stats["cancelled_running"] == 1, "the generation to stop")
        assert steps.count <= 1 + 2, f"{steps.count} tokens generated; the client left after the first"
        assert app.state.stats["client_gone"] == 1 and engine.stats["generated"] == 0
    finally:
        engine.close()


def test_non_streamed_requests_whose_clients_left_are_never_generated(mp):
    """20 clients send a request and close the socket at once, while the worker is busy: none is generated."""
    model, proc = mp
    rec = Recorder(forced_generate(proc))
    rec.gate.clear()
    engine = srv.Engine(model, proc, "tiny", generate_fn=rec)
    app = srv.create_app(engine, LIMITS, webui=False)
    try:
        with live_server(app) as url, concurrent.futures.ThreadPoolExecutor(1) as pool:
            held = pool.submit(httpx.post, f"{url}/v1/chat/completions", timeout=DEADLINE_S,
                               json={"max_tokens": 20, "messages": [user("[refer] red circle")]})
            assert rec.entered.wait(DEADLINE_S)
            for i in range(20):
                with socket.create_connection(("127.0.0.1", port_of(url))) as s:
                    s.sendall(raw_request({"max_tokens": 20, "messages": [user(f"[vqa] question {i}")]}))
            wait_until(lambda: app.state.stats["client_gone"] == 20, "the server to see 20 clients leave")
            assert engine.queued() == 0          # the cancelled jobs left the queue at once
            rec.gate.set()
            assert held.result().status_code == 200
            wait_until(lambda: engine.stats["generated"] == 1, "the held request to finish")
        assert len(rec.calls) == 1 and rec.calls[0]["prompts"][0][0]["content"] == "[refer] red circle"
    finally:
        rec.gate.set()
        engine.close()


def test_a_running_non_streamed_request_stops_within_one_step_of_the_disconnect(mp):
    engine, steps = counted_engine(mp, hold_at=3)
    app = srv.create_app(engine, LIMITS, webui=False)
    try:
        with live_server(app) as url:
            with socket.create_connection(("127.0.0.1", port_of(url))) as s:
                s.sendall(raw_request({"max_tokens": 100, "messages": [user("[vqa] what?")]}))
                assert steps.holding.wait(DEADLINE_S)        # generation is under way
            wait_until(lambda: engine.stats["cancelled_running"] == 1, "the generation to stop")
        assert steps.count <= 3 + 1, f"{steps.count} tokens generated; the client left during the third"
        assert app.state.stats["client_gone"] == 1 and engine.stats["generated"] == 0
    finally:
        engine.close()


def test_a_cancelled_batch_mate_does_not_stop_the_batch():
    """StepHook (the per-step check): a batch stops only when every job in it is cancelled."""
    a, b = (E.Job(None, [], srv.GenSettings(5)) for _ in range(2))
    hook = E.StepHook([a, b])
    a.cancelled.set()
    hook.put(None)                  # b still wants its answer
    b.cancelled.set()
    with pytest.raises(E.Cancelled):
        hook.put(None)


def test_cancelling_a_waiting_job_frees_its_queue_slot(mp):
    model, proc = mp
    rec = Recorder(forced_generate(proc))
    rec.gate.clear()
    engine = srv.Engine(model, proc, "tiny", generate_fn=rec, max_queue=1)
    settings = srv.GenSettings(20)
    try:
        running = engine.submit(None, [{"role": "user", "content": "[vqa] a"}], settings)
        assert rec.entered.wait(DEADLINE_S)
        waiting = engine.submit(None, [{"role": "user", "content": "[vqa] b"}], settings)
        with pytest.raises(srv.Busy):
            engine.submit(None, [{"role": "user", "content": "[vqa] c"}], settings)
        engine.cancel(waiting)
        assert waiting.future.cancelled() and engine.queued() == 0
        last = engine.submit(None, [{"role": "user", "content": "[vqa] d"}], settings)
        rec.gate.set()
        assert running.future.result(DEADLINE_S).text and last.future.result(DEADLINE_S).text
        assert [c["prompts"][0][0]["content"] for c in rec.calls] == ["[vqa] a", "[vqa] d"]
    finally:
        rec.gate.set()
        engine.close()


def test_closing_the_web_demo_stream_cancels_its_job(mp):
    """Engine.stream (the web demo's path): a consumer that stops reading cancels the generation."""
    engine, steps = counted_engine(mp, hold_at=3)
    try:
        pieces = engine.stream(None, [{"role": "user", "content": "[vqa] what?"}], srv.GenSettings(100))
        assert next(pieces).strip() == "red"
        pieces.close()
        wait_until(lambda: engine.stats["cancelled_running"] == 1, "the generation to stop")
        assert steps.count <= 3 + 1
    finally:
        engine.close()


# ---- slow clients --------------------------------------------------------------------------------------------
def test_a_request_body_that_does_not_arrive_gets_a_408(mp):
    engine = srv.Engine(*mp, "tiny")
    try:
        with live_server(srv.create_app(engine, dataclasses.replace(LIMITS, client_timeout_s=0.5),
                                        webui=False)) as url:
            with socket.create_connection(("127.0.0.1", port_of(url)), timeout=DEADLINE_S) as s:
                s.sendall(raw_request({"messages": [user("[vqa] what?")]})[:-10])     # 10 bytes never come
                head, body = read_response(s)
            assert head.startswith(b"HTTP/1.1 408"), head
            assert json.loads(body)["error"]["code"] == "request_timeout"
            assert httpx.get(f"{url}/health").json()["status"] == "ok"
    finally:
        engine.close()


def test_a_stream_the_client_stops_reading_is_dropped_and_its_generation_cancelled(mp):
    """The ASGI app is driven directly: after the first content chunk the client's `send` never completes
    (a reader that stopped reading with full socket buffers), and it never disconnects."""
    engine, steps = counted_engine(mp, hold_at=3)
    app = srv.create_app(engine, dataclasses.replace(LIMITS, client_timeout_s=0.3), webui=False)
    data = json.dumps({"stream": True, "max_tokens": 100, "messages": [user("[vqa] what?")]}).encode()
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": "/v1/chat/completions", "raw_path": b"/v1/chat/completions",
             "root_path": "", "query_string": b"", "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 80),
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]}
    received, sent = [], []

    async def receive():
        if not received:
            received.append(1)
            return {"type": "http.request", "body": data, "more_body": False}
        await asyncio.Event().wait()           # never disconnects

    async def send(message):
        sent.append(message)
        if sum(m["type"] == "http.response.body" for m in sent) == 3:   # role, first token, then stuck
            await asyncio.Event().wait()

    try:
        asyncio.run(asyncio.wait_for(app(scope, receive, send), DEADLINE_S))
        wait_until(lambda: engine.stats["cancelled_running"] == 1, "the generation to stop")
        assert sent[0]["status"] == 200 and steps.count <= 3 + 1
        assert app.state.stats["client_gone"] == 1
    finally:
        engine.close()


# ---- the queue bound -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("flag,value", [("--max-queue", "0"), ("--max-queue", "-5"), ("--max-queue", "two"),
                                        ("--max-queue", "1.5"), ("--max-batch", "0"), ("--max-tokens", "0"),
                                        ("--batch-wait-ms", "-1"), ("--max-body-mb", "0"),
                                        ("--client-timeout", "nan"), ("--max-image-pixels", "0")])
def test_serve_refuses_bounds_that_would_mean_unbounded_or_nothing(capsys, flag, value):
    with pytest.raises(SystemExit) as e:
        srv.main([flag, value])
    assert e.value.code == 2 and flag in capsys.readouterr().err


def test_engine_refuses_an_unbounded_queue():
    for kw in [dict(max_queue=0), dict(max_queue=-1), dict(max_queue=None), dict(max_batch=0)]:
        with pytest.raises(MiniGPTv2Error, match="max_queue|max_batch"):
            srv.Engine(None, None, **kw)
