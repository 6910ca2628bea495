"""Load and abuse test of the real server: uvicorn in a thread on a free loopback port, a tiny model whose answer is
fixed by a test-only logits processor (the model, batching worker and HTTP stack all run for real).

* a wave of 200 requests, 32 in flight (threads + httpx), then a second wave of 100: every reply is 200 with the
  expected text and boxes (no 5xx; 503 + Retry-After would be overload, which a 64-deep queue never reaches
  here), and the second wave does not grow the process RSS by more than MAX_RSS_GROWTH_MB.
* overload: a short queue under 32 in flight gives 503s with Retry-After, never another 5xx, and the server
  recovers.
* abuse over real HTTP: malformed JSON, wrong content types, huge bodies (declared, sent, chunked), bad base64,
  remote image URLs to private / loopback / link-local addresses: all 4xx JSON errors, and the server stays up.
"""
import concurrent.futures
import contextlib
import functools
import gc
import json
import socket
import time

import httpx
import psutil
import pytest
from transformers import LogitsProcessorList

from helpers import tiny_model
from minigptv2 import generate
from minigptv2.serve import server as srv
from test_server import ForceText, data_url, live_server, png, unconstrained, user  # noqa: F401 - shared test helpers

ANSWER = "<p>red circle</p> {<12><40><38><71>}"
BOX = [12, 40, 38, 71]
N_REQUESTS, N_SECOND, IN_FLIGHT = 200, 100, 32     # the load wave, the memory-check wave, requests in flight
MAX_RSS_GROWTH_MB = 40
LIMITS = srv.Limits(max_body_bytes=1_000_000, max_image_pixels=250_000, max_tokens=64, default_max_tokens=32,
                    allow_remote_images=True, remote_timeout_s=2.0)


@pytest.fixture(scope="module")
def mp(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("load"), seed=1)


@contextlib.contextmanager
def serving(mp, **engine_kw):
    model, proc = mp
    fn = unconstrained(functools.partial(generate, logits_processor=LogitsProcessorList([ForceText(proc, ANSWER)])))
    engine = srv.Engine(model, proc, "tiny-load", generate_fn=fn, **engine_kw)
    try:
        with live_server(srv.create_app(engine, LIMITS, webui=False)) as url:
            yield url, engine
    finally:
        engine.close()


SIZES = [(200, 100), (64, 64), (100, 250), (33, 17), None]      # None: a text-only request


def request_for(i: int) -> tuple[dict, tuple | None]:
    size = SIZES[i % len(SIZES)]
    msgs = [user(f"[refer] red circle number {i}", data_url(png(*size)) if size else None)]
    if i % 7 == 3:      # a multi-turn conversation
        msgs = [msgs[0], {"role": "assistant", "content": "{<1><2><3><4>}"}, {"role": "user", "content": "and?"}]
    return {"messages": msgs, "max_tokens": 20, "stream": i % 10 == 1}, size   # a streamed request runs alone


def expected_boxes(size):
    box = {"phrase": "red circle", "box": BOX}
    if size:
        W, H = size
        box["box_pixels"] = [round(v, 2) for v in (BOX[0] / 100 * W, BOX[1] / 100 * H, BOX[2] / 100 * W,
                                                    BOX[3] / 100 * H)]
    return [box]


def check_reply(r: httpx.Response, body: dict, size) -> str:
    """'ok' for a correct 200, 'busy' for a 503 with Retry-After; anything else fails the test."""
    if r.status_code == 503:
        assert r.headers.get("retry-after") == "1" and "busy" in r.json()["error"]["message"]
        return "busy"
    assert r.status_code == 200, (r.status_code, r.text[:300])
    if body["stream"]:
        lines = [ln for ln in r.text.splitlines() if ln]
        assert lines[-1] == "data: [DONE]"
        chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == ANSWER
        final = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
        assert final[0]["choices"][0]["finish_reason"] == "stop" and final[0]["boxes"] == expected_boxes(size)
    else:
        reply = r.json()
        assert reply["choices"][0]["message"] == {"role": "assistant", "content": ANSWER}
        assert reply["choices"][0]["finish_reason"] == "stop"
        assert reply["boxes"] == expected_boxes(size)
    return "ok"


