import pytest
import torch
from PIL import Image

from helpers import tiny_model
from minigptv2 import Chat, generate, stream
from minigptv2.errors import MiniGPTv2Error


@pytest.fixture(scope="module")
def mp(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("g"), seed=1)


def _imgs():
    return [Image.new("RGB", (60, 40), (200, 30, 30)), Image.new("RGB", (30, 70), (20, 30, 200)), None]


def test_batched_equals_single(mp):
    model, proc = mp
    qs = ["[refer] red circle", "[vqa] what color is the square and the triangle?", "hello there"]
    batched = generate(model, proc, _imgs(), qs, max_new_tokens=8)
    single = [generate(model, proc, [im], [q], max_new_tokens=8)[0] for im, q in zip(_imgs(), qs)]
    assert [r.token_ids for r in batched] == [r.token_ids for r in single]
    assert batched[0].image_size == (60, 40) and batched[2].image_size is None


def test_stream_yields_the_same_text(mp):
    model, proc = mp
    [r] = generate(model, proc, [_imgs()[0]], ["[caption] describe"], max_new_tokens=10)
    pieces = list(stream(model, proc, _imgs()[0], "[caption] describe", max_new_tokens=10))
    assert len(pieces) >= 1 and proc.decode_answer_text("".join(pieces)) == r.text


def test_sampling_is_seeded_and_validated(mp):
    model, proc = mp
    kw = dict(max_new_tokens=8, do_sample=True, temperature=1.5, top_p=0.95)
    torch.manual_seed(3)
    a = generate(model, proc, [_imgs()[0]], ["[vqa] color?"], **kw)[0].token_ids
    torch.manual_seed(3)
    b = generate(model, proc, [_imgs()[0]], ["[vqa] color?"], **kw)[0].token_ids
    assert a == b
    with pytest.raises(MiniGPTv2Error, match="temperature"):
        generate(model, proc, [None], ["hi"], do_sample=True, temperature=0)
    with pytest.raises(MiniGPTv2Error, match="top_p"):
        generate(model, proc, [None], ["hi"], do_sample=True, top_p=1.5)


def test_context_overflow_is_refused(mp):
    model, proc = mp
    with pytest.raises(MiniGPTv2Error, match="context window"):
        generate(model, proc, [None], ["word " * 600], max_new_tokens=10)
    with pytest.raises(MiniGPTv2Error, match="empty"):
        generate(model, proc, [None], ["   "])
    with pytest.raises(MiniGPTv2Error, match="one image"):
        generate(model, proc, [None, None], ["a"])


def test_chat_keeps_history(mp):
    model, proc = mp
    chat = Chat(model, proc, _imgs()[0], max_new_tokens=5)
    r1 = chat.ask("[vqa] what color?")
    r2 = chat.ask("and the shape?")
    assert [m["role"] for m in chat.messages] == ["user", "assistant", "user", "assistant"]
    convo = [{"role": "user", "content": "[vqa] what color?"}, {"role": "assistant", "content": r1.text},
             {"role": "user", "content": "and the shape?"}]
    assert generate(model, proc, [_imgs()[0]], [convo], max_new_tokens=5)[0].token_ids == r2.token_ids
    list(chat.stream("third?"))
    assert len(chat.messages) == 6


def test_sampling_samples(mp):
    """do_sample draws from the model's distribution (the random tiny model's is nearly flat: every token has a
    chance), and temperature and top_p shape it. Greedy does not depend on the seed; sampling does."""
    model, proc = mp
    img, q = _imgs()[0], "[vqa] color?"

    def run(seed, **kw):
        torch.manual_seed(seed)
        return generate(model, proc, [img], [q], max_new_tokens=8, **kw)[0].token_ids

    greedy = run(0)
    assert all(run(s) == greedy for s in (1, 2))
    hot = [run(s, do_sample=True, temperature=1.5, top_p=1.0) for s in range(4)]
    assert len({tuple(h) for h in hot}) == 4 and greedy not in hot         # each seed its own tokens
    assert [run(s, do_sample=True, temperature=1.5, top_p=1.0) for s in range(4)] == hot     # ... reproducibly
    assert any(run(s, do_sample=True, temperature=0.7, top_p=1.0) != h for s, h in enumerate(hot))  # T is used
    # a near-zero temperature, or a top_p that keeps only the top token, leaves just the greedy choice
    assert run(0, do_sample=True, temperature=1e-4, top_p=1.0) == greedy
    assert run(0, do_sample=True, temperature=1.5, top_p=1e-6) == greedy


