"""Benchmarks run (tiny configuration, valid JSON) and every optimised / baseline path gives the same greedy ids.

No speed thresholds here: timings live in BENCHMARKS.md.
"""
import importlib
import json

import pytest
import torch

from conftest import FIXTURES, ROOT
from helpers import tiny_model
from benchmarks import common as bench
from benchmarks import run

G = importlib.import_module("minigptv2.generate")

SMALL = {   # the tiniest runs of each script
    "latency": ["--max-new-tokens", "3", "--repeats", "1"],
    "generate_batch": ["--max-new-tokens", "3", "--batch", "3"],
    "prefix_cache": ["--max-new-tokens", "3", "--repeats", "2"],
    "scaling": ["--max-new-tokens", "3", "--batches", "1", "2", "--lengths", "2", "4"],
    "train_step": ["--batch", "2", "--steps", "1"],
    "bandwidth": ["--max-new-tokens", "3", "--copy-mb", "4", "--repeats", "1"],
    "nano_train": ["--batch", "4", "--steps", "2"],
}


def script(name: str, argv: list) -> int:
    """The main of the benchmark script `name` (benchmarks/), in this process."""
    return importlib.import_module(f"benchmarks.{name}").main(argv)


def test_every_benchmark_has_a_script():
    assert set(SMALL) == set(run.BENCHMARKS)
    for name in run.BENCHMARKS + ("load", "gpu"):
        assert (ROOT / "benchmarks" / f"{name}.py").is_file(), name


def test_script_options_and_defaults(capsys):
    """common.script_main: a script's own options with (default, --tiny default); other scripts' options ignored,
    not taken for one of its own that they abbreviate (--batch is not scaling's --batches)."""
    opts = dict(model=("nano", "tiny"), batch=(32, 4), lengths=([16, 32], [4]))
    for argv, kw in (([], opts), (["--tiny", "--lengths", "2", "3", "--copy-mb", "4"], opts),
                     (["--batch", "2", "--image-size", "224"], dict(batch=(32, 4))),
                     (["--batch", "3"], dict(batches=([1, 4], [1])))):
        assert bench.script_main(lambda a: dict(vars(a)), argv, **kw) == 0
    out, err = capsys.readouterr()
    got = [json.loads(line) for line in out.splitlines()]
    assert all(d.pop("bench_wall_s") >= 0 and d.pop("threads") is None for d in got)
    assert got == [{"tiny": False, "model": "nano", "image_size": None, "batch": 32, "lengths": [16, 32]},
                   {"tiny": True, "model": "tiny", "image_size": None, "batch": 4, "lengths": [2, 3]},
                   {"tiny": False, "model": "smol", "image_size": 224, "batch": 2},
                   {"tiny": False, "model": "smol", "image_size": None, "batches": [1, 4]}]
    assert "ignoring --copy-mb 4" in err and "ignoring --batch 3" in err


