"""The runner every bench shares (minigptv2/eval/run.py): the IconVQA choice losses against the model's own loss."""
import pytest
from PIL import Image

from eval_helpers import iconvqa_root
from helpers import tiny_model
from minigptv2.eval import benches, run


@pytest.fixture(scope="module")
def mp(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("ev"), seed=2)


def test_iconvqa_loss_is_official_padded_mean(tmp_path, mp):
    import torch

    model, proc = mp
    root = iconvqa_root(tmp_path)
    items = benches.load_bench(root, "iconvqa")
    losses = run.choice_losses(model, proc, items, batch_size=2, progress=False)
    assert [len(x) for x in losses] == [2, 3, 2] and all(0 < v < 9999 for x in losses for v in x)
    assert items[0].prompt == "[vqa] Based on the image, respond to this question with a short answer: which shape?"
    # one question alone: the divisor is its own length - 1, so loss = HF token-mean loss * n_answer / (L - 1)
    [single] = run.choice_losses(model, proc, items[:1], batch_size=1, progress=False)
    tok = proc.tok
    p = proc.prompt_ids([items[0].prompt])
    a = tok.encode("circle") + [tok.eos_id]
    batch = proc.collate([{"input_ids": p + a, "labels": [-100] * len(p) + a,
                           "pixel_values": proc.image(Image.open(items[0].image).convert("RGB"))}])
    with torch.no_grad():
        hf = model(**batch).loss.item()
    assert single[0] == pytest.approx(hf * len(a) / (len(p) + len(a) - 1), rel=1e-4)


def test_iconvqa_choices_are_joined_and_split_on_underscores_as_officially(tmp_path, mp):
    """A choice containing "_" becomes several candidates (shifting later indices); no choices make one empty
    candidate (docs/evaluation-semantics.md §3)."""
    model, proc = mp
    img = tmp_path / "i.png"
    Image.new("RGB", (20, 20), "red").save(img)
    items = [run.Item("a", str(img), "[vqa] which?", "vqa", {"choices": ["red_circle", "blue"], "answer": 1}),
             run.Item("b", str(img), "[vqa] which?", "vqa", {"choices": [], "answer": 0})]
    losses = run.choice_losses(model, proc, items, batch_size=2, progress=False)
    assert [len(x) for x in losses] == [3, 1]
