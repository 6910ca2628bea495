"""OpenAI-compatible HTTP server for MiniGPT-v2, with the web demo mounted at `/`.

    pip install -e ".[serve]"
    minigptv2 serve                                     # embedded nano model on http://127.0.0.1:8000
    minigptv2 serve --model m7b --port 8000 --allow-remote-images
    minigptv2 serve --no-webui --max-batch 16           # API only

Endpoints
    POST /v1/chat/completions   OpenAI chat format; images as `image_url` content parts (base64 `data:` URLs;
                                http(s) URLs only with --allow-remote-images, and only to public addresses:
                                minigptv2/serve/remote.py). `temperature` (0 or absent = greedy, else in
                                [MIN_TEMPERATURE, 2]), `top_p`, `max_tokens`, `stream` (SSE, ends with
                                `data: [DONE]`), `constrain_boxes` (default true: [refer] / [detection] /
                                [grounding] answers write well-formed boxes only). The reply adds `boxes`: [{"phrase", "box" (0..100 grid),
                                "box_pixels" (x1, y1, x2, y2 of the sent image)}].
    GET  /v1/models, GET /health
    GET  /                      the Gradio demo (minigptv2/serve/webui.py)

Generation goes through the batching `Engine` (minigptv2/serve/engine.py): one worker thread owns the model; the queue
of waiting requests is bounded (--max-queue): when it is full the server answers 503 with Retry-After. Every bad
request gets a 4xx JSON error `{"error": {"message", "type", "param", "code"}}` naming the problem. A client that
disconnects has its request cancelled (dropped from the queue, or stopped within one decode step); a request body
that does not arrive within --client-timeout gets a 408, and a stream the client stops reading for that long is
dropped (and its generation cancelled).
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import collections
import json
import logging
import math
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from minigptv2.serve import remote
from minigptv2.generate import MAX_TEMPERATURE, MIN_TEMPERATURE, GenSettings
from minigptv2.serve.engine import Busy, Engine, Job, TokenStreamer
from minigptv2.devices import add_device_args, load_kwargs
from minigptv2.errors import MiniGPTv2Error
from minigptv2.generate import Result
from minigptv2.images import ImageTooLarge, load_image
from minigptv2.serve.remote import is_public_address  # noqa: F401 - part of this module's API

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(f"the server needs the `serve` extra: pip install 'minigptv2[serve]' ({e})") from None

log = logging.getLogger("minigptv2.serve.server")


# ---- limits ------------------------------------------------------------------------------------------------
@dataclass
class Limits:
    max_body_bytes: int = 20 * 2**20           # whole request body (an image travels base64 inside it)
    max_image_pixels: int = 16_000_000         # width × height of the decoded image
    max_tokens: int = 1024                     # cap on `max_tokens`
    default_max_tokens: int = 300              # when the request gives none (the generate default)
    allow_remote_images: bool = False
    remote_timeout_s: float = 10.0             # a whole remote-image fetch, redirects included
    client_timeout_s: float = 30.0             # to receive the request body; to send each streamed chunk


class ApiError(Exception):
    """A request we refuse: HTTP status + an OpenAI-style error body."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.headers = status, message, param, code, headers

    def response(self) -> JSONResponse:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        body = {"error": {"message": _utf8(self.message), "type": kind, "param": _utf8(self.param), "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _utf8(text: str | None) -> str | None:
    """Text that encodes as UTF-8: a lone surrogate from the request (JSON "\\ud800") is shown escaped."""
    return text if text is None else text.encode("utf-8", "backslashreplace").decode("utf-8")


def _show(value) -> str:
    """A request value for an error message: JSON, at most 50 characters."""
    try:
        text = json.dumps(value)
    except (ValueError, TypeError, RecursionError):
        text = type(value).__name__
    return text if len(text) <= 50 else text[:47] + "..."


# ---- request parsing ---------------------------------------------------------------------------------------
@dataclass
class ChatRequest:
    image: Image.Image | None
    conversation: list[dict]
    settings: GenSettings
    stream: bool
    include_usage: bool
    prompt_tokens: int


# accepted only with their default (no-op) values, so common clients that always send them work
NOOP_PARAMS = {"n": (None, 1), "presence_penalty": (None, 0), "frequency_penalty": (None, 0),
               "logprobs": (None, False), "stop": (None, [])}
KNOWN_PARAMS = {"model", "messages", "temperature", "top_p", "max_tokens", "max_completion_tokens", "stream",
                "stream_options", "user", "constrain_boxes"} | set(NOOP_PARAMS)


def _number(body, key, lo, hi, lo_open=False) -> float | None:
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ApiError(400, f"`{key}` must be a number, got {_show(v)}", key)
    try:
        f = float(v)
    except OverflowError:               # an integer literal too large for a float
        f = math.inf if v > 0 else -math.inf
    if not math.isfinite(f) or f < lo or f > hi or (lo_open and f == lo):      # NaN compares false with all
        lo_s = f"({lo}" if lo_open else f"[{lo}"
        raise ApiError(400, f"`{key}` must be in {lo_s}, {hi}], got {_show(v)}", key)
    return f


def parse_request(body: dict, limits: Limits, processor) -> ChatRequest:
    """Validate an OpenAI chat request and decode its image. Raises ApiError naming the problem."""
    unknown = sorted(set(body) - KNOWN_PARAMS)
    if unknown:
        raise ApiError(400, f"unsupported parameter(s): {', '.join(unknown)}", unknown[0])
    for key, allowed in NOOP_PARAMS.items():
        if key in body and body[key] not in allowed:
            raise ApiError(400, f"`{key}` is not supported (only {allowed[-1]!r}), got {_show(body[key])}", key)
    for key in ("model", "user"):
        if body.get(key) is not None and not isinstance(body[key], str):
            raise ApiError(400, f"`{key}` must be a string, got {_show(body[key])}", key)
    temperature = _number(body, "temperature", 0, MAX_TEMPERATURE) or 0.0
    if 0 < temperature < MIN_TEMPERATURE:      # dividing the logits by it would overflow: not a sampling setting
        raise ApiError(400, f"`temperature` {temperature!r} is too close to 0 to sample with: send 0 for greedy "
                            f"decoding, or at least {MIN_TEMPERATURE}", "temperature")
    top_p = _number(body, "top_p", 0, 1, lo_open=True) or 1.0
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = body.get(key)
    if max_tokens is None:
        max_tokens = min(limits.default_max_tokens, limits.max_tokens)
    elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ApiError(400, f"`{key}` must be a positive integer, got {_show(max_tokens)}", key)
    elif max_tokens > limits.max_tokens:
        raise ApiError(400, f"`{key}` {_show(max_tokens)} is over this server's limit of {limits.max_tokens}", key)
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise ApiError(400, f"`stream` must be true or false, got {_show(stream)}", "stream")
    constrain = body.get("constrain_boxes", True)
    if not isinstance(constrain, bool):
        raise ApiError(400, f"`constrain_boxes` must be true or false, got {_show(constrain)}", "constrain_boxes")
    opts = body.get("stream_options")
    opts = {} if opts is None else opts
    if not isinstance(opts, dict) or set(opts) - {"include_usage"} \
            or not isinstance(opts.get("include_usage", False), bool):
        raise ApiError(400, f"`stream_options` may only hold `include_usage` (true or false), got {_show(opts)}",
                       "stream_options")

    image, conversation = _parse_messages(body.get("messages"), limits)
    questions = [m["content"] for m in conversation if m["role"] == "user"]
    answers = [m["content"] for m in conversation if m["role"] == "assistant"]
    prompt_ids = processor.prompt_ids(questions, answers, has_image=image is not None)
    ctx = processor.config.max_context_len
    if len(prompt_ids) + max_tokens > ctx:
        raise ApiError(400, f"the conversation is {len(prompt_ids)} tokens; with max_tokens {max_tokens} it exceeds "
                            f"the context window of {ctx} tokens", "messages", "context_length_exceeded")
    return ChatRequest(image, conversation, GenSettings(max_tokens, temperature, top_p, constrain), bool(stream),
                       bool(opts.get("include_usage")), len(prompt_ids))


def _parse_messages(messages, limits: Limits):
    """-> (image or None, [{"role", "content": str}]) alternating user/assistant, ending with user."""
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "`messages` must be a non-empty list of {role, content}", "messages")
    image, image_at, conversation = None, None, []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise ApiError(400, f"{where} must be an object with `role` and `content`", where)
        role = m.get("role")
        if role in ("system", "developer"):
            raise ApiError(400, f"{where}: {role} messages are not supported (MiniGPT-v2 has no system prompt)", where)
        if role not in ("user", "assistant"):
            raise ApiError(400, f"{where}.role must be 'user' or 'assistant', got {json.dumps(role)[:50]}", where)
        expected = "user" if i % 2 == 0 else "assistant"
        if role != expected:
            raise ApiError(400, f"{where}: messages must alternate user / assistant starting with user; "
                                f"expected {expected}, got {role}", where)
        texts, content = [], m.get("content")
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for k, part in enumerate(content):
                pw = f"{where}.content[{k}]"
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    texts.append(part["text"])
                elif kind == "image_url" and role == "user":
                    if image is not None:
                        raise ApiError(400, f"{pw}: MiniGPT-v2 sees one image per conversation; {image_at} already "
                                            f"has one", pw)
                    url = part.get("image_url")
                    url = url.get("url") if isinstance(url, dict) else url
                    if not isinstance(url, str):
                        raise ApiError(400, f"{pw}.image_url.url must be a string", pw)
                    image, image_at = _load_image_url(url, limits, pw), pw
                elif kind == "image_url":
                    raise ApiError(400, f"{pw}: images are only accepted in user messages", pw)
                else:
                    raise ApiError(400, f"{pw} must be {{type: text, text}} or {{type: image_url, image_url: {{url}}}}",
                                   pw)
        else:
            raise ApiError(400, f"{where}.content must be a string or a list of content parts", where)
        text = " ".join(t.strip() for t in texts if t.strip())
        if not text:
            raise ApiError(400, f"{where} has no text", where)
        conversation.append({"role": role, "content": text})
    if conversation[-1]["role"] != "user":
        raise ApiError(400, "the last message must be from the user", "messages")
    return image, conversation


def _load_image_url(url: str, limits: Limits, where: str) -> Image.Image:
    if url.startswith("data:"):
        header, comma, payload = url.partition(",")
        if not comma or not header.endswith(";base64"):
            raise ApiError(400, f"{where}: a data: URL must look like data:image/png;base64,<data>", where)
        try:
            data = base64.b64decode("".join(payload.split()), validate=True)
        except (binascii.Error, ValueError) as e:
            raise ApiError(400, f"{where}: the image is not valid base64 ({e})", where, "invalid_base64") from None
    elif url.split(":", 1)[0].lower() in ("http", "https"):
        if not limits.allow_remote_images:
            raise ApiError(400, f"{where}: remote image URLs are disabled on this server (start it with "
                                f"--allow-remote-images, or send the image as a base64 data: URL)", where)
        try:
            data = remote.fetch(url, limits.max_body_bytes, limits.remote_timeout_s)
        except remote.FetchError as e:
            raise ApiError(e.status, f"{where}: {e}", where, e.code) from None
    else:
        raise ApiError(400, f"{where}: image_url must be a data: URL or an http(s) URL", where)
    if not data:
        raise ApiError(400, f"{where}: the image is empty", where)
    try:   # load_image refuses oversized images by their header, before decoding: a 413, not a generic 400
        return load_image(data, max_pixels=limits.max_image_pixels)
    except ImageTooLarge as e:
        raise ApiError(413, f"{where}: {e}", where, "image_too_large") from None
    except MiniGPTv2Error as e:
        raise ApiError(400, f"{where}: {e}", where, "invalid_image") from None


# ---- the app -----------------------------------------------------------------------------------------------
class ClientGone(Exception):
    """The client disconnected, or stopped reading a stream for longer than the client timeout."""


CLIENT_GONE = 499       # the status logged for a request whose client left (nobody receives it)


async def _read_json(request: Request, limits: Limits) -> dict:
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, f"Content-Type must be application/json, got {ctype or 'none'}")
    max_bytes = limits.max_body_bytes
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"the request body is {declared} bytes, over this server's limit of {max_bytes}",
                       code="request_too_large")

    async def read() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise ApiError(413, f"the request body is over this server's limit of {max_bytes} bytes",
                               code="request_too_large")
            chunks.append(chunk)
        return b"".join(chunks)
    try:
        raw = await asyncio.wait_for(read(), limits.client_timeout_s)
    except asyncio.TimeoutError:
        raise ApiError(408, f"the request body did not arrive within {limits.client_timeout_s:g} s",
                       code="request_timeout") from None
    except ClientDisconnect:
        raise ClientGone from None
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return body


