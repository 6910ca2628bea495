"""The synthetic bench asked four ways (`minigptv2 eval --bench synthetic_views`; issue #31): each task's score
asked alone, as the second and third turn of a conversation about the same scene, and in held-out wordings.

    from minigptv2.eval.synthetic_views import run_views
    m, rows = run_views(model, processor, "runs/test999", limit=150)
    m["views"]["turn2"]["vqa_em"], m["delta"]["turn2"]["vqa_em"]        # the score, and minus the alone score

Per scene, one prompt per task (refer, detection, vqa, identify, caption, grounding), drawn with a rng seeded by
the scene's image, from the prompts of the plain synthetic bench (eval/synthetic.py, its wordings); every view
asks the same prompts, so the views differ only in how they are asked:
    alone       the prompt on its own (the plain bench's setting, on this subset)
    turn2       after one earlier turn: another task's prompt about the same scene and the model's own answer
                to it (its `alone` answer), as a chat (generate.Chat) would hold it
    turn3       after two: the second earlier answer is generated with the first in the history
    paraphrase  alone, the instruction reworded with eval/heldout_wordings.py (never trained on)
    paraphrase2 the same with the second held-out set there (heldout_wordings.V2_*)
    paraphrase3 the same with the third (heldout_wordings.V3_*)
    paraphrase4 the same with the fourth (heldout_wordings.V4_*)
    paraphrase5 the same with the fifth (heldout_wordings.V5_*)
    paraphrase6 the same with the sixth (heldout_wordings.V6_*)
    paraphrase7 the same with the seventh (heldout_wordings.V7_*)
    paraphrase8 the same with the eighth (heldout_wordings.V8_*)
    paraphrase9 the same with the ninth (heldout_wordings.V9_*)
    paraphrase10 the same with the tenth (heldout_wordings.V10_*)
    paraphrase11 the same with the eleventh (heldout_wordings.V11_*)
The earlier tasks are drawn uniformly from the other five, so grounding / caption / detection answers (long,
with boxes) come before short questions in about half the conversations, and the earlier answers name the
objects the later prompt asks about. Scores are the plain bench's (_score_synth). The plain `--bench synthetic`
is unchanged.
"""
from __future__ import annotations

import random
import time
from dataclasses import replace

from minigptv2.eval.benches import VQA_PROMPT
from minigptv2.eval.heldout_wordings import SETS, heldout_prompt
from minigptv2.eval.run import Item, run_prompts
from minigptv2.eval.synthetic import SYNTH_MAX_NEW_TOKENS, _score_synth, synthetic_items
from minigptv2.synthetic import vqa_kind

# view -> held-out set: paraphrase, paraphrase2, ... one per set of heldout_wordings.SETS
PARAPHRASE_VIEWS = {"paraphrase" if v == 1 else f"paraphrase{v}": v for v in SETS}
VIEWS = ("alone", "turn2", "turn3", *PARAPHRASE_VIEWS)
TASKS = ("refer", "detection", "vqa", "identify", "caption", "grounding")
KEY_METRICS = ("refer_acc", "detection_recall", "vqa_em", "identify_em", "caption_em", "grounding_recall")


def view_items(data_dir, limit: int | None = None, seed: int = 0) -> list[dict[str, Item]]:
    """Per scene (in file order), {task: the one prompt of that task the views ask}."""
    by_scene: dict[str, dict[str, list[Item]]] = {}
    for task, items in synthetic_items(data_dir, limit).items():
        for it in items:
            by_scene.setdefault(it.image, {}).setdefault(task, []).append(it)
    out = []
    for image, tasks in by_scene.items():
        rng = random.Random(f"views:{seed}:{image.rsplit('/', 1)[-1]}")
        out.append({t: rng.choice(tasks[t]) for t in TASKS if tasks.get(t)})
    return out


def _content(it: Item) -> str | None:
    """What a held-out wording is filled with: the name, box, shape or VQA question of a prompt."""
    if it.task == "refer":
        return it.gt["sents"]
    if it.task == "identify":
        return it.prompt.rsplit(" ", 1)[-1]
    if it.task == "detection":
        return it.gt["phrase"]
    if it.task == "vqa":
        return it.prompt[len(VQA_PROMPT.format("")):]
    return None


def _earlier(scene: dict[str, Item], task: str, k: int, seed: int) -> list[str]:
    rng = random.Random(f"views:{seed}:{task}:{k}:{scene[task].image.rsplit('/', 1)[-1]}")
    return rng.sample([t for t in TASKS if t != task and t in scene], k)


def _answer(model, processor, items: list[Item], batch_size, constrained, desc, progress) -> list[str]:
    """Greedy answers for items of mixed tasks, in order (one run_prompts call per task)."""
    preds: list = [None] * len(items)
    for task in TASKS:
        idx = [i for i, it in enumerate(items) if it.task == task]
        if idx:
            got = run_prompts(model, processor, [items[i] for i in idx], batch_size, SYNTH_MAX_NEW_TOKENS[task],
                              constrained, f"{desc} {task}", progress)
            for i, p in zip(idx, got):
                preds[i] = p
    return preds


