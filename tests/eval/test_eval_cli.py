"""`minigptv2 eval` (minigptv2/eval/cli.py) with a tiny model: every output written, the help."""
import json
from pathlib import Path

import pytest
from PIL import Image

from eval_helpers import FakeGenerate, patch_generate, refcoco_root
from helpers import tiny_model
from minigptv2.checkpoint import save
from minigptv2.errors import MiniGPTv2Error
from minigptv2.eval import cli


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    model, proc = tiny_model(tmp_path_factory.mktemp("ev"), seed=2)
    return save(model, proc.tok.path, tmp_path_factory.mktemp("evm") / "tiny")


def test_cli_end_to_end_with_tiny_model(tmp_path, model_dir):
    from minigptv2.cli import main as cli_main

    root = refcoco_root(tmp_path, files=("refcoco_val", "refcocog_test"), n=3)
    out = tmp_path / "out"
    rc = cli_main(["eval", "--model", str(model_dir), "--bench", "refcoco_val,refcocog_test", "--data", str(root),
                   "--out", str(out), "--limit", "3", "--batch-size", "3", "--compare-constrained", "--quiet",
                   "--max-new-tokens", "14"])
    assert rc == 0
    summary = json.loads((out / "metrics.json").read_text())
    for b in ("refcoco_val", "refcocog_test"):
        m = summary["benches"][b]
        assert m["total"] == 3 and m["parse_failures"] == 0          # constrained: every answer is a box
        assert "unconstrained" in m and 0 <= m["unconstrained"]["parse_failure_rate"] <= 1
        lines = (out / "predictions" / f"{b}.jsonl").read_text().splitlines()
        assert len(lines) == 3 and "prediction_unconstrained" in json.loads(lines[0])
        assert Image.open(out / "examples" / f"{b}.png").size[0] > 0
    report = (out / "report.md").read_text()
    assert "88.69" in report and "paper†" in report and "unverified" in report and "refcocog_test" in report


def test_cli_synthetic_without_data_writes_heldout_set(tmp_path, model_dir, monkeypatch):
    out = tmp_path / "o"
    patch_generate(monkeypatch, FakeGenerate({}, default="{<10><10><60><60>}"))   # wiring only: fast
    assert cli.main(["--model", str(model_dir), "--bench", "synthetic", "--out", str(out), "--limit", "2",
                    "--quiet", "--examples", "2", "--max-new-tokens", "14"]) == 0
    assert len((out / "synthetic_data" / "scenes.jsonl").read_text().splitlines()) == 2
    m = json.loads((out / "metrics.json").read_text())["benches"]["synthetic"]
    assert {"refer_acc", "detection_recall", "vqa_em", "identify_em", "caption_em", "grounding_recall"} <= set(m)
    assert m["refer_parse_failure_rate"] == 0.0
    assert "Synthetic benchmark" in (out / "report.md").read_text()
    with pytest.raises(MiniGPTv2Error, match="--data ROOT is required"):
        cli.main(["--bench", "refcoco_val", "--out", str(out)])


def test_help_has_a_line_for_every_argument_and_points_to_the_layout():
    p = cli.parser()
    assert all(action.help for action in p._actions), [a.dest for a in p._actions if not a.help]
    text = p.format_help()
    assert "docs/evaluation.md" in text and "ROOT/" not in text and len(text.splitlines()) < 60
    layout = (Path(__file__).parents[2] / "docs" / "evaluation.md").read_text(encoding="utf-8")
    for where in ("ROOT/refcoco/refcoco_val.json", "ROOT/okvqa/okvqa_test_split.json", "ROOT/vizwiz/val.json",
                  "ROOT/gqa/testdev_balanced.json", "ROOT/vsr/test.jsonl", "ROOT/hm/dev.jsonl",
                  "ROOT/iconvqa/choose_text_val.json", "ROOT/coco_caption/coco_karpathy_test.json",
                  "ROOT/detection/phrase_to_object.json", "ROOT/grounding/grounded_caption.json"):
        assert where in layout, where
