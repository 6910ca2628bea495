"""The pointing loss: an auxiliary training target that teaches one attention head to look at the object a sample
is about (TrainConfig.pointing; the nano recipe's `stage_all`, docs/nano-log-2026-12-05-b.md "Two auxiliary losses for
binding").

In a turn with exactly one box (four coordinate tokens in a row: a [refer] answer, an [identify] prompt, a
one-object detection), every position that predicts that turn's answer should put the head's attention on the
visual tokens the box overlaps: the loss is weight × the mean over such turns of mean(-log(that attention mass)).
A turn is one answer (a run of labelled tokens) and the unlabelled tokens before it back to the previous answer,
so in a conversation each answer is pointed at its own turn's box, whatever boxes earlier turns named; a
single-turn row is one turn. With "points": true, a turn whose text has no box is pointed at its point when it
has one (Sample.points, batch["points"]: the object a synthetic VQA question is about). With "spans": true, an
answer names several objects one after another and each part is pointed at its own object: a turn with several
boxes in its text (a grounded caption, a detection of several objects) points the tokens up to and including each
box at that box, and a turn whose point is a list of [phrase, box] (a synthetic caption: Sample.points) points each
phrase's tokens, found in order in the answer, at its box. With "words": [w, ...], a turn pointed at one box also
points the positions of those words in its instruction at that box (the colour in "[refer] red circle": the head is
then asked to find the object from the word itself, not only from the answer positions). The model must run with
eager attention (the weights are returned); the coordinates must be single tokens `<0>`..`<100>` with
consecutive ids (the nano tokenizer; LLaMA's splits them, so it is refused).
"""
from __future__ import annotations

import torch

from minigptv2.errors import MiniGPTv2Error
from minigptv2.processor import IGNORE


def token_regions(box, grid: int, group: int) -> torch.Tensor:
    """Which visual tokens a box on the 0-100 grid overlaps. The ViT's grid x grid patches are in raster order and
    every `group` consecutive ones make a token (config.group). -> (grid² // group,) bool"""
    x1, y1, x2, y2 = (torch.tensor(float(v)) for v in box)
    edges = torch.arange(grid + 1) * 100 / grid
    cols = torch.minimum(edges[1:], x2) > torch.maximum(edges[:-1], x1)          # (grid,) the box's columns
    rows = torch.minimum(edges[1:], y2) > torch.maximum(edges[:-1], y1)
    return (rows[:, None] & cols[None, :]).flatten().view(-1, group).any(1)


