"""What the train tests share: the data (the tiny preset's tokenizer and a small synthetic set), the command line
of a short run (`args`), `minigptv2 train` in this process (`run_main`), one uninterrupted single-process reference
run (`ref`, fp32, 8 steps, global batch 4, a checkpoint every 3 steps), and the machinery that kills a training
child process. Half the samples of the mixture are text-only, so that some micro-batches carry no image (the case
that used to break DDP / FSDP). Test modules import the fixtures they use.
"""
import functools
import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import ROOT
from helpers import tiny_tokenizer
from minigptv2.synthetic import write_synthetic
from minigptv2.train import cli as train_cli

STEPS, BATCH, EVERY = 8, 4, 3
CKPT_FILES = {"config.json", "generation_config.json", "model.safetensors", "processor_config.json", "tokenizer.json",
              "tokenizer.model", "tokenizer_config.json", "lora", "train_state.json", "optimizer.safetensors",
              "rng.safetensors"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread here and in the children: on a busy 2-core machine, two spinning OpenMP threads
    make these tiny steps 3–10x slower. (Also makes the in-process and subprocess runs do the same math.)"""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("train_data")
    tok = tiny_tokenizer(d)
    synth = write_synthetic(d / "synth", n=8, seed=0)
    mix = [{"kind": "coco_caption", "path": "coco_caption.json", "ratio": 1},
           {"kind": "refcoco", "path": "refcoco.json", "ratio": 1},
           {"kind": "vqa", "path": "vqa.json", "ratio": 1},
           {"kind": "unnatural_instruction", "path": "unnatural_instruction.json", "ratio": 3}]
    (synth / "mix.json").write_text(json.dumps(mix))
    return {"root": d, "tok": tok, "synth": synth, "mix": synth / "mix.json"}


def args(data, out, *extra, steps=STEPS, batch=BATCH, every=EVERY, mix=None, progress=False) -> list[str]:
    return ["--preset", "tiny", "--tokenizer", str(data["tok"]), "--stage", "3", "--data", str(mix or data["mix"]),
            "--out", str(out), "--steps", str(steps), "--batch-size", str(batch), "--save-every", str(every),
            "--lr", "3e-3", "--warmup-steps", "2", "--precision", "fp32", *([] if progress else ["--no-progress"]),
            *extra]


def run_main(argv, stop_after=None) -> None:
    """`minigptv2 train` in this process; `stop_after` ends the run there (as if it were killed after a checkpoint)."""
    orig = train_cli.train
    if stop_after is not None:
        train_cli.train = functools.partial(orig, stop_after=stop_after)
    try:
        assert train_cli.main(argv) == 0
    finally:
        train_cli.train = orig


def log_rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


def losses(out: Path) -> list[float]:
    rows = log_rows(out)
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    return [r["loss"] for r in rows]


def weights(folder: Path) -> dict:
    """Every tensor of a saved model folder: base weights and the LoRA adapter (lora/) when there is one."""
    w = load_file(str(folder / "model.safetensors"))
    if (folder / "lora" / "adapter_model.safetensors").is_file():
        w.update({"lora/" + k: v for k, v in load_file(str(folder / "lora" / "adapter_model.safetensors")).items()})
    return w


def assert_same_weights(a: Path, b: Path, atol: float = 0.0) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        if atol == 0:
            assert torch.equal(wa[k], wb[k]), k
        else:
            torch.testing.assert_close(wa[k], wb[k], atol=atol, rtol=0, msg=k)


def env() -> dict:
    e = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
             HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    return e


@pytest.fixture(scope="module")
def ref(data):
    """The uninterrupted single-process run everything else is compared with."""
    out = data["root"] / "ref"
    run_main(args(data, out))
    return out


# ---- a training child to kill ------------------------------------------------------------------------------
CHILD = """
import os, signal, sys, time
from minigptv2.train import checkpoints, cli, loop
mode, n = sys.argv[1], int(sys.argv[2])
if mode == "step":        # block at the start of step n, then wait for the parent's SIGKILL
    orig = loop.lr_at
    def lr_at(step, c):
        if step == n:
            print("READY", flush=True)
            time.sleep(600)
        return orig(step, c)
    loop.lr_at = lr_at
else:                     # SIGKILL ourselves in the middle of the n-th checkpoint save (rng file not written yet)
    calls = []
    orig = checkpoints.save_file
    def save_file(tensors, path, *a, **k):
        if path.endswith("rng.safetensors"):
            calls.append(path)
            if len(calls) == n:
                os.kill(os.getpid(), signal.SIGKILL)
        return orig(tensors, path, *a, **k)
    checkpoints.save_file = save_file
sys.exit(cli.main(sys.argv[3:]))
"""


def popen(cmd) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=env(), text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


def finish(p: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for a child (and its process group); returns its stderr."""
    try:
        return p.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        return p.communicate()[1] + "\n(timed out)"


def read_until_ready(p, timeout: float = 120) -> str:
    """The child prints the data check's table and the schedule before READY: read the pipe itself (no buffer that
    select cannot see) until READY. Returns "READY", or the end of what was read."""
    fd, seen, deadline = p.stdout.fileno(), b"", time.monotonic() + timeout
    while b"READY\n" not in seen and time.monotonic() < deadline:
        if select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            seen += chunk
    return "READY" if b"READY\n" in seen else seen.decode(errors="replace")[-300:]
