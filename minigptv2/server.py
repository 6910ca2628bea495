"""OpenAI-compatible HTTP server for MiniGPT-v2, with the web demo mounted at `/`.

    pip install -e ".[serve]"
    minigptv2 serve                                     # embedded nano model on http://127.0.0.1:8000
    minigptv2 serve --model m7b --port 8000 --allow-remote-images
    minigptv2 serve --no-webui --max-batch 16           # API only

Endpoints
    POST /v1/chat/completions   OpenAI chat format; images as `image_url` content parts (base64 `data:` URLs;
                                http(s) URLs only with --allow-remote-images, never to private / loopback /
                                link-local addresses). `temperature` (0 or absent = greedy), `top_p`,
                                `max_tokens`, `stream` (SSE, ends with `data: [DONE]`). The reply adds `boxes`:
                                [{"phrase", "box" (0..100 grid), "box_pixels" (x1, y1, x2, y2 of the sent image)}].
    GET  /v1/models, GET /health
    GET  /                      the Gradio demo (minigptv2/webui.py)

One worker thread owns the model: requests that arrive within --batch-wait-ms of each other (up to --max-batch)
and share generation settings go through one batched `generate` call; a streamed request runs alone. The queue
of waiting requests is bounded (--max-queue): when it is full the server answers 503 with Retry-After. Every bad
request gets a 4xx JSON error `{"error": {"message", "type", "param", "code"}}` naming the problem.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import concurrent.futures
import http.client
import ipaddress
import json
import math
import os
import queue
import socket
import ssl
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from transformers import TextStreamer

from minigptv2.errors import MiniGPTv2Error
from minigptv2.generate import Result, generate
from minigptv2.images import ImageTooLarge, load_image

try:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, StreamingResponse
    from starlette.concurrency import run_in_threadpool
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(f"the server needs the `serve` extra: pip install 'minigptv2[serve]' ({e})") from None


# ---- limits ------------------------------------------------------------------------------------------------
@dataclass
class Limits:
    max_body_bytes: int = 20 * 2**20           # whole request body (an image travels base64 inside it)
    max_image_pixels: int = 16_000_000         # width × height of the decoded image
    max_tokens: int = 1024                     # cap on `max_tokens`
    default_max_tokens: int = 300              # when the request gives none (the generate default)
    allow_remote_images: bool = False
    remote_timeout_s: float = 10.0


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


class Busy(Exception):
    """The request queue is full."""


# ---- the batching engine -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class GenSettings:
    """Generation settings of one request; requests with equal settings may share a batch."""
    max_new_tokens: int
    temperature: float = 0.0                  # 0 = greedy
    top_p: float = 1.0

    def __post_init__(self):
        if self.temperature == 0:               # top_p means nothing when greedy: let such requests batch together
            object.__setattr__(self, "top_p", 1.0)

    def kwargs(self) -> dict:
        kw = {"max_new_tokens": self.max_new_tokens, "do_sample": self.temperature > 0}
        if kw["do_sample"]:
            kw.update(temperature=self.temperature, top_p=self.top_p)
        return kw


class TokenStreamer(TextStreamer):
    """HF streamer that hands each finished text piece to `emit`; `close()` emits None (the end marker)."""

    def __init__(self, tokenizer, emit):
        super().__init__(tokenizer, skip_prompt=False)
        self.emit = emit

    def on_finalized_text(self, text: str, stream_end: bool = False):
        if text:
            self.emit(text)

    def close(self):
        self.emit(None)


@dataclass
class Job:
    image: Image.Image | None
    conversation: list[dict]
    settings: GenSettings
    streamer: TokenStreamer | None = None
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


class Engine:
    """Owns the model. One worker thread runs every `generate` call, batching jobs that arrive together.

    `generate_fn` has the signature of `minigptv2.generate` (tests pass an instrumented one)."""

    def __init__(self, model, processor, name: str = "minigptv2", *, generate_fn=generate, max_batch: int = 8,
                 batch_wait_ms: float = 10.0, max_queue: int = 64):
        self.model, self.processor, self.name = model, processor, name
        self.generate_fn = generate_fn
        self.max_batch, self.batch_wait = max(1, max_batch), batch_wait_ms / 1000
        self.max_queue = max_queue
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._thread = threading.Thread(target=self._run, name="minigptv2-batcher", daemon=True)
        self._thread.start()

    # -- submitting --
    def submit(self, image, conversation, settings: GenSettings, streamer: TokenStreamer | None = None):
        """Queue one request; returns a concurrent Future of its `Result`. Raises Busy when the queue is full."""
        job = Job(image, conversation, settings, streamer)
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise Busy(f"the server is busy: {self.max_queue} requests are already waiting") from None
        return job.future

    def stream(self, image, conversation, settings: GenSettings):
        """Blocking generator for the web demo: yields text pieces, then the final `Result`."""
        pieces: queue.Queue = queue.Queue()
        fut = self.submit(image, conversation, settings, TokenStreamer(self.processor.tok, pieces.put))
        while (piece := pieces.get()) is not None:
            yield piece
        yield fut.result()

    def queued(self) -> int:
        return self._queue.qsize()

    def close(self):
        try:
            self._queue.put(None, timeout=1)
        except queue.Full:
            pass

    # -- the worker --
    def _run(self):
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs, deadline = [job], time.monotonic() + self.batch_wait
            while len(jobs) < self.max_batch:
                left = deadline - time.monotonic()
                try:
                    nxt = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)   # stop after this round
                    break
                jobs.append(nxt)
            # drop jobs whose caller went away (a cancelled request); the rest can no longer be cancelled
            for j in [j for j in jobs if not j.future.set_running_or_notify_cancel()]:
                jobs.remove(j)
                if j.streamer:
                    j.streamer.close()
            groups: dict = {}
            for j in jobs:   # a streamed job runs alone (HF streamers take batch size 1)
                groups.setdefault(id(j) if j.streamer else j.settings, []).append(j)
            for group in groups.values():
                self._generate(group)

    def _generate(self, group: list[Job]):
        streamer = group[0].streamer
        try:
            kw = group[0].settings.kwargs()
            if streamer is not None:
                kw["streamer"] = streamer
            results = self.generate_fn(self.model, self.processor, [j.image for j in group],
                                       [j.conversation for j in group], **kw)
            for j, r in zip(group, results):
                j.future.set_result(r)
        except MiniGPTv2Error as e:
            if len(group) > 1:    # one bad request must not fail its batch-mates: retry each alone
                for j in group:
                    self._generate([j])
            else:
                group[0].future.set_exception(e)
        except BaseException as e:  # noqa: BLE001 - handed to the waiting request
            for j in group:
                if not j.future.done():
                    j.future.set_exception(e)
        finally:
            if streamer is not None:
                streamer.close()


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
                "stream_options", "user"} | set(NOOP_PARAMS)


def _number(body, key, lo, hi, lo_open=False):
    v = body.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ApiError(400, f"`{key}` must be a number, got {json.dumps(v)[:50]}", key)
    if not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo):      # NaN compares false with all
        lo_s = f"({lo}" if lo_open else f"[{lo}"
        raise ApiError(400, f"`{key}` must be in {lo_s}, {hi}], got {v}", key)
    return float(v)


def parse_request(body: dict, limits: Limits, processor) -> ChatRequest:
    """Validate an OpenAI chat request and decode its image. Raises ApiError naming the problem."""
    unknown = sorted(set(body) - KNOWN_PARAMS)
    if unknown:
        raise ApiError(400, f"unsupported parameter(s): {', '.join(unknown)}", unknown[0])
    for key, allowed in NOOP_PARAMS.items():
        if key in body and body[key] not in allowed:
            raise ApiError(400, f"`{key}` is not supported (only {allowed[-1]!r}), got {json.dumps(body[key])[:50]}",
                           key)
    if "model" in body and not isinstance(body["model"], str):
        raise ApiError(400, "`model` must be a string", "model")
    temperature = _number(body, "temperature", 0, 2) or 0.0
    top_p = _number(body, "top_p", 0, 1, lo_open=True) or 1.0
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    max_tokens = body.get(key)
    if max_tokens is None:
        max_tokens = min(limits.default_max_tokens, limits.max_tokens)
    elif isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise ApiError(400, f"`{key}` must be a positive integer, got {json.dumps(max_tokens)[:50]}", key)
    elif max_tokens > limits.max_tokens:
        raise ApiError(400, f"`{key}` {max_tokens} is over this server's limit of {limits.max_tokens}", key)
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise ApiError(400, "`stream` must be true or false", "stream")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict) or set(opts) - {"include_usage"}:
        raise ApiError(400, "`stream_options` may only hold `include_usage`", "stream_options")

    image, conversation = _parse_messages(body.get("messages"), limits)
    questions = [m["content"] for m in conversation if m["role"] == "user"]
    answers = [m["content"] for m in conversation if m["role"] == "assistant"]
    prompt_ids = processor.prompt_ids(questions, answers, has_image=image is not None)
    ctx = processor.config.max_context_len
    if len(prompt_ids) + max_tokens > ctx:
        raise ApiError(400, f"the conversation is {len(prompt_ids)} tokens; with max_tokens {max_tokens} it exceeds "
                            f"the context window of {ctx} tokens", "messages", "context_length_exceeded")
    return ChatRequest(image, conversation, GenSettings(max_tokens, temperature, top_p), bool(stream),
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
        data = fetch_remote(url, limits.max_body_bytes, limits.remote_timeout_s, where)
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


# ---- remote images (only with --allow-remote-images) --------------------------------------------------------
NAT64 = ipaddress.ip_network("64:ff9b::/96")


def is_public_address(addr: str) -> bool:
    """True for a globally routable unicast address (not private, loopback, link-local, reserved, multicast…)."""
    ip = ipaddress.ip_address(addr.split("%", 1)[0])
    if ip.version == 6:   # IPv6 forms that carry an IPv4 address: judge the IPv4 address
        if ip.ipv4_mapped or ip.sixtofour:
            ip = ip.ipv4_mapped or ip.sixtofour
        elif ip in NAT64:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip.is_global and not ip.is_multicast


def fetch_remote(url: str, max_bytes: int, timeout: float, where: str = "image_url") -> bytes:
    """GET an image over http(s). Every address the host resolves to must be public, and the connection goes
    to a checked address (no second DNS lookup to rebind). Redirects are not followed."""
    u = urllib.parse.urlsplit(url)
    try:
        host, port = u.hostname, u.port or (443 if u.scheme == "https" else 80)
    except ValueError:
        raise ApiError(400, f"{where}: bad URL {url[:100]!r}", where) from None
    if not host:
        raise ApiError(400, f"{where}: the URL has no host", where)
    try:
        addrs = sorted({info[4][0] for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})
    except (socket.gaierror, UnicodeError) as e:
        raise ApiError(400, f"{where}: cannot resolve host {host!r} ({e})", where) from None
    for a in addrs:
        if not is_public_address(a):
            raise ApiError(400, f"{where}: host {host!r} resolves to {a}, a private / loopback / link-local "
                                f"address; refused", where, "forbidden_address")
    path = (u.path or "/") + (f"?{u.query}" if u.query else "")
    try:
        sock = socket.create_connection((addrs[0], port), timeout=timeout)
        if u.scheme == "https":
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
            conn = http.client.HTTPSConnection(host, port, timeout=timeout)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.sock = sock     # http.client uses a set socket instead of connecting by name
        try:
            conn.request("GET", path, headers={"User-Agent": "minigptv2-server", "Accept": "image/*"})
            resp = conn.getresponse()
            if resp.status != 200:
                raise ApiError(400, f"{where}: fetching {url[:100]} gave HTTP {resp.status} (redirects are not "
                                    f"followed)", where)
            data = resp.read(max_bytes + 1)
        finally:
            conn.close()
    except (OSError, http.client.HTTPException) as e:
        raise ApiError(400, f"{where}: cannot fetch {url[:100]}: {e}", where) from None
    if len(data) > max_bytes:
        raise ApiError(413, f"{where}: the remote image is over {max_bytes} bytes", where, "image_too_large")
    return data


# ---- the app -----------------------------------------------------------------------------------------------
async def _read_json(request: Request, max_bytes: int) -> dict:
    ctype = request.headers.get("content-type", "")
    if ctype.split(";")[0].strip().lower() != "application/json":
        raise ApiError(415, f"Content-Type must be application/json, got {ctype or 'none'}")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"the request body is {declared} bytes, over this server's limit of {max_bytes}",
                       code="request_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise ApiError(413, f"the request body is over this server's limit of {max_bytes} bytes",
                           code="request_too_large")
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except (ValueError, RecursionError) as e:
        raise ApiError(400, f"the request body is not valid JSON: {e}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_json")
    return body


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
    """The FastAPI app: the OpenAI-style API, and the Gradio demo at `/` when `webui`."""
    limits = limits or Limits()
    processor = engine.processor
    app = FastAPI(title="MiniGPT-v2", docs_url="/v1/docs", redoc_url=None, openapi_url="/v1/openapi.json")
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

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": engine.name, "queued": engine.queued(), "max_queue": engine.max_queue}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": engine.name, "object": "model", "created": created,
                                            "owned_by": "minigptv2"}]}

    def submit(req: ChatRequest, streamer=None) -> asyncio.Future:
        try:
            return asyncio.wrap_future(engine.submit(req.image, req.conversation, req.settings, streamer))
        except Busy as e:
            raise ApiError(503, str(e), code="server_busy", headers={"Retry-After": "1"}) from None

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        body = await _read_json(request, limits.max_body_bytes)
        req = await run_in_threadpool(parse_request, body, limits, processor)   # image decoding / fetching
        cid, now = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())
        if not req.stream:
            result = await submit(req)
            return {"id": cid, "object": "chat.completion", "created": now, "model": engine.name,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                                 "finish_reason": _finish_reason(result, processor)}],
                    "usage": _usage(req, result), "boxes": _boxes(result)}

        loop, pieces = asyncio.get_running_loop(), asyncio.Queue()
        streamer = TokenStreamer(processor.tok, lambda p: loop.call_soon_threadsafe(pieces.put_nowait, p))
        fut = submit(req, streamer)
        first = await pieces.get()          # wait for generation to start, so that its errors are still a 4xx
        if first is None:
            await fut                       # raises if generation failed

        def chunk(delta, finish=None, **extra):
            return _sse({"id": cid, "object": "chat.completion.chunk", "created": now, "model": engine.name,
                         "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})

        async def events():
            yield chunk({"role": "assistant", "content": ""})
            piece, sent = first, False
            while piece is not None:
                if not sent:
                    piece = piece.lstrip()
                if piece:
                    sent = True
                    yield chunk({"content": piece})
                piece = await pieces.get()
            try:
                result = await fut
            except Exception as e:  # noqa: BLE001 - the status line is gone; report in the stream
                yield _sse({"error": {"message": str(e), "type": "server_error", "param": None, "code": None}})
            else:
                yield chunk({}, _finish_reason(result, processor), boxes=_boxes(result))
                if req.include_usage:
                    yield _sse({"id": cid, "object": "chat.completion.chunk", "created": now, "model": engine.name,
                                "choices": [], "usage": _usage(req, result)})
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    if webui:
        from minigptv2 import webui as _webui

        app = _webui.mount(app, engine, limits)
    return app


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="minigptv2 serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="model folder (default: the embedded nano model)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--allow-remote-images", action="store_true",
                   help="let requests give http(s) image URLs (public addresses only)")
    p.add_argument("--no-webui", action="store_true", help="serve the API only")
    p.add_argument("--max-batch", type=int, default=8, help="most requests in one generate call")
    p.add_argument("--batch-wait-ms", type=float, default=10.0, help="how long to collect a batch")
    p.add_argument("--max-queue", type=int, default=64, help="waiting requests before answering 503")
    p.add_argument("--max-tokens", type=int, default=Limits.max_tokens, help="cap on a request's max_tokens")
    p.add_argument("--max-body-mb", type=float, default=Limits.max_body_bytes / 2**20, help="cap on a request body")
    p.add_argument("--max-image-pixels", type=int, default=Limits.max_image_pixels, help="cap on width × height")
    a = p.parse_args(argv)

    import uvicorn

    from minigptv2 import NANO_DIR, load

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    model_dir = Path(a.model) if a.model else NANO_DIR
    model, processor = load(model_dir)
    limits = Limits(max_body_bytes=int(a.max_body_mb * 2**20), max_image_pixels=a.max_image_pixels,
                    max_tokens=a.max_tokens, default_max_tokens=min(Limits.default_max_tokens, a.max_tokens),
                    allow_remote_images=a.allow_remote_images)
    engine = Engine(model, processor, model_dir.resolve().name, max_batch=a.max_batch,
                    batch_wait_ms=a.batch_wait_ms, max_queue=a.max_queue)
    app = create_app(engine, limits, webui=not a.no_webui)
    print(f"minigptv2: serving {model_dir} on http://{a.host}:{a.port}  (API: /v1/chat/completions"
          f"{', demo: /' if not a.no_webui else ''})", flush=True)
    uvicorn.run(app, host=a.host, port=a.port, log_level="info")
    return 0
