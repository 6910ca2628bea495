"""Property-based (hypothesis) fuzzing of what a client sends: the server's JSON handling of chat-completion
requests (random JSON, random message structures, raw bodies, content types, image URLs incl. remote and private
addresses, numbers at the edges) and prompts longer than the context window (library, cached path and server).

Derandomized (fixed seed, no example database), so CI sees the same cases on every run. Each test counts the cases
it ran against a floor (tests/fuzz_helpers.py, `CaseCounter`); `test_total_generated_cases` (last in the file)
checks them: together at least 1,278 cases. The contract: bad input raises `MiniGPTv2Error` (library) or gets a
4xx JSON error (server), nothing else escapes (never a 5xx), and accepted input gives a correct answer.
tests/serve/test_fuzz_server.py fuzzes the server further (sampling settings, remote image addresses).
"""
import base64
import json
from collections import Counter

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from fuzz_helpers import (ANSWER, EDGE_NUMBERS, JSON, SEEDS, SURROGATES, TEXT, USER_TEXT, CaseCounter, _save,
                          fuzz_settings, gen, instant_generate, mutated, tiny)  # noqa: F401 - tiny is a fixture
from minigptv2.errors import MiniGPTv2Error
from minigptv2.serve import server as srv

CASES = CaseCounter()


# =============================================================================================================
# 1. the server's JSON handling: 200 or a 4xx JSON error, never a 5xx
# =============================================================================================================
FUZZ_LIMITS = srv.Limits(max_body_bytes=100_000, max_image_pixels=50_000, max_tokens=64, default_max_tokens=16)


@pytest.fixture(scope="module")
def fuzz_client(tiny):
    model, processor = tiny
    engine = srv.Engine(model, processor, "tiny-fuzz", generate_fn=instant_generate, batch_wait_ms=0)
    try:
        with TestClient(srv.create_app(engine, FUZZ_LIMITS, webui=False), raise_server_exceptions=False) as c:
            yield c
    finally:
        engine.close()


def _data_url(data: bytes, mime="image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


SMALL_PNG = _save(Image.new("RGB", (20, 10), (200, 30, 30)), "PNG")
BIG_PNG = _save(Image.new("L", (300, 300)), "PNG")            # over FUZZ_LIMITS.max_image_pixels
URLS = st.sampled_from([_data_url(SMALL_PNG), _data_url(SEEDS[7], "image/jpeg"), _data_url(SEEDS[12], "image/gif"),
                        _data_url(BIG_PNG), _data_url(b"not an image"), _data_url(b""), "data:image/png;base64,@@@",
                        "data:image/png,raw", "data:", "http://10.0.0.1/x.png", "https://127.0.0.1/a.png",
                        "file:///etc/passwd", "ftp://x/y", "", "javascript:alert(1)", "data:;base64," + "A" * 7]) \
    | mutated().map(_data_url) | TEXT
PART = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": USER_TEXT | TEXT | JSON}),
    st.fixed_dictionaries({"type": st.just("image_url"), "image_url": st.fixed_dictionaries({"url": URLS}) | URLS
                           | JSON}),
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image_url", "audio", "input_image", ""]) | JSON},
                          optional={"text": JSON, "image_url": JSON}),
    JSON)
MESSAGE = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "developer", "tool", "USER", ""]) | JSON},
    optional={"content": USER_TEXT | TEXT | SURROGATES | st.lists(PART, max_size=3) | JSON, "name": TEXT})
NUMBER = (st.sampled_from(EDGE_NUMBERS) | st.floats(allow_nan=True, allow_infinity=True) | st.integers()
          | st.integers(-(10**400), 10**400))
