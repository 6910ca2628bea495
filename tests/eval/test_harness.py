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
