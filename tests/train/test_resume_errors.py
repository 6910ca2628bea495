"""--resume from a damaged checkpoint: every problem is a MiniGPTv2Error naming the file, never a raw traceback."""
import json
import shutil

import pytest

from minigptv2.train import cli as train_cli
from minigptv2.errors import MiniGPTv2Error
from train_helpers import args, data, one_thread, run_main  # noqa: F401 - fixtures and helpers of the train tests


@pytest.fixture(scope="module")
def saved(data, tmp_path_factory):  # noqa: F811
    out = tmp_path_factory.mktemp("resume") / "run"
    run_main(args(data, out, steps=4, every=2), stop_after=2)
    assert (out / "checkpoint" / "train_state.json").is_file()
    return out


def _damaged(saved, tmp_path, name, how):
    out = tmp_path / "run"
    shutil.copytree(saved, out)
    f = out / "checkpoint" / name
    how(f)
    return out


@pytest.mark.parametrize("name, how", [
    ("optimizer.safetensors", lambda f: f.write_bytes(f.read_bytes()[:100])),
    ("rng.safetensors", lambda f: f.write_bytes(f.read_bytes()[:50])),
    ("rng.safetensors", lambda f: f.unlink()),
    ("train_state.json", lambda f: f.write_text(f.read_text()[:40])),
    ("train_state.json", lambda f: f.write_text(json.dumps({**json.loads(f.read_text()), "step": "2"}))),
    ("train_state.json", lambda f: f.write_text(json.dumps({k: v for k, v in json.loads(f.read_text()).items()
                                                            if k != "optimizer"}))),
    ("model.safetensors", lambda f: f.write_bytes(f.read_bytes()[:1000])),
])
def test_damaged_checkpoint_files_are_named(data, saved, tmp_path, name, how):  # noqa: F811
    out = _damaged(saved, tmp_path, name, how)
    # the file is named (the model's weights: by their folder, with what is wrong)
    with pytest.raises(MiniGPTv2Error, match="checkpoint: Error while deserializing" if name == "model.safetensors"
                       else name.split(".")[0]):
        train_cli.main(args(data, out, "--resume", steps=4, every=2))
