"""The OpenAI-compatible server: answers, streaming, batching, back-pressure, bad requests, the openai client.

A tiny random model answers garbage, so where a test needs a box in the answer, generation is constrained by
`ForceText` (a test-only logits processor passed to the real `generate`): the model, the prompt building, the
batching worker and the response code all run for real; only the choice of tokens is fixed.
"""
import base64
import concurrent.futures
import contextlib
import functools
import io
import json
import socket
import threading
import time

import httpx
import openai
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

from helpers import tiny_model
from minigptv2 import generate
from minigptv2.serve import engine as E
from minigptv2.serve import server as srv
from minigptv2.errors import MiniGPTv2Error

BOX = "{<12><40><38><71>}"
ANSWER = f"<p>red circle</p> {BOX}"      # what the forced model answers


class ForceText(LogitsProcessor):
    """Test-only: every row answers `text` then EOS (all other tokens are masked out)."""

    def __init__(self, processor, text):
        self.ids = processor.tok.encode(text) + [processor.tok.eos_id]

    def __call__(self, input_ids, scores):
        step = min(input_ids.shape[1], len(self.ids) - 1)   # inputs_embeds generation: input_ids = new tokens
        forced = torch.full_like(scores, -float("inf"))
        forced[:, self.ids[step]] = 0
        return forced


def unconstrained(fn):
    """The forced answers are the tests' own: box constraints (on by default in the server) are tested with the real
    model in tests/serve/test_server_decoding.py."""
    def gen(*a, **kw):
        return fn(*a, **{**kw, "constrain_boxes": False})
    return gen


def forced_generate(processor, text=ANSWER):
    return unconstrained(functools.partial(generate, logits_processor=LogitsProcessorList([ForceText(processor, text)])))


def png(w=200, h=100, colour=(200, 30, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), colour).save(buf, "PNG")
    return buf.getvalue()


