"""The pointing loss (train/pointing.py): which visual tokens a box covers, added only for one-box turns, gradients
reach the chosen head's layer, and the settings it cannot work with are refused."""
import json
import random
import types

import pytest
import torch

import minigptv2
from minigptv2.errors import MiniGPTv2Error
from minigptv2.synthetic import make_scene
from minigptv2.train.loop import loss_sum
from minigptv2.train.pointing import Pointing, token_regions

SPEC = {"weight": 0.5, "layer": 1, "head": 0}


def test_token_regions_follow_the_token_layout():
    """nano: 8 x 8 patches, 4 consecutive make a token -> 16 tokens = 8 rows x 2 halves, in raster order."""
    on = lambda box, grid=8: token_regions(box, grid, 4).nonzero().flatten().tolist()  # noqa: E731
    assert on([0, 0, 50, 12]) == [0]
    assert on([0, 0, 50, 13]) == [0, 2]                  # reaches into the second row
    assert on([60, 40, 90, 70]) == [7, 9, 11]             # right half, rows 3-5
    assert on([0, 0, 100, 100]) == list(range(16))
    assert on([0, 0, 0, 50]) == []                        # no width, no token
    # official: 32 x 32 patches -> 256 tokens, 8 a row; a box in the top-left eighth of the width
    assert on([0, 0, 12, 3], grid=32) == [0] and on([0, 0, 13, 4], grid=32) == [0, 1, 8, 9]


@pytest.fixture(scope="module")
def nano():
    torch.manual_seed(0)
    model, proc = minigptv2.load()
    model.language_model.set_attn_implementation("eager")
    return model, proc


def _batch(proc, turns_list):
    image = proc.image(make_scene(random.Random(0)).image)
    return proc.collate([proc.training_example(t, image=image, chat_template=False) for t in turns_list])


def test_added_for_one_box_rows_only_and_reaches_the_heads_layer(nano):
    model, proc = nano
    one_box = _batch(proc, [[("[identify] what is in {<10><20><40><60>}", "red circle")]])
    answer_box = _batch(proc, [[("[refer] the red circle", "{<10><20><40><60>}")]])
    no_box = _batch(proc, [[("[vqa] how many shapes are there?", "one")]])
    two_boxes = _batch(proc, [[("[detection] circle", "<p>circle</p> {<1><2><3><4>}<delim>{<50><50><60><60>}")]])
    for batch, counted in ((one_box, True), (answer_box, True), (no_box, False), (two_boxes, False)):
        p = Pointing(SPEC, proc, model.config)
        plain, n = loss_sum(model, batch, torch.float32)
        with_point, n2 = loss_sum(model, batch, torch.float32, pointing=p)
        assert n == n2 and torch.isfinite(with_point)
        assert (with_point.item() > plain.item() + 1e-4) == counted
        assert counted or with_point.item() == pytest.approx(plain.item(), abs=1e-5)
        assert len(p.values) == counted and all(k == 1 for _, k in p.values)
    # by hand: layer 1 head 0, answer positions' attention on the visual tokens under {<10><20><40><60>}
    with torch.no_grad():
        att = model(**{k: one_box[k] for k in ("input_ids", "attention_mask", "pixel_values")},
                    output_attentions=True).attentions[1][0, 0]
    vis = (one_box["input_ids"][0] == proc.image_token_id).nonzero().flatten()[token_regions([10, 20, 40, 60], 8, 4)]
    q = (one_box["labels"][0, 1:] != -100).nonzero().flatten()
    p = Pointing(SPEC, proc, model.config)
    loss_sum(model, one_box, torch.float32, pointing=p)
    assert p.values[0][0] == pytest.approx(0.5 * -torch.log(att[q][:, vis].sum(-1) + 1e-6).mean().item(), rel=1e-5)
    # a batch of both: the loss is the mean over the rows it counts (weight x mean -log mass), once per call
    p = Pointing(SPEC, proc, model.config)
    identify = [("[identify] what is in {<10><20><40><60>}", "red circle")]
    loss_sum(model, _batch(proc, [identify, [("[vqa] how many shapes are there?", "one")], identify]), torch.float32,
             pointing=p)
    assert [k for _, k in p.values] == [2]
    model.zero_grad()
    loss_sum(model, one_box, torch.float32, pointing=Pointing(SPEC, proc, model.config))[0].backward()
    q = model.language_model.model.layers[1].self_attn.q_proj.weight.grad
    later = model.language_model.model.layers[3].self_attn.q_proj.weight.grad
    assert q is not None and q.abs().sum() > 0 and later is not None
    model.zero_grad()


