"""The batching engine behind the server and the web demo: one worker thread owns the model.

    engine = Engine(model, processor, "nano", max_batch=8, batch_wait_ms=10, max_queue=64)
    job = engine.submit(image, [{"role": "user", "content": "[refer] red circle"}], GenSettings(20))
    job.future.result()                   # a generate.Result; or engine.cancel(job) when the caller leaves
    for piece in engine.stream(image, conversation, GenSettings(20)): ...   # text pieces, then the Result

Requests that arrive within `batch_wait_ms` of each other (up to `max_batch`) and share generation settings go
through one batched `generate` call; a streamed request runs alone. At most `max_queue` requests wait; more raise
`Busy`. A cancelled request that still waits is dropped at once; a running one stops within one decode step
(`StepHook`, the per-step callback HF `generate` calls for its streamer).
"""
from __future__ import annotations

import collections
import concurrent.futures
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from PIL import Image
from transformers import TextStreamer
from transformers.generation.streamers import BaseStreamer

from minigptv2.errors import MiniGPTv2Error
from minigptv2.generate import GenSettings, PrefixCache, generate, generate_cached

log = logging.getLogger("minigptv2.serve.engine")


class Busy(Exception):
    """The request queue is full (or the engine is closed)."""


class Cancelled(Exception):
    """Generation of a batch stopped because every request in it was cancelled."""


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


@dataclass(eq=False)
class Job:
    image: Image.Image | None
    conversation: list[dict]
    settings: GenSettings
    streamer: TokenStreamer | None = None
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    cancelled: threading.Event = field(default_factory=threading.Event)


class StepHook(BaseStreamer):
    """Given to HF `generate` as its streamer, so it runs after every decode step (`put` gets the new tokens):
    raises Cancelled as soon as every job of the batch is cancelled, else forwards the tokens to a streamed job's
    TokenStreamer. HF streamers take batch size 1, this hook any batch (it only forwards for one job)."""

    def __init__(self, jobs: list[Job]):
        self.jobs = jobs
        self.inner = jobs[0].streamer if len(jobs) == 1 else None

    def put(self, value):
        if all(j.cancelled.is_set() for j in self.jobs):
            raise Cancelled(f"all {len(self.jobs)} request(s) of the batch were cancelled")
        if self.inner is not None:
            self.inner.put(value)

    def end(self):
        if self.inner is not None:
            self.inner.end()