async def _disconnected(request: Request) -> None:
    """Returns once the client has disconnected (or the response is complete). The body is read by then, so
    the only message left to receive is `http.disconnect`."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_gone(awaitable, gone: asyncio.Future):
    """Await `awaitable`, unless `gone` (a `_disconnected` task) finishes first: then raise ClientGone."""
    task = asyncio.ensure_future(awaitable)
    await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
    if task.done():
        return task.result()
    task.cancel()
    raise ClientGone


class _Stream(StreamingResponse):
    """A StreamingResponse whose every send must complete within `timeout` seconds: a client that stops reading
    loses its stream (whose generator then cancels the job) instead of holding it. The generator is always
    closed when the response ends, so its cleanup runs at once."""

    def __init__(self, content, timeout: float, **kw):
        super().__init__(content, **kw)
        self.timeout = timeout

    async def __call__(self, scope, receive, send):
        async def timed_send(message):
            try:
                await asyncio.wait_for(send(message), self.timeout)
            except asyncio.TimeoutError:
                raise ClientGone from None
        try:
            await super().__call__(scope, receive, timed_send)
        except ClientGone:
            log.warning("the client stopped reading a stream for %g s: dropped", self.timeout)
        finally:
            await self.body_iterator.aclose()


def _finish_reason(result: Result, processor) -> str:
    return "stop" if processor.tok.eos_id in result.token_ids else "length"


def _boxes(result: Result) -> list[dict]:
    W, H = result.image_size or (None, None)
    return [b.to_dict(W, H) for b in result.boxes]


def _usage(req: ChatRequest, result: Result) -> dict:
    n = len(result.token_ids)
    return {"prompt_tokens": req.prompt_tokens, "completion_tokens": n, "total_tokens": req.prompt_tokens + n}


def _sse(obj) -> str:
    return f"data: {json.dumps(obj)}\n\n"


def create_app(engine: Engine, limits: Limits | None = None, webui: bool = True) -> FastAPI:
    """The FastAPI app: the OpenAI-style API, and the Gradio demo at `/` when `webui`.

    `app.state.stats` counts `client_gone`: requests that ended because their client left."""
    limits = limits or Limits()
    processor = engine.processor
    app = FastAPI(title="MiniGPT-v2", docs_url="/v1/docs", redoc_url=None, openapi_url="/v1/openapi.json")
    app.state.stats = stats = collections.Counter()
    created = int(time.time())

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return exc.response()

    @app.exception_handler(Exception)
    async def _crash(request, exc: Exception):        # a bug: still a JSON error, details in the server log
        return ApiError(500, f"internal error: {type(exc).__name__}").response()

    @app.exception_handler(MiniGPTv2Error)
    async def _bad_input(request, exc: MiniGPTv2Error):   # e.g. the model refusing an over-long prompt
        return ApiError(400, str(exc)).response()

    @app.exception_handler(ClientGone)
    async def _client_gone(request, exc: ClientGone):    # nobody reads this; it names the case in the access log
        stats["client_gone"] += 1
        return ApiError(CLIENT_GONE, "the client closed the connection", code="client_closed_request").response()

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": engine.name, "queued": engine.queued(), "max_queue": engine.max_queue}

    @app.get("/v1/models")
    async def models():
        entry = {"id": engine.name, "object": "model", "created": created, "owned_by": "minigptv2"}
        if engine.processor.config.name == "nano":
            from minigptv2.config import NANO_SCOPE

            entry["description"] = NANO_SCOPE
        return {"object": "list", "data": [entry]}

    def submit(req: ChatRequest, streamer=None) -> Job:
        try:
            return engine.submit(req.image, req.conversation, req.settings, streamer)
        except Busy as e:
            raise ApiError(503, str(e), code="server_busy", headers={"Retry-After": "1"}) from None

    async def wait(job: Job, awaitable, gone):
        try:
            return await _unless_gone(awaitable, gone)
        except ClientGone:
            engine.cancel(job)
            raise

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await _read_json(request, limits)
        req = await run_in_threadpool(parse_request, body, limits, processor)   # image decoding / fetching
        cid, now = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        gone = asyncio.ensure_future(_disconnected(request))
        streaming = False
        try:
            if not req.stream:
                job = submit(req)
                result = await wait(job, asyncio.wrap_future(job.future), gone)
                return {"id": cid, "object": "chat.completion", "created": now, "model": engine.name,
                        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                                     "finish_reason": _finish_reason(result, processor)}],
                        "usage": _usage(req, result), "boxes": _boxes(result)}

            loop, pieces = asyncio.get_running_loop(), asyncio.Queue()

            def emit(piece):            # called from the worker thread
                try:
                    loop.call_soon_threadsafe(pieces.put_nowait, piece)
                except RuntimeError:    # the event loop is closed (shutdown): nobody is left to read it
                    pass
            streamer = TokenStreamer(processor.tok, emit)
            job = submit(req, streamer)
            first = await wait(job, pieces.get(), gone)   # wait for generation to start: its errors are still 4xx
            if first is None:
                await asyncio.wrap_future(job.future)      # raises if generation failed
            streaming = True
            return _Stream(_events(req, job, first, pieces, gone, cid, now), limits.client_timeout_s,
                           media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        finally:
            if not streaming:
                gone.cancel()

    async def _events(req: ChatRequest, job: Job, first, pieces: asyncio.Queue, gone, cid: str, now: int):
        def chunk(delta, finish=None, **extra):
            return _sse({"id": cid, "object": "chat.completion.chunk", "created": now, "model": engine.name,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})
        left = False        # the client disconnected, or stopped reading
        try:
            yield chunk({"role": "assistant", "content": ""})
            piece, sent = first, False
            while piece is not None:
                if not sent:
                    piece = piece.lstrip()
                if piece:
                    sent = True
                    yield chunk({"content": piece})
                piece = await _unless_gone(pieces.get(), gone)
            try:
                result = await _unless_gone(asyncio.wrap_future(job.future), gone)
            except ClientGone:
                raise
            except Exception as e:  # noqa: BLE001 - the status line is gone; report in the stream
                yield _sse({"error": {"message": str(e), "type": "server_error", "param": None, "code": None}})
            else:
                yield chunk({}, _finish_reason(result, processor), boxes=_boxes(result))
                if req.include_usage:
                    yield _sse({"id": cid, "object": "chat.completion.chunk", "created": now, "model": engine.name,
                                "choices": [], "usage": _usage(req, result)})
            yield "data: [DONE]\n\n"
        except ClientGone:
            left = True
        except BaseException:   # cancelled (the server saw the disconnect) or closed early (a stalled reader)
            left = True
            raise
        finally:
            gone.cancel()
            if not job.future.done():
                engine.cancel(job)
                left = True
            if left:
                stats["client_gone"] += 1

    if webui:
        from minigptv2.serve import webui as _webui

        app = _webui.mount(app, engine, limits)
    return app


def _at_least(lo, kind=int):
    """argparse type: a number >= lo (so 0 cannot silently mean 'unbounded')."""
    def parse(text):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a{'n integer' if kind is int else ' number'}: {text!r}") from None
        if not v >= lo or not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {text}")
        return v
    return parse


def _positive(text):
    v = _at_least(0, float)(text)
    if v == 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def parser() -> argparse.ArgumentParser:
    """The `minigptv2 serve` parser."""
    p = argparse.ArgumentParser(prog="minigptv2 serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder (default: the embedded nano model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    p.add_argument("--allow-remote-images", action="store_true",
                   help="let requests give http(s) image URLs (public addresses only)")
    p.add_argument("--no-webui", action="store_true", help="serve the API only")
    p.add_argument("--max-batch", type=_at_least(1), default=8, help="most requests in one generate call")
    p.add_argument("--batch-wait-ms", type=_at_least(0, float), default=10.0, help="how long to collect a batch")
    p.add_argument("--max-queue", type=_at_least(1), default=64, help="waiting requests before answering 503 (>= 1)")
    p.add_argument("--max-tokens", type=_at_least(1), default=Limits.max_tokens, help="cap on a request's max_tokens")
    p.add_argument("--max-body-mb", type=_positive, default=Limits.max_body_bytes / 2**20,
                   help="cap on a request body")
    p.add_argument("--max-image-pixels", type=_at_least(1), default=Limits.max_image_pixels,
                   help="cap on width × height")
    p.add_argument("--client-timeout", type=_positive, default=Limits.client_timeout_s,
                   help="seconds for a request body to arrive (else 408), and for a client to accept each streamed "
                        "chunk (else the stream is dropped and its generation cancelled)")
    add_device_args(p, quantize=True)
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="static KV cache (512 / 1024 / 2048 ... tokens) + compiled decode step, compiled before "
                        "serving for a batch of one by two warm-up requests (each other batch size compiles on first "
                        "use); auto: on when the model is on a GPU and not offloaded")
    p.add_argument("--prefix-cache-mb", type=_at_least(0, float), default=1024.0,
                   help="bytes kept of image embeddings + KV caches of prompts up to the image, for follow-up "
                        "questions about the same image (0: off)")
    return p


def compile_wanted(choice: str, device, device_map: dict | None = None) -> bool:
    """`--compile`: "on", "off", or "auto" = on where the model runs on a GPU (there the compiled step runs as CUDA
    graphs, without a kernel launch per operation; on a CPU compiling costs more than it saves). A model partly
    offloaded to the CPU or disk (`--device auto`, its `device_map`) is not compiled by transformers: auto is off
    there, and on is an error rather than a switch that does nothing."""
    placed = {str(v) for v in (device_map or {}).values()}
    offloaded = len(placed) > 1 and bool(placed & {"cpu", "disk"})
    if choice == "on" and offloaded:
        raise MiniGPTv2Error("--compile on: part of the model is offloaded to the CPU or disk (--device auto), "
                             "which compiled decoding does not support; use --compile off")
    return choice == "on" or (choice == "auto" and str(device).split(":")[0] == "cuda" and not offloaded)


def main(argv=None) -> int:
    a = parser().parse_args(argv)

    import uvicorn

    from minigptv2 import NANO_DIR, load

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    model_dir = Path(a.model) if a.model else NANO_DIR
    model, processor = load(model_dir, **load_kwargs(a))
    limits = Limits(max_body_bytes=int(a.max_body_mb * 2**20), max_image_pixels=a.max_image_pixels,
                    max_tokens=a.max_tokens, default_max_tokens=min(Limits.default_max_tokens, a.max_tokens),
                    allow_remote_images=a.allow_remote_images, client_timeout_s=a.client_timeout)
    compile = compile_wanted(a.compile, model.input_device, getattr(model, "hf_device_map", None))
    engine = Engine(model, processor, model_dir.resolve().name, max_batch=a.max_batch,
                    batch_wait_ms=a.batch_wait_ms, max_queue=a.max_queue, compile=compile,
                    prefix_cache_bytes=int(a.prefix_cache_mb * 2**20))
    if compile:
        print(f"minigptv2: compiling the decode step ... {engine.warm_up(limits.default_max_tokens):.1f} s",
              flush=True)
    app = create_app(engine, limits, webui=not a.no_webui)
    print(f"minigptv2: serving {model_dir} on http://{a.host}:{a.port}  (API: /v1/chat/completions"
          f"{', demo: /' if not a.no_webui else ''})", flush=True)
    uvicorn.run(app, host=a.host, port=a.port, log_level="info")
    return 0


if __name__ == "__main__":
    from minigptv2.cli import run

    raise SystemExit(run(main))