def _head_and_answers(model, batch):
    """Layer 1 head 0's attention of the batch's one row, its ids, and where each answer starts and ends."""
    with torch.no_grad():
        att = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")},
                    output_attentions=True).attentions[1][0, 0]
    ids, labelled = batch["input_ids"][0], (batch["labels"][0] != -100).tolist()
    starts = [i for i in range(1, len(labelled)) if labelled[i] and not labelled[i - 1]]
    ends = [i for i in range(1, len(labelled)) if not labelled[i] and labelled[i - 1]] + [len(labelled)]
    return att, ids, starts, ends


def test_each_turn_of_a_conversation_points_at_its_own_box(nano):
    """A turn (an answer and the prompt before it) counts when it holds one box; its answer positions look at that
    box's tokens, not at boxes of other turns; a turn without a box and a turn with two are not counted."""
    model, proc = nano
    turns = [("[refer] the red circle", "{<10><20><40><60>}"), ("[vqa] how many shapes are there?", "one"),
             ("[identify] what is in {<50><50><90><90>}", "blue square"),
             ("[detection] circle", "<p>circle</p> {<1><2><3><4>}<delim>{<50><50><60><60>}")]
    batch = _batch(proc, [turns])
    att, ids, starts, ends = _head_and_answers(model, batch)
    assert len(starts) == 4
    vis = (ids == proc.image_token_id).nonzero().flatten()
    by_hand = []
    for k, box in ((0, [10, 20, 40, 60]), (2, [50, 50, 90, 90])):       # answers 1 and 3
        a, z = starts[k], ends[k]
        q = torch.arange(a - 1, z - 1)
        by_hand.append(-torch.log(att[q][:, vis[token_regions(box, 8, 4)]].sum(-1) + 1e-6).mean().item())
    p = Pointing(SPEC, proc, model.config)
    loss_sum(model, batch, torch.float32, pointing=p)
    assert [k for _, k in p.values] == [2]                  # the refer and identify turns
    assert p.values[0][0] == pytest.approx(0.5 * sum(by_hand) / 2, rel=1e-5)
    # the box of turn 1 does not make the box-less turn 2 count (a whole-row rule would point both at it)
    p = Pointing(SPEC, proc, model.config)
    loss_sum(model, _batch(proc, [turns[:2]]), torch.float32, pointing=p)
    assert [k for _, k in p.values] == [1]


def test_words_point_their_own_positions_in_the_instruction_at_the_turns_box(nano):
    """With "words", a turn pointed at one box adds the positions of those words in its instruction (not in its
    answer, not in another turn's instruction) to the answer positions, pointed at the same box."""
    model, proc = nano
    turns = [("[refer] the red circle", "{<10><20><40><60>}"), ("[vqa] is there a blue circle?", "yes"),
             ("[identify] what is in {<50><50><90><90>}", "red square")]
    batch = _batch(proc, [turns])
    att, ids, starts, ends = _head_and_answers(model, batch)
    red, blue = proc.tokenizer.encode("red")[-1], proc.tokenizer.encode("blue")[-1]
    vis = (ids == proc.image_token_id).nonzero().flatten()[token_regions([10, 20, 40, 60], 8, 4)]
    a, z = starts[0], ends[0]
    [word] = [i for i in range(a) if ids[i] == red]            # "red" of the first instruction only
    mass = att[torch.cat([torch.tensor([word]), torch.arange(a - 1, z - 1)])][:, vis].sum(-1)
    blue_at = (ids == blue).nonzero().flatten().tolist()           # the box-less turn's "blue" is not pointed
    assert len(blue_at) == 1 and blue_at[0] > z
    p = Pointing({**SPEC, "words": ["red", "blue"]}, proc, model.config)
    loss_sum(model, _batch(proc, [turns[:1]]), torch.float32, pointing=p)
    assert p.values[0][0] == pytest.approx(0.5 * -torch.log(mass + 1e-6).mean().item(), rel=1e-5)
    plain = Pointing(SPEC, proc, model.config)
    loss_sum(model, _batch(proc, [turns[:1]]), torch.float32, pointing=plain)
    assert plain.values[0][0] == pytest.approx(0.5 * -torch.log(mass[1:] + 1e-6).mean().item(), rel=1e-5)
    # the whole conversation: the identify turn's answer says "red", but only instructions are searched
    both, plain = Pointing({**SPEC, "words": ["red", "blue"]}, proc, model.config), Pointing(SPEC, proc, model.config)
    loss_sum(model, batch, torch.float32, pointing=both)
    loss_sum(model, batch, torch.float32, pointing=plain)
    assert [k for _, k in both.values] == [k for _, k in plain.values] == [2]    # refer and identify
    gained = 0.5 * (-torch.log(mass + 1e-6).mean() + torch.log(mass[1:] + 1e-6).mean()).item() / 2
    assert both.values[0][0] - plain.values[0][0] == pytest.approx(gained, rel=1e-3)     # the first turn's word only
    with pytest.raises(MiniGPTv2Error, match="words"):
        Pointing({**SPEC, "words": "red"}, proc, model.config)