def data_url(data: bytes, mime="image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def user(text, image_url=None):
    parts = [{"type": "text", "text": text}]
    if image_url:
        parts.insert(0, {"type": "image_url", "image_url": {"url": image_url}})
    return {"role": "user", "content": parts}


@contextlib.contextmanager
def live_server(app):
    """Run `app` with uvicorn on a free loopback port in a thread; yields the base URL."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    t = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    t.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert t.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        t.join(10)
        sock.close()


class Recorder:
    """A generate_fn that records each call's batch size and prompts, and can hold the worker at a gate."""

    def __init__(self, inner):
        self.inner, self.calls, self.gate = inner, [], threading.Event()
        self.gate.set()
        self.entered = threading.Event()

    def __call__(self, model, processor, images, prompts, **kw):
        assert isinstance(kw.get("streamer"), E.StepHook)      # the engine's per-step cancel check
        self.calls.append({"images": list(images), "prompts": list(prompts),
                           "kw": {k: v for k, v in kw.items() if k != "streamer"}})
        self.entered.set()
        assert self.gate.wait(30)
        return self.inner(model, processor, images, prompts, **kw)


@pytest.fixture(scope="module")
def mp(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("srv"), seed=1)


@pytest.fixture(scope="module")
def forced_engine(mp):
    model, proc = mp
    engine = srv.Engine(model, proc, "tiny-test", generate_fn=forced_generate(proc))
    yield engine
    engine.close()


LIMITS = srv.Limits(max_body_bytes=200_000, max_image_pixels=50_000, max_tokens=64, default_max_tokens=16)


@pytest.fixture(scope="module")
def client(forced_engine):
    with TestClient(srv.create_app(forced_engine, LIMITS, webui=False)) as c:
        yield c


def test_chat_completion_returns_text_and_boxes_in_pixels(client):
    r = client.post("/v1/chat/completions", json={
        "model": "whatever", "max_tokens": 20, "messages": [user("[refer] red circle", data_url(png(200, 100)))]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "tiny-test"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": ANSWER}
    assert body["choices"][0]["finish_reason"] == "stop"
    assert body["boxes"] == [{"phrase": "red circle", "box": [12, 40, 38, 71], "box_pixels": [24.0, 40.0, 76.0, 71.0]}]
    assert body["usage"]["completion_tokens"] == 13 and body["usage"]["prompt_tokens"] > 0


def test_streaming_sends_openai_chunks_then_done(client):
    req = {"stream": True, "stream_options": {"include_usage": True}, "max_tokens": 20,
           "messages": [user("[refer] red circle", data_url(png(100, 50)))]}
    with client.stream("POST", "/v1/chat/completions", json=req) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    chunks = [json.loads(ln[len("data: "):]) for ln in lines[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == ANSWER and len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) > 1
    final = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]][0]
    assert final["choices"][0]["finish_reason"] == "stop"
    assert final["boxes"][0]["box_pixels"] == [12.0, 20.0, 38.0, 35.5]
    assert chunks[-1]["usage"]["completion_tokens"] == 13


def test_real_model_streaming_matches_non_streaming(mp):
    model, proc = mp
    engine = srv.Engine(model, proc, "tiny")
    try:
        with TestClient(srv.create_app(engine, LIMITS, webui=False)) as c:
            req = {"max_tokens": 10, "messages": [user("[caption] describe", data_url(png()))]}
            plain = c.post("/v1/chat/completions", json=req).json()["choices"][0]["message"]["content"]
            with c.stream("POST", "/v1/chat/completions", json={**req, "stream": True}) as r:
                chunks = [json.loads(ln[6:]) for ln in r.iter_lines() if ln.startswith("data: {")]
        streamed = "".join(ch["choices"][0]["delta"].get("content", "") for ch in chunks)
        assert streamed.strip() == plain
    finally:
        engine.close()


def test_multi_turn_uses_the_first_image_and_earlier_turns(mp):
    model, proc = mp
    rec = Recorder(forced_generate(proc))
    engine = srv.Engine(model, proc, "tiny", generate_fn=rec)
    try:
        with TestClient(srv.create_app(engine, LIMITS, webui=False)) as c:
            msgs = [user("[refer] red circle", data_url(png(80, 60))), {"role": "assistant", "content": BOX},
                    {"role": "user", "content": "[identify] what is this " + BOX}]
            r = c.post("/v1/chat/completions", json={"messages": msgs, "max_tokens": 20})
        assert r.status_code == 200, r.text
        [call] = rec.calls
        assert call["images"][0].size == (80, 60)
        assert [m["role"] for m in call["prompts"][0]] == ["user", "assistant", "user"]
        assert call["prompts"][0][2]["content"] == "[identify] what is this " + BOX
        assert call["kw"] == {"max_new_tokens": 20, "do_sample": False, "constrain_boxes": True}
    finally:
        engine.close()


def _post(url, body, timeout=60):
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=timeout)


def test_concurrent_requests_share_one_generate_call(mp):
    """The first request holds the worker; four more queue up meanwhile and then run as one batch of 4."""
    model, proc = mp
    rec = Recorder(forced_generate(proc))
    rec.gate.clear()
    engine = srv.Engine(model, proc, "tiny", generate_fn=rec, max_batch=8, batch_wait_ms=20)
    body = {"max_tokens": 20, "messages": [user("[refer] red circle", data_url(png()))]}
    sampled = {**body, "temperature": 0.7, "top_p": 0.9}     # other settings: its own batch
    try:
        with live_server(srv.create_app(engine, LIMITS, webui=False)) as url, \
                concurrent.futures.ThreadPoolExecutor(8) as pool:
            first = pool.submit(_post, url, body)
            assert rec.entered.wait(30)
            rest = [pool.submit(_post, url, b) for b in (body, body, sampled, body, body)]
            deadline = time.monotonic() + 30
            while engine.queued() < 5:
                assert time.monotonic() < deadline, "requests did not queue"
                time.sleep(0.01)
            rec.gate.set()
            replies = [f.result() for f in [first, *rest]]
        assert [r.status_code for r in replies] == [200] * 6
        assert all(r.json()["boxes"][0]["box"] == [12, 40, 38, 71] for r in replies)
        assert sorted(len(c["images"]) for c in rec.calls) == [1, 1, 4]
        assert [c["kw"].get("do_sample") for c in rec.calls if len(c["images"]) == 1] == [False, True]
    finally:
        rec.gate.set()
        engine.close()


def test_full_queue_answers_503_with_retry_after(mp):
    model, proc = mp
    rec = Recorder(forced_generate(proc))
    rec.gate.clear()
    engine = srv.Engine(model, proc, "tiny", generate_fn=rec, max_queue=2)
    body = {"max_tokens": 20, "messages": [user("[refer] red circle", data_url(png()))]}
    try:
        with live_server(srv.create_app(engine, LIMITS, webui=False)) as url, \
                concurrent.futures.ThreadPoolExecutor(4) as pool:
            held = [pool.submit(_post, url, body)]
            assert rec.entered.wait(30)
            held += [pool.submit(_post, url, body) for _ in range(2)]
            deadline = time.monotonic() + 30
            while engine.queued() < 2:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            busy = _post(url, body)
            assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            assert "busy" in busy.json()["error"]["message"]
            rec.gate.set()
            assert [f.result().status_code for f in held] == [200, 200, 200]
    finally:
        rec.gate.set()
        engine.close()


@pytest.mark.parametrize("error,status", [(MiniGPTv2Error("the model refused this"), 400),
                                          (RuntimeError("a bug"), 500)])
@pytest.mark.parametrize("stream", [False, True])
def test_generation_errors_are_json_errors(mp, error, status, stream):
    def failing(*a, **kw):
        raise error

    engine = srv.Engine(*mp, "tiny", generate_fn=failing)
    try:
        with TestClient(srv.create_app(engine, LIMITS, webui=False), raise_server_exceptions=False) as c:
            r = c.post("/v1/chat/completions", json={"stream": stream, "messages": [user("[vqa] what?")]})
        assert r.status_code == status and r.headers["content-type"] == "application/json"
        assert ("refused" if status == 400 else "RuntimeError") in r.json()["error"]["message"]
    finally:
        engine.close()


class ScaleLogits(LogitsProcessor):
    """Test-only: multiplies the logits (runs before HF's temperature division), to reach far larger logits than
    any real model produces."""

    def __init__(self, scale):
        self.scale = scale

    def __call__(self, input_ids, scores):
        return scores * self.scale


@pytest.mark.parametrize("scale", [1.0, 1e6, 1e30])
def test_the_extreme_sampling_settings_sample_even_with_huge_logits(mp, scale):
    """The smallest accepted temperature with the smallest top_p (and the largest temperature) run the real
    sampling code, plain and streamed, without the inf / NaN probabilities that tinier temperatures cause."""
    fn = functools.partial(generate, logits_processor=LogitsProcessorList([ScaleLogits(scale)]))
    engine = srv.Engine(*mp, "tiny", generate_fn=fn)
    try:
        with TestClient(srv.create_app(engine, LIMITS, webui=False)) as c:
            for temperature, top_p in [(srv.MIN_TEMPERATURE, 5e-324), (srv.MIN_TEMPERATURE, 1), (2, 1), (2, 1e-300)]:
                for stream in (False, True):
                    r = c.post("/v1/chat/completions", json={"messages": [user("[vqa] what?")], "max_tokens": 6,
                                                             "temperature": temperature, "top_p": top_p,
                                                             "stream": stream})
                    assert r.status_code == 200, (temperature, top_p, stream, r.text)
                    if stream:
                        assert r.text.rstrip().endswith("data: [DONE]") and '"error"' not in r.text
                    else:
                        assert r.json()["usage"]["completion_tokens"] >= 1
    finally:
        engine.close()


def test_gen_settings_refuse_what_sampling_cannot_do():
    """The engine's own check (the web demo builds GenSettings directly)."""
    for bad in [dict(temperature=1e-300), dict(temperature=-0.5), dict(temperature=float("nan")),
                dict(temperature=2.5), dict(top_p=0.0), dict(top_p=1.5)]:
        with pytest.raises(MiniGPTv2Error):
            srv.GenSettings(5, **{"temperature": 0.7, **bad})
    with pytest.raises(MiniGPTv2Error, match="max_new_tokens"):
        srv.GenSettings(0)
    assert srv.GenSettings(5, 0.0, 0.3).top_p == 1.0 and srv.GenSettings(5, srv.MIN_TEMPERATURE).kwargs()["do_sample"]


def test_models_and_health(client):
    assert client.get("/v1/models").json()["data"][0]["id"] == "tiny-test"
    h = client.get("/health").json()
    assert h["status"] == "ok" and h["model"] == "tiny-test"


def _truncated_png():
    return png()[:60]


BAD = [   # (why, request kwargs for client.post, status, words in the error message)
    ("malformed JSON", dict(content=b'{"messages": [', headers={"content-type": "application/json"}), 400, "JSON"),
    ("JSON not an object", dict(json=[1, 2]), 400, "JSON object"),
    ("wrong content type", dict(content=b"hello", headers={"content-type": "text/plain"}), 415, "Content-Type"),
    ("missing messages", dict(json={"model": "x"}), 400, "messages"),
    ("empty messages", dict(json={"messages": []}), 400, "messages"),
    ("system message", dict(json={"messages": [{"role": "system", "content": "be nice"}, user("hi")]}), 400, "system"),
    ("unknown role", dict(json={"messages": [{"role": "tool", "content": "x"}]}), 400, "role"),
    ("not alternating", dict(json={"messages": [user("a"), user("b")]}), 400, "alternate"),
    ("ends with assistant", dict(json={"messages": [user("a"), {"role": "assistant", "content": "b"}]}), 400, "last"),
    ("no text", dict(json={"messages": [user("   ")]}), 400, "no text"),
    ("bad content", dict(json={"messages": [{"role": "user", "content": 5}]}), 400, "content"),
    ("bad part", dict(json={"messages": [{"role": "user", "content": [{"type": "audio"}]}]}), 400, "content[0]"),
    ("bad base64", dict(json={"messages": [user("a", "data:image/png;base64,@@not base64@@")]}), 400, "base64"),
    ("data URL not base64", dict(json={"messages": [user("a", "data:image/png,rawbytes")]}), 400, "data:"),
    ("non-image bytes", dict(json={"messages": [user("a", data_url(b"hello world"))]}), 400, "not a readable image"),
    ("truncated image", dict(json={"messages": [user("a", data_url(_truncated_png()))]}), 400, "image"),
    ("too many pixels", dict(json={"messages": [user("a", data_url(png(300, 300)))]}), 413, "pixels"),
    ("body too big", dict(json={"messages": [user("a" * 250_000)]}), 413, "limit"),
    ("two images", dict(json={"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": data_url(png())}},
        {"type": "image_url", "image_url": {"url": data_url(png())}}, {"type": "text", "text": "a"}]}]}),
     400, "one image"),
    ("image from assistant", dict(json={"messages": [user("a"), {"role": "assistant", "content": [
        {"type": "image_url", "image_url": {"url": data_url(png())}}]}, user("b")]}), 400, "user messages"),
    ("file URL", dict(json={"messages": [user("a", "file:///etc/passwd")]}), 400, "data: URL"),
    ("remote URL disabled", dict(json={"messages": [user("a", "http://example.com/cat.png")]}), 400,
     "--allow-remote-images"),
    ("max_tokens over cap", dict(json={"messages": [user("a")], "max_tokens": 65}), 400, "limit of 64"),
    ("max_tokens zero", dict(json={"messages": [user("a")], "max_tokens": 0}), 400, "positive integer"),
    ("max_tokens text", dict(json={"messages": [user("a")], "max_tokens": "ten"}), 400, "positive integer"),
    ("temperature negative", dict(json={"messages": [user("a")], "temperature": -1}), 400, "temperature"),
    ("temperature text", dict(json={"messages": [user("a")], "temperature": "hot"}), 400, "temperature"),
    ("temperature 1e-300", dict(json={"messages": [user("a")], "temperature": 1e-300}), 400, "send 0 for greedy"),
    ("temperature 5e-324 streamed", dict(json={"messages": [user("a")], "temperature": 5e-324, "stream": True}), 400,
     "send 0 for greedy"),
    ("temperature 1e-45", dict(json={"messages": [user("a")], "temperature": 1e-45}), 400, "too close to 0"),
    ("temperature 1e-38 streamed", dict(json={"messages": [user("a")], "temperature": 1e-38, "stream": True}), 400,
     "too close to 0"),
    ("temperature just under the minimum", dict(json={"messages": [user("a")], "temperature": 0.99e-5}), 400,
     "at least 1e-05"),
    ("temperature over 2", dict(json={"messages": [user("a")], "temperature": 2.0000001}), 400, "temperature"),
    ("temperature huge integer", dict(content=b'{"messages": [{"role": "user", "content": "a"}], "temperature": 1'
                                              + b"0" * 400 + b"}", headers={"content-type": "application/json"}),
     400, "temperature"),
    ("top_p huge negative integer", dict(content=b'{"messages": [{"role": "user", "content": "a"}], "top_p": -1'
                                                 + b"0" * 400 + b"}", headers={"content-type": "application/json"}),
     400, "top_p"),
    ("max_tokens huge integer", dict(content=b'{"messages": [{"role": "user", "content": "a"}], "max_tokens": 1'
                                             + b"0" * 4000 + b"}", headers={"content-type": "application/json"}),
     400, "limit of 64"),
    ("user not a string", dict(json={"messages": [user("a")], "user": {"id": 1}}), 400, "`user`"),
    ("include_usage not a bool", dict(json={"messages": [user("a")], "stream": True,
                                            "stream_options": {"include_usage": "yes"}}), 400, "include_usage"),
    ("temperature NaN", dict(content=b'{"messages": [{"role": "user", "content": "a"}], "temperature": NaN}',
                             headers={"content-type": "application/json"}), 400, "temperature"),
    ("top_p infinite", dict(content=b'{"messages": [{"role": "user", "content": "a"}], "top_p": Infinity}',
                            headers={"content-type": "application/json"}), 400, "top_p"),
    ("top_p zero", dict(json={"messages": [user("a")], "top_p": 0}), 400, "top_p"),
    ("n > 1", dict(json={"messages": [user("a")], "n": 2}), 400, "`n`"),
    ("stop", dict(json={"messages": [user("a")], "stop": ["x"]}), 400, "`stop`"),
    ("unknown parameter", dict(json={"messages": [user("a")], "tools": []}), 400, "tools"),
    ("stream not bool", dict(json={"messages": [user("a")], "stream": "yes"}), 400, "stream"),
    ("over the context window", dict(json={"messages": [user("red " * 600)], "max_tokens": 64}), 400,
     "context window"),
]