def _compile_pair(tmp_path, backend):
    from transformers import CompileConfig

    model, proc = tiny_model(tmp_path)
    model.merge_lora()
    imgs = [Image.new("RGB", (40, 30), "red"), Image.new("RGB", (30, 40), "blue")]
    qs = ["[refer] red circle", "[vqa] what color is it?"]
    eager = [r.token_ids for r in generate(model, proc, imgs, qs, max_new_tokens=10)]
    cc = CompileConfig(backend=backend)
    compiled = [r.token_ids for r in generate(model, proc, imgs, qs, max_new_tokens=10, compile=cc)]
    again = [r.token_ids for r in generate(model, proc, imgs, qs, max_new_tokens=10, compile=cc)]
    streamed = "".join(stream(model, proc, imgs[0], qs[0], max_new_tokens=10, compile=cc))
    return eager, compiled, again, streamed, proc.decode_answer(eager[0])


def test_compiled_static_cache_decode_gives_the_eager_ids(tmp_path):
    """generate(compile=...): static KV cache + torch.compile'd decode step, batched and streamed, fp32 on CPU.
    The dynamo-only backend keeps this fast (inductor compiles for about a minute here; benchmarks/gpu.py runs it)."""
    eager, compiled, again, streamed, text = _compile_pair(tmp_path, "eager")
    assert eager == compiled == again and streamed.strip() == text


def _graphs() -> int:
    """Graphs torch.compile has made so far in this process (a recompile adds one: `[0/1]` in its log)."""
    from torch._dynamo.utils import counters

    return counters["stats"]["unique_graphs"]


def test_compiled_requests_in_one_cache_bucket_compile_once(tmp_path):
    """generate(compile=...) sizes its static KV cache to a bucket (generate.CACHE_BUCKET, then doubling): requests
    of other prompt and answer lengths in one bucket reuse the compiled decode step and give the eager ids; only
    a request in a larger bucket may compile again."""
    from transformers import CompileConfig

    model, proc = tiny_model(tmp_path, max_context_len=2048)
    img = Image.new("RGB", (40, 30), "red")
    cc = CompileConfig(backend="eager")
    torch._dynamo.reset()             # the compiled step of another test's model must not count here
    before = _graphs()
    for q, n in (("[refer] red circle", 4), ("[vqa] what color is the big shape on the left?", 60),
                 ("[caption] describe", 200)):          # prompt + new tokens 22, 93, 217: all in the 512 bucket
        [eager] = generate(model, proc, [img], [q], max_new_tokens=n)
        [compiled] = generate(model, proc, [img], [q], max_new_tokens=n, compile=cc)
        assert compiled.token_ids == eager.token_ids and len(eager.token_ids) > 1    # decode steps ran
    assert _graphs() - before == 1
    generate(model, proc, [img], ["[caption] describe"], max_new_tokens=600, compile=cc)     # the 1024 bucket
    assert _graphs() - before <= 2


def test_prefix_cache_continues_in_the_compiled_decode_step(tmp_path):
    """generate_cached(compile=...): the cached prefix KV is copied into a bucketed static cache and decoding goes on
    in the compiled step (the one `generate(compile=...)` uses: one compile for both); the ids are the eager ones, and
    the second question about the same image is a prefix-cache hit."""
    from transformers import CompileConfig

    from minigptv2.generate import PrefixCache, generate_cached

    model, proc = tiny_model(tmp_path)
    img = Image.new("RGB", (40, 30), "red")
    cc = CompileConfig(backend="eager")
    first = [{"role": "user", "content": "[vqa] what color is it?"}]
    [a] = generate(model, proc, [img], [first], max_new_tokens=12)
    follow = first + [{"role": "assistant", "content": a.text}, {"role": "user", "content": "[refer] the shape"}]
    [b] = generate(model, proc, [img], [follow], max_new_tokens=12)
    cache = PrefixCache()
    torch._dynamo.reset()
    before = _graphs()
    assert generate_cached(model, proc, img, first, cache, max_new_tokens=12, compile=cc).token_ids == a.token_ids
    assert generate_cached(model, proc, img.copy(), follow, cache, max_new_tokens=12, compile=cc).token_ids \
        == b.token_ids
    assert cache.misses == 1 and cache.hits == 1 and len(b.token_ids) > 1
    assert _graphs() - before == 1
    assert generate(model, proc, [img], [follow], max_new_tokens=12, compile=cc)[0].token_ids == b.token_ids
    assert _graphs() - before == 1