def test_points_give_a_box_less_turn_its_object_only_when_asked(nano):
    """"points": true points a turn without a box at its Sample.points box, as if the box were in its text; a
    turn whose text has a box keeps that box; without the key, or when the answers cannot be matched to the
    points (a cut answer), the points are not read."""
    model, proc = nano
    turns = [("[vqa] what color is the circle?", "red"), ("[vqa] how many shapes are there?", "one"),
             ("[refer] the red circle", "{<10><20><40><60>}")]
    batch = _batch(proc, [turns])
    batch["points"] = [[[50, 50, 90, 90], [0, 0, 100, 100], [60, 0, 100, 40]]]
    with torch.no_grad():
        att = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")},
                    output_attentions=True).attentions[1][0, 0]
    labelled = (batch["labels"][0] != -100).tolist()
    starts = [i for i in range(1, len(labelled)) if labelled[i] and not labelled[i - 1]]
    ends = [i for i in range(1, len(labelled)) if not labelled[i] and labelled[i - 1]] + [len(labelled)]
    vis = (batch["input_ids"][0] == proc.image_token_id).nonzero().flatten()

    def by_hand(k, box):
        q = torch.arange(starts[k] - 1, ends[k] - 1)
        return -torch.log(att[q][:, vis[token_regions(box, 8, 4)]].sum(-1) + 1e-6).mean().item()

    want = [by_hand(0, [50, 50, 90, 90]), by_hand(1, [0, 0, 100, 100]), by_hand(2, [10, 20, 40, 60])]
    p = Pointing({**SPEC, "points": True}, proc, model.config)
    loss_sum(model, batch, torch.float32, pointing=p)
    assert [k for _, k in p.values] == [3]      # the text's box wins over turn 3's point
    assert p.values[0][0] == pytest.approx(0.5 * sum(want) / 3, rel=1e-5)
    for spec, points in ((SPEC, batch["points"]), ({**SPEC, "points": True}, [batch["points"][0][:2]]),
                         ({**SPEC, "points": True}, [None])):
        p = Pointing(spec, proc, model.config)
        loss_sum(model, {**batch, "points": points}, torch.float32, pointing=p)
        assert [k for _, k in p.values] == [1] and p.values[0][0] == pytest.approx(0.5 * want[2], rel=1e-5)