class Engine:
    """Owns the model. One worker thread runs every `generate` call, batching jobs that arrive together.

    `generate_fn` has the signature of `minigptv2.generate` (tests pass an instrumented one); it is called with
    `streamer=StepHook(...)`. `stats` counts jobs: generated, cancelled_waiting (dropped before running),
    cancelled_running (their batch stopped mid-generation), cancel_requests."""

    def __init__(self, model, processor, name: str = "minigptv2", *, generate_fn=generate, max_batch: int = 8,
                 batch_wait_ms: float = 10.0, max_queue: int = 64, compile=False,
                 prefix_cache_bytes: int = 0):
        for what, v in (("max_batch", max_batch), ("max_queue", max_queue)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise MiniGPTv2Error(f"{what} must be an integer >= 1, got {v!r}")
        if not batch_wait_ms >= 0:
            raise MiniGPTv2Error(f"batch_wait_ms must be >= 0, got {batch_wait_ms!r}")
        self.model, self.processor, self.name = model, processor, name
        self.generate_fn = generate_fn
        self.compile = compile                # generate(compile=...): True or a transformers CompileConfig
        # a request that runs alone with an image reuses the image embedding and the KV cache of the prompt up to
        # the image when the same image came before (a follow-up turn resends it), compiled or not:
        # generate.PrefixCache
        self.prefix_cache = PrefixCache(prefix_cache_bytes) if prefix_cache_bytes > 0 else None
        self.max_batch, self.batch_wait, self.max_queue = max_batch, batch_wait_ms / 1000, max_queue
        self.stats: collections.Counter = collections.Counter()
        self._waiting: collections.deque[Job] = collections.deque()
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="minigptv2-batcher", daemon=True)
        self._thread.start()

    # -- submitting --
    def submit(self, image, conversation, settings: GenSettings, streamer: TokenStreamer | None = None) -> Job:
        """Queue one request; its `future` gives the `Result`. Raises Busy when the queue is full."""
        job = Job(image, conversation, settings, streamer)
        with self._cv:
            if self._closed:
                raise Busy("the server is shutting down")
            if len(self._waiting) >= self.max_queue:
                raise Busy(f"the server is busy: {self.max_queue} requests are already waiting")
            self._waiting.append(job)
            self._cv.notify()
        return job

    def cancel(self, job: Job) -> None:
        """The caller went away. A waiting job is dropped (its queue slot is free at once); a running one stops
        within one decode step, unless batch-mates still want their answers (then its row runs on with theirs
        and its answer is discarded)."""
        with self._cv:
            self.stats["cancel_requests"] += 1
            job.cancelled.set()
            try:
                self._waiting.remove(job)
            except ValueError:
                return          # running, finished, or taken by the worker (which checks `cancelled`)
            self.stats["cancelled_waiting"] += 1
        self._drop(job)

    def stream(self, image, conversation, settings: GenSettings):
        """Blocking generator for the web demo: yields text pieces, then the final `Result`. Closing it early
        cancels the job."""
        pieces: queue.Queue = queue.Queue()
        job = self.submit(image, conversation, settings, TokenStreamer(self.processor.tok, pieces.put))
        try:
            while (piece := pieces.get()) is not None:
                yield piece
            yield job.future.result()
        finally:
            if not job.future.done():
                self.cancel(job)

    def queued(self) -> int:
        return len(self._waiting)

    def warm_up(self, max_new_tokens: int = 300) -> float:
        """Two requests through the worker (a blank image, greedy) before serving, so that with `compile` the
        first clients do not pay for compiling: one up to `max_new_tokens` (the server's default max tokens: its
        KV-cache bucket, generate.CACHE_BUCKET) and one of 4 new tokens (the smallest bucket). The second compile
        of a step marks the cache length dynamic, so other buckets reuse it (tests/serve/test_server_decoding.py);
        other batch sizes compile on first use. With a prefix cache they take the `generate_cached` path, whose
        decode step is the one `generate` uses. Returns the seconds it took."""
        t0 = time.perf_counter()
        size = self.processor.image_processor.image_size
        blank = Image.new("RGB", (size, size), (255, 255, 255))
        for n in (max_new_tokens, 4):
            self.submit(blank, [{"role": "user", "content": "[caption] describe"}],
                        GenSettings(n, constrain_boxes=False)).future.result()
        return time.perf_counter() - t0

    def close(self):
        """Stop taking jobs; the worker finishes the waiting ones, then exits."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()

    # -- the worker --
    @staticmethod
    def _drop(job: Job):
        job.future.cancel()
        if job.streamer is not None:
            try:
                job.streamer.close()
            except Exception:  # noqa: BLE001 - the worker must survive a reader that is gone
                log.exception("closing a stream failed")

    def _take(self) -> list[Job] | None:
        """Wait for a job, then collect more for up to batch_wait; None when closed and drained."""
        with self._cv:
            while not self._waiting and not self._closed:
                self._cv.wait()
            if not self._waiting:
                return None
            jobs, deadline = [self._waiting.popleft()], time.monotonic() + self.batch_wait
            while len(jobs) < self.max_batch:
                if self._waiting:
                    jobs.append(self._waiting.popleft())
                    continue
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    break
                self._cv.wait(left)
            live = []
            for j in jobs:     # cancelled after being taken from the queue: still counts as never run
                if j.cancelled.is_set():
                    self.stats["cancelled_waiting"] += 1
                    self._drop(j)
                elif j.future.set_running_or_notify_cancel():
                    live.append(j)
            return live

    def _run(self):
        while (jobs := self._take()) is not None:
            groups: dict = {}
            for j in jobs:   # a streamed job runs alone (HF streamers take batch size 1)
                groups.setdefault(id(j) if j.streamer else j.settings, []).append(j)
            for group in groups.values():
                self._generate(group)

    def _generate(self, group: list[Job]):
        streamer = group[0].streamer
        try:
            if all(j.cancelled.is_set() for j in group):     # cancelled while an earlier group generated
                with self._cv:
                    self.stats["cancelled_waiting"] += len(group)
                for j in group:
                    j.future.set_exception(Cancelled("cancelled before generation started"))
                return
            kw = group[0].settings.kwargs()
            if self.compile:
                kw["compile"] = self.compile
            if self.prefix_cache is not None and len(group) == 1 and group[0].image is not None \
                    and self.generate_fn is generate:
                results = [generate_cached(self.model, self.processor, group[0].image, group[0].conversation,
                                           self.prefix_cache, streamer=StepHook(group), **kw)]
            else:
                results = self.generate_fn(self.model, self.processor, [j.image for j in group],
                                           [j.conversation for j in group], streamer=StepHook(group), **kw)
            for j, r in zip(group, results):
                j.future.set_result(r)
            with self._cv:
                self.stats["generated"] += len(group)
        except Cancelled as e:
            with self._cv:
                self.stats["cancelled_running"] += len(group)
            for j in group:
                j.future.set_exception(e)        # nobody waits for it; the future must still finish
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
                try:
                    streamer.close()
                except Exception:  # noqa: BLE001 - the worker must survive a reader that is gone
                    log.exception("closing a stream failed")