PARAMS = {
    "model": st.sampled_from(["tiny-fuzz", "gpt-4"]) | JSON,
    "temperature": NUMBER | JSON, "top_p": NUMBER | JSON,
    "max_tokens": st.integers(-2, 600) | NUMBER | JSON, "max_completion_tokens": st.integers(-2, 600) | NUMBER | JSON,
    "stream": st.booleans() | JSON, "stream_options": st.sampled_from([{"include_usage": True}, {}]) | JSON,
    "user": TEXT | JSON, "n": st.sampled_from([1, 2]) | JSON, "stop": st.sampled_from([[], ["x"]]) | JSON,
    "logprobs": st.booleans() | JSON, "presence_penalty": st.sampled_from([0, 1]),
    "frequency_penalty": st.sampled_from([0, 1]), "tools": JSON, "seed": st.integers(),
}
BODY = st.one_of(
    st.fixed_dictionaries({"messages": st.lists(MESSAGE, max_size=4)},
                          optional={k: v for k, v in PARAMS.items()}),
    st.fixed_dictionaries({"messages": st.lists(st.fixed_dictionaries(   # well-formed conversations
        {"role": st.just("user"), "content": USER_TEXT}), min_size=1, max_size=1)},
        optional={"max_tokens": st.integers(1, 64), "stream": st.booleans(),
                  "temperature": st.sampled_from([0, 0.7]) | st.floats(srv.MIN_TEMPERATURE, 2),
                  "top_p": st.floats(0, 1, exclude_min=True)}),
    st.fixed_dictionaries({}, optional={k: v for k, v in PARAMS.items()} | {"messages": JSON}),
    JSON)
RAW_BODY = st.sampled_from([b"", b"{", b"[" * 50_000, b'{"messages": ' + b"[" * 50_000, b"\xff\xfe", b"nul",
                            b'{"messages": [{"role": "user", "content": "\\ud800 hi"}]}', b'{"\\udfff": 1}',
                            b'{"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": '
                            b'{"url": "http://\\ud800/"}}, {"type": "\\ud800"}]}]}',
                            b'{"messages": [{"role": "\\ud800", "content": "x"}], "n": "\\ud800"}',
                            b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
                            b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 1' + b"0" * 5000 + b"}",
                            b'{"messages": [{"role": "user", "content": "hi"}], "top_p": Infinity}',
                            b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 1e-300}',
                            b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 5e-324, "stream": true}',
                            b'{"messages": [{"role": "user", "content": "hi"}], "temperature": 1' + b"0" * 400 + b"}",
                            b'{"messages": [{"role": "user", "content": "hi"}]}',              # valid: a 200
                            b'{"messages": [{"role": "user", "content": "hi"}], "stream": true}']) | st.binary(
    max_size=200)
_server = CASES.counted("server_json", floor=950)


SERVER_OUTCOMES: Counter = Counter()      # (test, status) -> replies


def _check_reply(r, body, test: str):
    SERVER_OUTCOMES[test, r.status_code] += 1
    assert r.status_code < 500, (r.status_code, r.text[:500], json.dumps(body)[:500] if body is not None else None)
    if r.status_code == 200:
        if r.headers["content-type"].startswith("text/event-stream"):
            lines = [ln for ln in r.text.splitlines() if ln]
            assert lines[-1] == "data: [DONE]"
            chunks = [json.loads(ln[6:]) for ln in lines[:-1]]
            assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]) == ANSWER
        else:
            reply = r.json()
            assert reply["choices"][0]["message"]["content"] == ANSWER
            assert reply["boxes"][0]["box"] == [12, 40, 38, 71]
    else:
        assert 400 <= r.status_code < 500
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and isinstance(err["message"], str) and err["message"]


def _answered(test: str) -> int:
    return sum(n for (t, status), n in SERVER_OUTCOMES.items() if t == test and status == 200)


@given(body=BODY)
def _random_json_body(fuzz_client, body):
    _server()
    raw = json.dumps(body).encode()
    r = fuzz_client.post("/v1/chat/completions", content=raw, headers={"content-type": "application/json"})
    _check_reply(r, body, "json")


@pytest.mark.fuzz
def test_server_random_json_bodies_get_200_or_4xx(fuzz_client):
    fuzz_settings(1000)(_random_json_body)(fuzz_client)
    assert _answered("json") >= 100, SERVER_OUTCOMES        # valid requests get through, not only refusals


_server_raw = CASES.counted("server_raw_bodies", floor=290)