def test_spans_point_each_named_object_at_its_own_box(nano):
    """"spans": true: a detection answer with two boxes points the tokens up to and including each box at that box;
    a caption whose point is [[phrase, box], ...] points each phrase's tokens at its box (phrases found in order,
    one that is not in the answer skipped). Without it, neither turn counts and the refer turn is as before."""
    model, proc = nano
    tok = proc.tokenizer
    turns = [("[detection] circle", "<p>circle</p> {<1><2><3><4>}<delim>{<50><50><60><60>}"),
             ("[caption] briefly describe the image", "a red circle and a blue square"),
             ("[refer] the red circle", "{<10><20><40><60>}")]
    batch = _batch(proc, [turns])
    batch["points"] = [[None, [["a red circle", [0, 0, 30, 30]], ["a green triangle", [0, 0, 100, 100]],
                              ["a blue square", [60, 60, 100, 100]]], None]]
    with torch.no_grad():
        att = model(**{k: batch[k] for k in ("input_ids", "attention_mask", "pixel_values")},
                    output_attentions=True).attentions[1][0, 0]
    ids = batch["input_ids"][0].tolist()
    labelled = (batch["labels"][0] != -100).tolist()
    starts = [i for i in range(1, len(labelled)) if labelled[i] and not labelled[i - 1]]
    ends = [i for i in range(1, len(labelled)) if not labelled[i] and labelled[i - 1]] + [len(labelled)]
    vis = (batch["input_ids"][0] == proc.image_token_id).nonzero().flatten()

    def mean_nll(spans):       # [(tokens lo..hi-1, box)] -> the mean over their predicting positions
        vals = [-torch.log(att[q, vis[token_regions(box, 8, 4)]].sum() + 1e-6).item()
                for lo, hi, box in spans for q in range(lo - 1, hi - 1)]
        return sum(vals) / len(vals)

    a0, a1 = starts[0], starts[1]
    first = tok.encode("<0>")[-1]
    coords = [i for i in range(a0, ends[0]) if first <= ids[i] <= first + 100]
    assert [ids[i] - first for i in coords] == [1, 2, 3, 4, 50, 50, 60, 60]
    four, last = coords[3], coords[7]
    caption = [t.lstrip("\u2581") for t in tok.convert_ids_to_tokens(ids[a1:ends[1]])]
    assert caption[:7] == ["a", "red", "circle", "and", "a", "blue", "square"]
    want = [mean_nll([(a0, four + 1, [1, 2, 3, 4]), (four + 1, last + 1, [50, 50, 60, 60])]),
            mean_nll([(a1, a1 + 3, [0, 0, 30, 30]), (a1 + 4, a1 + 7, [60, 60, 100, 100])]),
            mean_nll([(starts[2], ends[2], [10, 20, 40, 60])])]
    p = Pointing({**SPEC, "points": True, "spans": True}, proc, model.config)
    loss_sum(model, batch, torch.float32, pointing=p)
    assert [k for _, k in p.values] == [3]
    assert p.values[0][0] == pytest.approx(0.5 * sum(want) / 3, rel=1e-5)
    p = Pointing({**SPEC, "points": True}, proc, model.config)
    loss_sum(model, batch, torch.float32, pointing=p)
    assert [k for _, k in p.values] == [1] and p.values[0][0] == pytest.approx(0.5 * want[2], rel=1e-5)


def test_synthetic_captions_carry_each_objects_phrase_and_box(tmp_path):
    """A dialog's caption turn and coco_caption.json (written with dialogs) point each object's phrase, in the
    caption's order, at its grid box; without dialogs the file has no points."""
    from minigptv2.data.datasets import open_dataset
    from minigptv2.data.synthetic_dialogs import scene_of, turn
    from minigptv2.synthetic import caption, write_synthetic

    def check(scene, answer, point):
        assert answer == caption(scene) and [p for p, _ in point] == [f"a {o.name}" for o in scene.objects]
        assert [b for _, b in point] == [list(scene.grid(o)) for o in scene.objects]
        at = 0
        for phrase, _ in point:                     # the phrases are in the answer, in order
            at = answer.index(phrase, at) + len(phrase)

    scene = make_scene(random.Random(3))
    q, answer, point = turn(scene, "caption", random.Random(0), 0.0, [])
    check(scene, answer, point)
    d = write_synthetic(tmp_path / "s", n=6, seed=0, dialogs=True)
    scenes = [scene_of(json.loads(line)) for line in (d / "scenes.jsonl").read_text().splitlines()]
    ds = open_dataset("coco_caption", d / "coco_caption.json")
    for i, sc in enumerate(scenes):
        s = ds.sample(i, random.Random(i))
        assert len(s.points) == 1
        check(sc, s.turns[0][1], s.points[0])
    plain = open_dataset("coco_caption", write_synthetic(tmp_path / "p", n=2, seed=0) / "coco_caption.json")
    assert plain.sample(0, random.Random(0)).points is None


@pytest.mark.parametrize("points", [[["a red circle", [1, 2, 3]]], [["", [0, 0, 5, 5]]], [["x", [5, 5, 1, 9]]],
                                    ["a red circle"], [["a", [0, 0, 5, 500]]]])
def test_caption_points_that_are_not_phrases_with_grid_boxes_are_refused_by_name(tmp_path, points):
    from minigptv2.data.datasets import open_dataset
    f = tmp_path / "c.json"
    f.write_text(json.dumps([{"image": "a.png", "caption": "a red circle", "points": points}]))
    with pytest.raises(MiniGPTv2Error, match=r"c.json: record 0: points must be \[\[phrase"):
        open_dataset("coco_caption", f)