@pytest.mark.parametrize("name", run.BENCHMARKS)
def test_script_prints_one_json_line(name, capsys):
    assert script(name, ["--tiny"] + SMALL[name]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    d = json.loads(lines[0])
    assert d["bench"] == name and d["model"] == "tiny" and d["peak_rss_mb"] > 0
    if "same_token_ids" in d:
        assert d["same_token_ids"] is True
    if name == "train_step":
        assert d["max_abs_loss_diff"] < 1e-4        # the baseline builds the same sequences
    if name == "nano_train":
        assert d["sdpa_s_per_step"] > 0 and d["eager_s_per_step"] > 0 and d["max_abs_loss_diff"] < 0.05
    if name == "scaling":
        assert [(r["batch"], r["max_new_tokens"]) for r in d["rows"]] == [(1, 2), (1, 3), (1, 4), (2, 3)]


def test_runner_runs_the_script_files(capsys, tmp_path, monkeypatch):
    """benchmarks/run.py runs the script as `python benchmarks/bandwidth.py`, here from another working directory."""
    monkeypatch.chdir(tmp_path)
    out, png = tmp_path / "r.jsonl", tmp_path / "b.png"
    assert run.main(["--only", "bandwidth", "--tiny", "--out", str(out), "--plot", str(png),
                     "--max-new-tokens", "2", "--copy-mb", "4"]) == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert d["bench"] == "bandwidth" and d["copy_bandwidth_gb_s"] > 0 and 0 < d["fraction_of_bound"]
    assert json.loads(out.read_text()) == d and png.stat().st_size > 1000


def test_runner_keeps_every_json_line_of_a_script(capsys, tmp_path, monkeypatch):
    """gpu.py prints one JSON line per section: run.py prints and records all of them, not only the last."""
    (tmp_path / "gpu.py").write_text('print("warming up")\nprint(\'{"bench": "gpu", "section": "env"}\')\n'
                                     'print(\'{"bench": "gpu", "section": "load"}\')\n')
    monkeypatch.setattr(run, "SCRIPTS", tmp_path)
    out = tmp_path / "r.jsonl"
    assert run.main(["--only", "gpu", "--out", str(out)]) == 0
    printed = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [d["section"] for d in printed] == ["env", "load"]
    assert [json.loads(x) for x in out.read_text().splitlines()] == printed


def test_plot_all_results(tmp_path, capsys):
    lines = []
    for name in ("scaling", "latency"):
        script(name, ["--tiny"] + SMALL[name])
        lines.append(json.loads(capsys.readouterr().out))
    lines += [{"bench": "generate_batch", "batch": 3, "throughput_ratio": 1.5}, {"bench": "train_step", "ratio": 1.0},
              {"bench": "prefix_cache", "speedup_later_vs_first": 2.0}]
    run.plot(lines, tmp_path / "p.png")
    assert (tmp_path / "p.png").stat().st_size > 1000


def test_official_style_baseline_matches_ours(tmp_path):
    model, proc = tiny_model(tmp_path)
    ims, ps = bench.requests(3)
    ours = bench.ours_generate(model, proc, ims, ps, 6)
    assert bench.official_generate(model, proc, ims, ps, 6) == ours                 # batched, zero padding
    assert [bench.official_generate(model, proc, [i], [p], 6)[0] for i, p in zip(ims, ps)] == ours


def test_prefix_cache_same_ids_tiny(tmp_path):
    model, proc = tiny_model(tmp_path)          # with LoRA, as the official model
    ims = bench.images(2, seed=7)
    cache = G.PrefixCache()
    questions = list(bench.PROMPTS) + [[{"role": "user", "content": "[vqa] what color"},
                                        {"role": "assistant", "content": "red"},
                                        {"role": "user", "content": "[refer] the circle"}]]
    for im, qs in ((ims[0], questions[::2]), (ims[1], questions[1:6:2]), (ims[0], questions[-2:])):  # + eviction
        for q in qs:
            [plain] = G.generate(model, proc, [im], [q], max_new_tokens=8)
            cached = G.generate_cached(model, proc, im, q, cache, max_new_tokens=8)
            assert cached.token_ids == plain.token_ids and cached.text == plain.text
            if cache.max_bytes > cache.bytes > 0:     # bounded by bytes: room for exactly one image's entry
                cache.max_bytes = cache.bytes
    assert len(cache.items) == 1 and cache.bytes == cache.max_bytes and cache.misses == 3 and cache.hits > cache.misses
    # same content through another object (bytes) hits the cache
    import io

    buf = io.BytesIO()
    ims[0].save(buf, format="PNG")
    h = cache.hits
    G.generate_cached(model, proc, buf.getvalue(), questions[0], cache, max_new_tokens=2)
    assert cache.hits == h + 1


@pytest.fixture(scope="module")
def official():
    from minigptv2.checkpoint import convert_official
    F = FIXTURES
    model, proc = convert_official(F / "tiny_llama", F / "eva_vit_tiny_224.pth", F / "minigptv2_tiny_ckpt.pth",
                                   vit_depth=2, vit_heads=4, image_size=448, lora_alpha=16, dtype="fp32")
    return model.eval(), proc


def _official_new_ids(ids):
    ids = ids[1:]                     # the official 4.30 output starts with the BOS placeholder
    return ids[: ids.index(2) + 1] if 2 in ids else ids


def test_prefix_cache_and_baseline_match_official_fixtures(official):
    model, proc = official
    F = FIXTURES
    gen = json.loads((F / "outputs/generation.json").read_text())
    instr = json.loads((F / "inputs/prompts.json").read_text())["instructions"]
    names = torch.load(F / "outputs/vision_outputs.pt", weights_only=True)["image_names"]
    images = [F / "inputs/images" / n for n in names]
    cache = G.PrefixCache()
    # a third of the 40 pairs (every image, every prompt), grouped by image: cache hits
    pairs = [pr for pr in gen["pairs"] if (pr["image_index"] + pr["prompt_index"]) % 3 == 0]
    for k, pr in enumerate(sorted(pairs, key=lambda pr: pr["image_index"])):
        want = _official_new_ids(pr["generated_ids"])
        im, q = images[pr["image_index"]], instr[pr["prompt_index"]]
        r = G.generate_cached(model, proc, im, q, cache, max_new_tokens=20)
        assert r.token_ids == want and r.text == pr["generated_text"], pr["prompt"]
        if k % 3 == 0:
            assert bench.official_generate(model, proc, [im], [q], 20) == [want]
    assert cache.hits > 0


def test_gpu_benchmark_runs_tiny_on_cpu():
    """benchmarks/gpu.py --tiny --device cpu: every section prints its JSON line (the figures belong to a GPU run)."""
    import subprocess
    import sys

    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu.py"), "--tiny", "--device", "cpu"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
    assert [d["section"] for d in lines] == ["env", "load", "vit", "decode", "batch", "prefix", "quantized", "train"]
    by = {d["section"]: d for d in lines}
    # timings of a seconds-long tiny run are noise (a decode rate can come out negative): only their presence counts
    for section, key in (("decode", "compiled_tokens_s"), ("batch", "speedup"), ("prefix", "speedup"),
                         ("prefix", "second_compiled_s"), ("batch", "batch2_over_official")):
        assert isinstance(by[section][key], float), (section, key)
    assert by["train"]["batch4"]["step_s"] > 0
    assert by["train"]["batch2"]["peak_gb"] > 0 and by["train"]["batch2"]["peak_counted_by"] == "TensorBytes"
    assert by["load"]["host_peak_gb"] > 0 and "error" not in by["load"]


def test_tensor_bytes_counts_live_storages_once_until_freed():
    """gpu.TensorBytes, the CPU count behind the training memory figure: what exists on entry, plus every new
    storage until it is freed; views and in-place ops add nothing."""
    gpu = importlib.import_module("benchmarks.gpu")
    w = torch.zeros(1000)                                   # 4,000 bytes
    with gpu.TensorBytes([w, w[:10]]) as count:
        x = w + 1                                           # 8,000
        y = x * 2                                           # 12,000
        y.add_(1)
        v = y[:100].view(10, 10)
        del x                                               # 8,000
        z = torch.empty(3000)                               # 20,000: the peak
        del z, y                                            # v keeps y's storage: 8,000
        assert count.live == 8000
        del v
        assert count.live == 4000
    assert count.peak == 20000
    with pytest.raises(SystemExit):
        gpu.main(["--train", "4:ck"])


def test_minigptv2_bench_is_gpu_py(capsys, monkeypatch, tmp_path):
    """`minigptv2 bench` runs benchmarks/gpu.py with its arguments; a missing GPU or script is a clear error."""
    from minigptv2 import bench as bench_cmd
    from minigptv2 import cli

    assert cli.main(["bench", "--tiny", "--device", "cpu", "--only", "vit"]) == 0
    [line] = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert line["section"] == "vit" and line["device"] == "cpu" and line["batch16_ms"] > 0
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            cli.main(["bench", "--device", "cuda"])
        assert "CUDA is not available here" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["bench", "--tiny", "--onyl", "vit"])
    assert "unrecognized arguments: --onyl" in capsys.readouterr().err
    avail = int(open("/proc/meminfo").read().split("MemAvailable:")[1].split()[0]) * 1024
    if avail < 62e9:            # the whole benchmark in fp32 on this CPU: refused before building the 7B
        with pytest.raises(SystemExit):
            cli.main(["bench", "--device", "cpu"])
        assert "the official-7b shape needs about 62 GB of RAM" in capsys.readouterr().err
    monkeypatch.setattr(bench_cmd, "SCRIPT", tmp_path / "benchmarks" / "gpu.py")
    assert cli.main(["bench", "--tiny"]) == 2
    assert "of a source checkout" in capsys.readouterr().err