@given(raw=RAW_BODY, ctype=st.sampled_from(["application/json", "application/json; charset=utf-8", "text/plain",
                                            "", "application/x-www-form-urlencoded", "APPLICATION/JSON"]))
def _raw_body(fuzz_client, raw, ctype):
    _server_raw()
    headers = {"content-type": ctype} if ctype else {}
    r = fuzz_client.post("/v1/chat/completions", content=raw, headers=headers)
    _check_reply(r, None, "raw")
    if not ctype or ctype.split(";")[0].strip().lower() != "application/json":
        assert r.status_code == 415


@pytest.mark.fuzz
def test_server_raw_bodies_get_200_or_4xx(fuzz_client):
    fuzz_settings(300)(_raw_body)(fuzz_client)
    assert _answered("raw") >= 3, SERVER_OUTCOMES


# =============================================================================================================
# 2. over-long prompts: refused with a clear error, never silently cut (library, cached path and server)
# =============================================================================================================
_ctx = CASES.counted("context_window", floor=38)


@pytest.mark.fuzz
@fuzz_settings(40)
@given(words=st.integers(1, 600), max_new=st.integers(1, 64), has_image=st.booleans())
def test_over_long_prompts_are_refused_exactly_at_the_context_window(tiny, fuzz_client, words, max_new, has_image):
    _ctx()
    model, processor = tiny
    ctx = processor.config.max_context_len
    text = "[vqa] " + " ".join(["red"] * words)       # no outer spaces: the server strips message text
    n = len(processor.prompt_ids([text], has_image=has_image))
    image = Image.new("RGB", (20, 10)) if has_image else None
    fits = n + max_new <= ctx

    def no_model_generate(*a, **kw):      # stop right after the checks: the model itself is not run here
        raise _Reached()

    orig = model.language_model.generate
    model.language_model.generate = no_model_generate
    try:
        try:
            gen.generate(model, processor, [image], [text], max_new_tokens=max_new)
            raise AssertionError("unreachable")
        except _Reached:
            assert fits
        except MiniGPTv2Error as e:
            assert not fits and "context window" in str(e) and str(n) in str(e)
    finally:
        model.language_model.generate = orig
    msg = [{"role": "user", "content": ([{"type": "image_url", "image_url": {"url": _data_url(SMALL_PNG)}}]
                                        if has_image else []) + [{"type": "text", "text": text}]}]
    r = fuzz_client.post("/v1/chat/completions", json={"messages": msg, "max_tokens": max_new})
    if fits and max_new <= FUZZ_LIMITS.max_tokens:
        assert r.status_code == 200, r.text
    else:
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded", r.text
        assert str(n) in r.json()["error"]["message"]


class _Reached(Exception):
    pass


@pytest.mark.fuzz
def test_over_long_prompt_boundary_with_the_real_model(tiny):
    """At the boundary the real generate accepts, and the output never goes past the context window."""
    model, processor = tiny
    ctx = processor.config.max_context_len
    text = "[vqa] " + "red " * 400
    n = len(processor.prompt_ids([text], has_image=False))
    assert n < ctx
    [r] = gen.generate(model, processor, [None], [text], max_new_tokens=ctx - n)
    assert len(r.token_ids) <= ctx - n
    with pytest.raises(MiniGPTv2Error, match="context window"):
        gen.generate(model, processor, [None], [text], max_new_tokens=ctx - n + 1)
    with pytest.raises(MiniGPTv2Error, match="context window"):
        gen.generate_cached(model, processor, Image.new("RGB", (8, 8)), text, gen.PrefixCache(),
                            max_new_tokens=ctx)
    chat = gen.Chat(model, processor, None, max_new_tokens=ctx - n + 1)
    with pytest.raises(MiniGPTv2Error, match="context window"):
        chat.ask(text)
    assert chat.messages == []          # a refused turn leaves the history as it was



# =============================================================================================================
@pytest.mark.fuzz
def test_total_generated_cases(request):
    """Last in this file: on a full run of the file, every counted test above reached its floor of generated cases."""
    CASES.check(request)
