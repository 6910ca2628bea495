"""The lmms-eval / VLMEvalKit adapter (minigptv2/eval/harness.py): the calls each harness makes, and the answers."""
from types import SimpleNamespace

import pytest
from PIL import Image

from eval_helpers import FakeGenerate, img_file, patch_generate
from helpers import tiny_model
from minigptv2.eval.harness import MiniGPTv2ForEval


@pytest.fixture(scope="module")
def mp(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("ev"), seed=2)


def test_adapter_call_shapes(tmp_path, mp, monkeypatch):
    img = tmp_path / "a.png"
    img_file(img)
    fake = FakeGenerate({"[refer] give me the location of the man on the left": "{<10><20><35><40>}",
                         "[vqa] Based on the image, respond to this question with a short answer: what is it?": "a cat"})
    patch_generate(monkeypatch, fake)
    a = MiniGPTv2ForEval(model=mp[0], processor=mp[1])
    # VLMEvalKit
    msg = [{"type": "image", "value": str(img)},
           {"type": "text", "value": "Please provide the bounding box coordinate of the region this sentence "
                                     "describes: the man on the left"}]
    assert a.generate_inner(msg, dataset="RefCOCO_testA") == "[0.10, 0.20, 0.35, 0.40]"
    assert a.generate_inner([msg[0], {"type": "text", "value": "what is it?"}], dataset="GQA") == "a cat"
    assert fake.calls[0]["constrain_boxes"] is True      # generate() constrains the [refer] rows only
    # lmms-eval
    a.task_dict = {"refcoco_bbox_rec_val": {"val": {0: {"img": img}}}, "gqa": {"testdev": {5: {"img": img}}}}
    reqs = [SimpleNamespace(args=("... describes: the man on the left", {"max_new_tokens": 16},
                                  lambda doc: [Image.open(doc["img"])], 0, "refcoco_bbox_rec_val", "val")),
            SimpleNamespace(args=("what is it?", {}, lambda doc: [Image.open(doc["img"])], 5, "gqa", "testdev"))]
    assert a.generate_until(reqs) == ["[0.10, 0.20, 0.35, 0.40]", "a cat"]
    assert a.ground([str(img)], ["the man on the left"]) == [[0.10, 0.20, 0.35, 0.40]]
    assert [a.is_grounding(n) for n in ("refcoco_bbox_rec_val", "RefCOCO_testA", "refcoco_bbox_val", "gqa")] == \
        [True, True, False, False]


def test_adapter_loads_where_its_model_args_say(tmp_path, mp):
    """lmms-eval's --model_args device=... dtype=... reach load() as the commands' --device / --dtype do;
    device=auto is transformers' device_map (here: everything on the only device, the CPU)."""
    import torch

    mp[0].save_pretrained(tmp_path / "m")
    mp[1].save_pretrained(tmp_path / "m")
    a = MiniGPTv2ForEval(tmp_path / "m", device="cpu", dtype="bf16")
    assert a.model.dtype == torch.bfloat16 and a.model.input_device.type == "cpu"
    from argparse import Namespace

    from minigptv2.devices import load_kwargs

    assert load_kwargs(Namespace(device="auto", dtype=None)) == {
        "device_map": "auto", "dtype": "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"}
    b = MiniGPTv2ForEval(tmp_path / "m", device="auto", dtype="fp32")
    img_file(tmp_path / "a.png")
    assert b.answer([str(tmp_path / "a.png")], ["what is it?"]) == \
        MiniGPTv2ForEval(model=mp[0], processor=mp[1]).answer([str(tmp_path / "a.png")], ["what is it?"])