def wave(url: str, n: int, in_flight: int, offset: int = 0) -> dict:
    """n requests, `in_flight` at a time; returns {'ok': count, 'busy': count}."""
    with httpx.Client(base_url=url, timeout=60, limits=httpx.Limits(max_connections=in_flight)) as client, \
            concurrent.futures.ThreadPoolExecutor(in_flight) as pool:
        def one(i):
            body, size = request_for(offset + i)
            return check_reply(client.post("/v1/chat/completions", json=body), body, size)
        outcomes = list(pool.map(one, range(n)))
    return {k: outcomes.count(k) for k in ("ok", "busy")}


def rss_mb() -> float:
    gc.collect()
    return psutil.Process().memory_info().rss / 2**20


def test_200_requests_32_in_flight_then_a_second_wave(mp):
    t0 = time.monotonic()
    with serving(mp, max_batch=16, batch_wait_ms=10, max_queue=64) as (url, engine):
        first = wave(url, N_REQUESTS, IN_FLIGHT)
        rss1 = rss_mb()
        second = wave(url, N_SECOND, IN_FLIGHT, offset=N_REQUESTS)
        rss2 = rss_mb()
        assert httpx.get(f"{url}/health").json()["queued"] == 0
    elapsed = time.monotonic() - t0
    print(f"\nload: wave1={first} wave2={second} rss {rss1:.0f} -> {rss2:.0f} MB, {elapsed:.1f} s")
    # a 64-deep queue never fills with 32 in flight: every request is answered, and answered right
    assert first == {"ok": N_REQUESTS, "busy": 0} and second == {"ok": N_SECOND, "busy": 0}
    assert rss2 - rss1 < MAX_RSS_GROWTH_MB, f"RSS grew {rss2 - rss1:.1f} MB during the second wave"
    assert elapsed < 120     # ~20-60 s on a 2-core machine, depending on what else runs there


def test_overload_gives_503_with_retry_after_and_recovers(mp):
    with serving(mp, max_batch=2, batch_wait_ms=0, max_queue=2) as (url, engine):
        outcome = wave(url, 96, IN_FLIGHT)
        assert outcome["busy"] > 0 and outcome["ok"] > 0 and sum(outcome.values()) == 96, outcome
        body, size = request_for(0)
        assert check_reply(httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60), body, size) == "ok"


# ---- abuse over real HTTP ----------------------------------------------------------------------------------
PRIVATE_URLS = ["http://127.0.0.1/x.png", "http://127.0.0.1:22/", "http://10.1.2.3/x.png", "https://192.168.0.7/x.png",
                "http://172.16.0.1/", "http://169.254.169.254/latest/meta-data/", "http://[::1]/x.png",
                "http://[::ffff:127.0.0.1]/x.png", "http://[::ffff:a9fe:a9fe]/", "http://[fd00::1]/",
                "http://[fe80::1]/", "http://localhost/x.png", "http://LOCALHOST:8000/", "http://0.0.0.0/x.png",
                "http://100.64.0.1/x.png", "http://2130706433/", "http://0x7f.0.0.1/", "http://127.1/",
                "http://8.8.8.8@127.0.0.1/x.png", "http://127.0.0.1#@8.8.8.8/", "HTTP://127.0.0.1/x.png",
                "http://[64:ff9b::a00:1]/", "http://[2002:a00:1::]/", "http://224.0.0.1/", "http://255.255.255.255/"]