class Pointing:
    """The pointing loss of TrainConfig.pointing = {"weight": w, "layer": l, "head": h[, "points": true][, "spans":
    true][, "words": [w, ...]]} for a model and processor.
    Called with the model's attentions (one (B, heads, L, L) tensor per layer) and the batch: the weighted loss,
    or None when no turn has a box to point at. `values` keeps (loss, turns) of every call (the training log's mean)."""

    def __init__(self, spec: dict, proc, config):
        unknown = set(spec) - {"weight", "layer", "head", "points", "spans", "words"}
        flags_ok = all(isinstance(spec.get(k, False), bool) for k in ("points", "spans"))
        words = spec.get("words", [])
        if unknown or "weight" not in spec or not flags_ok or not (isinstance(words, list) and all(
                isinstance(w, str) and w.strip() for w in words)):
            raise MiniGPTv2Error(f"pointing takes weight, layer, head, points and spans (true/false) and words (a list "
                                 f"of words), e.g. {{'weight': 0.5, 'layer': 1, 'head': 0, 'points': True}}; got {spec!r}")
        self.weight, self.layer, self.head = float(spec["weight"]), int(spec.get("layer", 1)), int(spec.get("head", 0))
        self.points, self.spans = spec.get("points", False), spec.get("spans", False)
        text = config.text_config
        if not 0 <= self.layer < text.num_hidden_layers or not 0 <= self.head < text.num_attention_heads:
            raise MiniGPTv2Error(f"pointing layer {self.layer} / head {self.head} is not in the LLM's "
                                 f"{text.num_hidden_layers} layers x {text.num_attention_heads} heads")
        tok = proc.tokenizer
        ids = [tok.encode(f"<{k}>") for k in range(101)]
        if any(len(i) != len(ids[0]) for i in ids) or [i[-1] for i in ids] != list(range(ids[0][-1], ids[0][-1] + 101)):
            raise MiniGPTv2Error("the pointing loss needs the coordinates <0>..<100> as single tokens with "
                                 "consecutive ids (the nano tokenizer); this tokenizer splits them")
        self.first = ids[0][-1]
        # each word's last token: its position has read the whole word
        self.word_ids = torch.tensor(sorted({tok.encode(w)[-1] for w in words}), dtype=torch.long)
        # phrases (spans) are encoded without what the tokenizer puts before any text (BOS): as many ids as "<0>" has
        self.tokenizer, self.lead = tok, len(ids[0]) - 1
        self.image_token_id = proc.image_token_id
        self.grid, self.group = config.vision_config.grid, config.group
        self.values: list[tuple[float, int]] = []

    def __call__(self, attentions, batch) -> torch.Tensor | None:
        ids, mask, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        B, L = ids.shape
        points = batch.get("points") if self.points else None
        n_vis = self.grid ** 2 // self.group
        # which columns each predicting position should attend to, and its weight 1 / (its turn's pointed tokens): built
        # without autograd, so the loss itself is one product and one sum over the head's (B, L, L) weights
        cols = torch.zeros(B, L, L, dtype=torch.bool, device=ids.device)
        per_q = torch.zeros(B, L, device=ids.device)
        turns = 0
        for b in range(B):
            live = mask[b] > 0
            vis = ((ids[b] == self.image_token_id) & live).nonzero().flatten()
            if len(vis) != n_vis:
                continue
            is_coord = (ids[b] >= self.first) & (ids[b] <= self.first + 100) & live
            answers = _answers(labels[b] != IGNORE)
            row_points = points[b] if points is not None and points[b] is not None else None
            if row_points is not None and len(row_points) != len(answers):
                row_points = None           # a cut answer: the turns cannot be matched to their points
            start = 0
            for k, (a, z) in enumerate(answers):                     # the answer is tokens a..z-1
                point = row_points[k] if row_points is not None else None
                parts = self._parts(ids[b], is_coord, start, a, z, point)
                turn_start, start = start, z
                parts = [(lo, hi, target) for lo, hi, box in parts
                         if (target := token_regions(box, self.grid, self.group)).any() and lo > 0]
                words = []
                if len(parts) == 1 and len(self.word_ids):                  # the words of its instruction
                    words = (torch.isin(ids[b, turn_start:a], self.word_ids.to(ids.device)) & live[turn_start:a])
                    words = (words.nonzero().flatten() + turn_start).tolist()
                n = sum(hi - lo for lo, hi, _ in parts) + len(words)
                for lo, hi, target in parts:                 # tokens lo..hi-1: positions lo-1..hi-2 predict them
                    cols[b, lo - 1:hi - 1, vis[target.to(vis.device)]] = True
                    per_q[b, lo - 1:hi - 1] = 1.0 / n
                for p in words:                              # a word's own position, not the one predicting it
                    cols[b, p, vis[parts[0][2].to(vis.device)]] = True
                    per_q[b, p] = 1.0 / n
                turns += bool(parts)
        if not turns:
            return None
        att = attentions[self.layer][:, self.head].float()                     # (B, L, L)
        mass = (att * cols).sum(-1)                                             # (B, L): 0 where not counted
        loss = self.weight * (per_q * -torch.log(mass + 1e-6)).sum() / turns
        self.values.append((loss.item(), turns))
        return loss

    def _parts(self, ids, is_coord, start: int, a: int, z: int, point) -> list[tuple[int, int, list]]:
        """[(first token, end token, grid box)] to point for the answer a..z-1 whose turn starts at `start`."""
        coord = is_coord[start:z].nonzero().flatten() + start
        runs = coord.view(-1, 4) if len(coord) % 4 == 0 else None
        if runs is not None and len(runs) and bool(((runs[:, -1] - runs[:, 0]) == 3).all()):
            boxes = [([int(ids[c]) - self.first for c in r], int(r[-1])) for r in runs]
            if len(boxes) == 1:
                return [(a, z, boxes[0][0])]
            if not self.spans:
                return []
            out, lo = [], a                              # each box with the tokens since the box before it
            for box, last in boxes:
                if last >= a:
                    out.append((max(lo, a), last + 1, box))
                lo = last + 1
            return out
        if len(coord) or point is None:
            return []
        if not isinstance(point[0], list):
            return [(a, z, point)]
        if not self.spans:
            return []
        out, at, answer = [], a, ids[a:z].tolist()         # [[phrase, box], ...]: each phrase found in order
        for phrase, box in point:
            want = self.tokenizer.encode(phrase)[self.lead:]
            hit = next((i for i in range(at - a, len(answer) - len(want) + 1) if answer[i:i + len(want)] == want), None)
            if want and hit is not None:
                out.append((a + hit, a + hit + len(want), box))
                at = a + hit + len(want)
        return out


def _answers(labelled: torch.Tensor) -> list[tuple[int, int]]:
    """(start, end) of each run of True in a (L,) bool tensor: the answers of a training row."""
    edges = torch.diff(labelled.int(), prepend=labelled.new_zeros(1).int(), append=labelled.new_zeros(1).int())
    return list(zip((edges == 1).nonzero().flatten().tolist(), (edges == -1).nonzero().flatten().tolist()))