@pytest.mark.parametrize("why,kwargs,status,words", BAD, ids=[b[0] for b in BAD])
def test_bad_requests_get_a_4xx_naming_the_problem(client, why, kwargs, status, words):
    r = client.post("/v1/chat/completions", **kwargs)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert words in err["message"] and err["type"] == "invalid_request_error"


def test_openai_client(forced_engine):
    with live_server(srv.create_app(forced_engine, LIMITS, webui=False)) as url:
        oc = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        assert [m.id for m in oc.models.list()] == ["tiny-test"]
        messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": data_url(png())}},
                                                 {"type": "text", "text": "[refer] red circle"}]}]
        resp = oc.chat.completions.create(model="tiny-test", messages=messages, max_tokens=20)
        assert resp.choices[0].message.content == ANSWER and resp.choices[0].finish_reason == "stop"
        assert resp.model_extra["boxes"][0]["box_pixels"] == [24.0, 40.0, 76.0, 71.0]

        pieces, boxes = [], None
        for chunk in oc.chat.completions.create(model="tiny-test", messages=messages, max_tokens=20, stream=True):
            if chunk.choices and chunk.choices[0].delta.content:
                pieces.append(chunk.choices[0].delta.content)
            boxes = (chunk.model_extra or {}).get("boxes", boxes)
        assert "".join(pieces) == ANSWER and boxes[0]["box"] == [12, 40, 38, 71]

        with pytest.raises(openai.BadRequestError, match="limit of 64"):
            oc.chat.completions.create(model="tiny-test", messages=messages, max_tokens=1000)