def run_views(model, processor, data_dir, limit=None, batch_size: int = 32, constrained: bool = True,
              views=VIEWS, seed: int = 0, progress: bool = True):
    """Score the views (module docstring). Returns (metrics, rows): metrics["views"][view] holds the plain bench's
    metrics for that view, metrics["delta"][view] the key metrics minus `alone`, metrics["after"][view] the key
    metrics by the task of the turn just before (turn2, turn3), metrics["vqa_kinds"][view] VQA by question kind
    (alone, turn2, turn3: _vqa_by_kind)."""
    t0 = time.time()
    scenes = view_items(data_dir, limit, seed)
    targets = [it for s in scenes for it in s.values()]
    ask = lambda items, desc: _answer(model, processor, items, batch_size, constrained, desc, progress)  # noqa: E731
    alone = dict(zip(map(id, targets), ask(targets, "views alone")))
    asked: dict[str, list[Item]] = {"alone": targets}
    for view, version in PARAPHRASE_VIEWS.items():
        if view in views:
            tag = "para" if version == 1 else f"para{version}"
            asked[view] = [replace(it, prompt=heldout_prompt(it.task, _content(it), random.Random(
                f"views:{seed}:{tag}:{it.id}"), version=version)) for it in targets]
    for view, k in (("turn2", 1), ("turn3", 2)):
        if view not in views:
            continue
        firsts, hist = [], []
        for s in scenes:
            for task, it in s.items():
                first, *second = [s[t] for t in _earlier(s, task, k, seed)]
                firsts.append(first)
                hist.append(second)
        # the second earlier answer (turn3) is the model's, given the first turn in its history
        seconds = [replace(b[0], history=((a.prompt, alone[id(a)]),)) if b else None for a, b in zip(firsts, hist)]
        need = [x for x in seconds if x is not None]
        got = iter(ask(need, f"views {view} (turn 2)")) if need else iter(())
        second_ans = [next(got) if x is not None else None for x in seconds]
        asked[view] = [replace(it, history=((a.prompt, alone[id(a)]),) + ((b.prompt, ans),) if b is not None else
                               ((a.prompt, alone[id(a)]),))
                       for it, a, b, ans in zip(targets, firsts, seconds, second_ans)]
    m: dict = {"views": {}, "delta": {}, "after": {}, "vqa_kinds": {}}
    rows: list = []
    for view in [v for v in VIEWS if v in asked]:
        items = asked[view]
        preds = [alone[id(it)] for it in targets] if view == "alone" else ask(items, f"views {view}")
        vm: dict = {}
        for task in TASKS:
            sel = [(it, p) for it, p in zip(items, preds) if it.task == task]
            tm, trows = _score_synth(task, [it for it, _ in sel], [p for _, p in sel])
            vm.update(tm)
            for r, (it, _) in zip(trows, sel):
                r.update(view=view, history=[list(h) for h in it.history])
            rows += trows
        m["views"][view] = vm
        if view != "alone":
            m["delta"][view] = {k: vm[k] - m["views"]["alone"][k] for k in KEY_METRICS if k in vm}
        if view in ("turn2", "turn3"):
            m["after"][view] = _by_previous_task(rows, view)
        if view in ("alone", "turn2", "turn3"):
            m["vqa_kinds"][view] = _vqa_by_kind(rows, view)
    m["n"] = {t: sum(t in s for s in scenes) for t in TASKS}
    m["scenes"] = len(scenes)
    m["seconds"] = round(time.time() - t0, 2)
    return m, rows


def _previous_task(row: dict) -> str:
    prev = row["history"][-1][0]
    return next((t for t in TASKS if prev.startswith(f"[{t}]")), "?")


def _vqa_by_kind(rows: list[dict], view: str) -> dict:
    """{question kind (synthetic.vqa_kind): {"all": exact match, "after <task>": the same after that task's turn
    (turn views)}} for one view. An average over every kind and earlier task can hide one pair ("how many shapes"
    after a refer answer: docs/nano.md)."""
    sums: dict = {}
    for r in rows:
        if r["view"] != view or r["task"] != "vqa":
            continue
        kind = vqa_kind(r["prompt"][len(VQA_PROMPT.format("")):]) or "other"
        for key in ["all"] + ([f"after {_previous_task(r)}"] if r["history"] else []):
            acc = sums.setdefault(kind, {}).setdefault(key, [0.0, 0])
            acc[0] += float(r["correct"])
            acc[1] += 1
    return {k: {key: a / n for key, (a, n) in sorted(d.items())} for k, d in sorted(sums.items())}


def _by_previous_task(rows: list[dict], view: str) -> dict:
    """{metric: {task of the turn just before: score}} for one turn view (refer hits, recalls, exact matches)."""
    sums: dict = {}
    for r in rows:
        if r["view"] != view:
            continue
        prev_task = _previous_task(r)
        if r["task"] == "refer":
            key, v = "refer_acc", float(r["hit"])
        elif r["task"] in ("detection", "grounding"):
            key, v = f"{r['task']}_recall", r["recall"]
        else:
            key, v = f"{r['task']}_em", float(r["correct"])
        acc = sums.setdefault(key, {}).setdefault(prev_task, [0.0, 0])
        acc[0] += v
        acc[1] += 1
    return {k: {t: a / n for t, (a, n) in sorted(d.items())} for k, d in sums.items()}
