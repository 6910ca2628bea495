"""docs/finetune.md, run as a user runs it: every ```bash block of the page, in order, in one shell, with the
`minigptv2` command of this checkout (subprocesses: data example -> convert -> check -> eval -> train -> export ->
serve). Then what the page promises is checked on the files and the output."""
import json
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from conftest import ROOT

DOC = ROOT / "docs" / "finetune.md"


def blocks(lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", DOC.read_text(), re.S | re.M)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def journey(tmp_path_factory):
    work = tmp_path_factory.mktemp("journey")
    shim = work / "bin"
    shim.mkdir()
    cmd = shim / "minigptv2"
    cmd.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m minigptv2.cli "$@"\n')
    cmd.chmod(cmd.stat().st_mode | stat.S_IEXEC)
    home = work / "home"
    home.mkdir()
    env = dict(os.environ, PATH=f"{shim}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(ROOT),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1", PORT=str(free_port()))
    script = "\n".join(blocks("bash"))
    t0 = time.perf_counter()
    p = subprocess.Popen(["bash", "-euo", "pipefail", "-c", script], cwd=home, env=env, text=True,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=400)
    except subprocess.TimeoutExpired:
        out, err = p.communicate() if p.poll() is not None else ("", "(timed out)")
    finally:
        try:
            os.killpg(p.pid, signal.SIGKILL)      # a server left behind by a failed block
        except ProcessLookupError:
            pass
    return {"home": home, "rc": p.returncode, "out": out, "err": err, "seconds": time.perf_counter() - t0}


def test_the_page_runs_as_written(journey):
    assert len(blocks("bash")) >= 6
    assert journey["rc"] == 0, journey["err"][-4000:]
    print(f"journey: {journey['seconds']:.1f} s")


def test_the_shown_output_is_what_the_commands_print(journey):
    """The page's output excerpts of convert and check are the commands' real output, line for line."""
    shown = [b for b in blocks("text") if "converted my_data" in b or b.startswith("data check of")]
    assert len(shown) == 2
    for b in shown:
        for line in b.splitlines():
            if line.strip() and not line.startswith("{"):
                assert line.rstrip() in journey["out"], line


def test_convert_writes_the_training_format_with_a_held_out_split(journey):
    from minigptv2.boxes import to_grid
    from minigptv2.data.datasets import load_mixture

    home = journey["home"]
    coco = json.loads((home / "my_data" / "instances.json").read_text())
    train = [json.loads(x) for x in (home / "ft_data" / "train.jsonl").read_text().splitlines()]
    test = [json.loads(x) for x in (home / "ft_data" / "test.jsonl").read_text().splitlines()]
    assert {r["task"] for r in train} == {"refer", "identify", "detection"}
    assert not {r["image"] for r in train} & {r["image"] for r in test}
    assert len({r["image"] for r in test}) == 6                                      # 0.25 of 24 images
    # the first annotation's refer record: its box on the official grid, from the COCO [x, y, w, h]
    a, im = coco["annotations"][0], coco["images"][0]
    x, y, w, h = a["bbox"]
    name = next(c["name"] for c in coco["categories"] if c["id"] == a["category_id"])
    want = "{<%d><%d><%d><%d>}" % to_grid((x, y, x + w, y + h), im["width"], im["height"])
    refer = [r for r in train + test if r["task"] == "refer" and r["image"].endswith(im["file_name"])
             and r["turns"][0][0].endswith(name)]
    assert refer and refer[0]["turns"][0][1] == want
    [(ds, _)] = load_mixture(home / "ft_data" / "mixture.json")
    assert len(ds) == len(train) and os.path.isfile(ds.sample(0, None).image)
    qa = [json.loads(x) for x in (home / "ft_qa" / "train.jsonl").read_text().splitlines()]
    assert {r["task"] for r in qa} == {"refer", "vqa"}


def test_eval_before_and_after_and_the_run_folder(journey):
    home = journey["home"]
    before = json.loads((home / "runs" / "before" / "metrics.json").read_text())["benches"]["jsonl"]
    # the nano model finds these shapes: the converted boxes are where the objects are
    assert before["n"] == {"detection": 11, "refer": 11, "identify": 11}
    assert before["refer_acc"] >= 0.6 and before["identify_em"] >= 0.6, before
    run = home / "runs" / "ft"
    after = json.loads((run / "eval" / "metrics.json").read_text())["benches"]["jsonl"]
    assert after["n"] == before["n"] and 0 <= after["refer_acc"] <= 1
    assert "| refer | 11 | acc |" in (run / "eval" / "report.md").read_text()
    assert "| refer | 11 | acc |" in journey["out"]                                  # `cat` of the report
    assert len((run / "log.jsonl").read_text().splitlines()) == 40
    assert (run / "loss.png").stat().st_size > 1000
    sched = json.loads((run / "schedule.json").read_text())
    assert sched["used"]["warmup_steps"] == 1 and sched["preset"]["warmup_steps"] == 1000
    assert sched["used"]["trainable"] == {"vit": "frozen", "projector": "full", "llm": "full"}   # nano's own
    assert "warmup scaled with --steps" in journey["out"]
    assert (run / "exported" / "llm" / "config.json").is_file()


def test_the_served_model_answers_with_boxes(journey):
    out = journey["out"]
    reply, _ = json.JSONDecoder().raw_decode(out[out.index('{"id":"chatcmpl'):])
    assert reply["choices"][0]["message"]["content"]
    [box] = reply["boxes"]
    assert len(box["box"]) == 4 and len(box["box_pixels"]) == 4
