import os
import subprocess
import sys

from PIL import Image

from conftest import ROOT
from helpers import tiny_model
from minigptv2.checkpoint import save


def test_demo_cli_runs_every_task_and_writes_png(tmp_path):
    model, proc = tiny_model(tmp_path)
    save(model, proc.tok.path, tmp_path / "m")
    out = tmp_path / "demo.png"
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-m", "minigptv2.cli", "demo", "--model", str(tmp_path / "m"), "--seed", "3",
                        "--out", str(out), "--max-new-tokens", "8"], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    for ident in ("[caption]", "[grounding]", "[refer]", "[identify]", "[detection]", "[vqa]"):
        assert f"> {ident}" in r.stdout
    assert "expected:" in r.stdout and str(out) in r.stdout
    assert Image.open(out).width >= 192