def _raw_http(port: int, request: bytes, timeout: float = 10) -> tuple[int, bytes]:
    """Send raw bytes, return (status, body): for headers httpx will not send (a lying Content-Length)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _content_length(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


def _content_length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


def _chunks(total: int, size: int = 65536):
    sent = 0
    while sent < total:
        yield b"x" * min(size, total - sent)
        sent += size


def test_abuse_gets_4xx_over_real_http(mp):
    good, good_size = request_for(0)
    big_image = data_url(png(600, 600))                                # 360k pixels > 250k: 413 from the header
    ok_json = {"content-type": "application/json"}
    cases = [   # (why, httpx.post kwargs, expected status)
        ("malformed JSON", dict(content=b'{"messages": [', headers=ok_json), 400),
        ("deeply nested JSON", dict(content=b"[" * 200_000, headers=ok_json), 400),
        ("invalid UTF-8", dict(content=b'{"messages": "\xff\xfe"}', headers=ok_json), 400),
        ("JSON array", dict(json=[good]), 400),
        ("empty body", dict(content=b"", headers=ok_json), 400),
        ("text/plain", dict(content=json.dumps(good).encode(), headers={"content-type": "text/plain"}), 415),
        ("no content type", dict(content=json.dumps(good).encode(), headers={"content-type": ""}), 415),
        ("form", dict(data={"messages": "x"}), 415),
        ("multipart", dict(files={"f": ("a.png", png(4, 4), "image/png")}), 415),
        ("json-ish type", dict(content=json.dumps(good).encode(), headers={"content-type": "application/jsonx"}), 415),
        ("body over the limit", dict(json={"messages": [user("red " * 300_000)]}), 413),
        ("chunked body over the limit", dict(content=_chunks(3_000_000), headers=ok_json), 413),
        ("image over the pixel limit", dict(json={"messages": [user("a", big_image)]}), 413),
        ("bad base64", dict(json={"messages": [user("a", "data:image/png;base64,@@not base64@@")]}), 400),
        ("base64 bad padding", dict(json={"messages": [user("a", "data:image/png;base64,iVBORw0KGgo")]}), 400),
        ("base64 of text", dict(json={"messages": [user("a", data_url(b"hello world"))]}), 400),
        ("truncated image", dict(json={"messages": [user("a", data_url(png(50, 50)[:70]))]}), 400),
        ("data URL without base64", dict(json={"messages": [user("a", "data:image/png,rawbytes")]}), 400),
        ("file URL", dict(json={"messages": [user("a", "file:///etc/passwd")]}), 400),
        ("gopher URL", dict(json={"messages": [user("a", "gopher://127.0.0.1:25/")]}), 400),
        ("max_tokens over cap", dict(json={**good, "max_tokens": 10**9}), 400),
        ("over-long prompt", dict(json={"messages": [user("red " * 600)], "max_tokens": 8}), 400),
    ] + [(f"private URL {u}", dict(json={"messages": [user("a", u)]}), 400) for u in PRIVATE_URLS]
    t0 = time.monotonic()
    with serving(mp) as (url, engine), httpx.Client(base_url=url, timeout=30) as client:
        for why, kwargs, status in cases:
            r = client.post("/v1/chat/completions", **kwargs)
            assert r.status_code == status, (why, r.status_code, r.text[:300])
            err = r.json()["error"]
            assert err["type"] == "invalid_request_error" and err["message"], why
            if why.startswith("private URL"):
                assert err["code"] == "forbidden_address" or "cannot resolve" in err["message"], (why, err)
        port = int(url.rsplit(":", 1)[1])
        # a Content-Length far over the limit is refused from the header, before any body is read
        status, body = _raw_http(port, b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: "
                                       b"application/json\r\nContent-Length: 100000000000\r\n\r\n{")
        assert status == 413 and b"request_too_large" in body
        # after all that: still healthy and still answering correctly
        assert client.get("/health").json()["status"] == "ok"
        assert check_reply(client.post("/v1/chat/completions", json=good), good, good_size) == "ok"
    assert time.monotonic() - t0 < 60