def test_synthetic_vqa_samples_carry_their_objects_box_to_the_batch(tmp_path, nano):
    """write_synthetic(dialogs=True): vqa.json's one-object questions carry "point" (the object's grid box), the
    vqa reader and the dialogs put it in Sample.points, make_batches in batch["points"] row by row."""
    from minigptv2.data.datasets import open_dataset
    from minigptv2.data.synthetic_dialogs import SyntheticDialogDataset, scene_of
    from minigptv2.synthetic import vqa_subject, write_synthetic
    from minigptv2.train.batches import make_batches

    _, proc = nano
    d = write_synthetic(tmp_path / "s", n=12, seed=0, max_objects=3, dialogs=True)
    scenes = [json.loads(line) for line in (d / "scenes.jsonl").read_text().splitlines()]
    by_image = {s["image"]: scene_of(s) for s in scenes}
    recs = json.loads((d / "vqa.json").read_text())
    for r in recs:
        scene = by_image[r["image"]]
        o = vqa_subject(scene, r["question"])
        assert r.get("point") == (None if o is None else list(scene.grid(o)))
        assert (o is not None) == (not r["question"].startswith("how many") and r["answer"] != ["no"])
    assert sum("point" in r for r in recs) >= len(scenes)       # every scene has a colour or shape question
    assert "point" not in json.loads((write_synthetic(tmp_path / "plain", n=3, seed=0) / "vqa.json").read_text())[0]
    ds = open_dataset("vqa", d / "vqa.json")
    rng = random.Random(0)
    samples = [ds.sample(i, rng) for i in range(len(ds))]
    assert [s.points for s in samples] == [[r["point"]] if "point" in r else None for r in recs]
    dialogs = SyntheticDialogDataset(d / "scenes.jsonl")
    pointed = [s for s in (dialogs.sample(i % len(dialogs), random.Random(i)) for i in range(60)) if s.points]
    assert pointed and all(len(s.points) == len(s.turns) for s in pointed)
    for s in pointed:
        for (q, _), pt in zip(s.turns, s.points):     # a VQA turn's box, a caption's [[phrase, box], ...]
            assert (pt is not None) <= q.startswith(("[vqa]", "[caption]"))
            assert q.startswith("[caption]") <= (pt is not None and isinstance(pt[0], list))
    batches = make_batches(proc, samples[:6], 4, chat_template=False)
    rows = sorted(samples[:6], key=lambda s: len(proc.training_example(s.turns, image=s.image,
                                                                       chat_template=False)["input_ids"]))
    assert [p for b in batches for p in b["points"]] == [s.points for s in rows]


def test_refuses_what_it_cannot_do(nano):
    model, proc = nano
    for bad in ({"weight": 0.5, "layer": 9}, {"weight": 0.5, "head": 7}, {"layer": 1}, {"weight": 1, "heads": 0},
                {"weight": 1, "points": "yes"}, {"weight": 1, "spans": 1}):
        with pytest.raises(MiniGPTv2Error, match="pointing"):
            Pointing(bad, proc, model.config)
    split = types.SimpleNamespace(tokenizer=types.SimpleNamespace(encode=lambda s: [1, 29966, len(s)]),
                                  image_token_id=proc.image_token_id)
    with pytest.raises(MiniGPTv2Error, match="single tokens"):
        Pointing(SPEC, split, model.config)
    p = Pointing(SPEC, proc, model.config)
    with pytest.raises(MiniGPTv2Error, match="token-mean"):
        loss_sum(model, _batch(proc, [[("[vqa] how many?", "one")]]), torch.float32, per="sample", pointing=p)


def test_train_refuses_pointing_without_eager_attention(tmp_path, nano):
    from minigptv2.train.config import TrainConfig
    from minigptv2.train.loop import train

    model, proc = nano
    tc = TrainConfig(steps=1, batch_size=1, lr=1e-4, min_lr=1e-5, warmup_lr=1e-5, warmup_steps=0, precision="fp32",
                     trainable={"vit": "frozen", "projector": "full", "llm": "full"}, pointing=SPEC)
    with pytest.raises(MiniGPTv2Error, match="eager"):
        train(model, proc, None, tc, tmp_path / "out", progress=False, device="cpu")     # refused before any data
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("point", [[10, 20, 5, 30], [0, 0, 101, 50], [1.5, 2, 30, 40], [1, 2, 3], "0,0,9,9",
                                   [True, 0, 9, 9]])
def test_a_vqa_point_that_is_not_a_grid_box_is_refused_by_name(tmp_path, point):
    from minigptv2.data.datasets import open_dataset

    f = tmp_path / "vqa.json"
    f.write_text(json.dumps([{"image": "a.png", "question": "what color is the circle?", "answer": ["red"],
                              "point": point}]))
    with pytest.raises(MiniGPTv2Error, match="point"):
        open_dataset("vqa", f)