def test_cli_serve_help(capsys):
    from minigptv2.cli import main

    with pytest.raises(SystemExit) as e:
        main(["serve", "--help"])
    assert e.value.code == 0 and "--allow-remote-images" in capsys.readouterr().out


def test_compile_is_on_for_a_gpu_by_default_and_warms_up_before_serving(mp):
    """`serve --compile auto` compiles on a GPU only; the warm-up sends one request through the worker with the
    compiled path, so the first client does not pay for compiling."""
    import torch

    assert srv.compile_wanted("auto", torch.device("cuda", 0)) and srv.compile_wanted("auto", "cuda")
    assert not srv.compile_wanted("auto", torch.device("cpu")) and not srv.compile_wanted("off", "cuda:0")
    assert srv.compile_wanted("on", "cpu")
    spread = {"language_model.model.layers.0": 0, "language_model.model.layers.1": "cpu"}   # --device auto, offloaded
    assert not srv.compile_wanted("auto", "cuda:0", spread) and srv.compile_wanted("auto", "cuda:0", {"": 0, "x": 1})
    with pytest.raises(MiniGPTv2Error, match="offloaded to the CPU or disk"):
        srv.compile_wanted("on", "cuda:0", spread)
    m, proc = mp
    rec = Recorder(lambda model, processor, images, prompts, **kw: [None] * len(images))   # compiling itself: not here
    engine = E.Engine(m, proc, generate_fn=rec, compile=True)
    try:
        assert engine.warm_up(max_new_tokens=2) > 0
    finally:
        engine.close()
    assert [(len(c["images"]), c["kw"]["compile"], c["kw"]["max_new_tokens"]) for c in rec.calls] == \
        [(1, True, 2), (1, True, 4)]
