"""Constrained box decoding: an HF `LogitsProcessor` that keeps every box the model writes well-formed.

    from minigptv2.constrained import box_constraint
    lp = box_constraint(processor, max_new_tokens=20, single=True)      # [refer]: exactly one box, then EOS
    [r] = generate(model, processor, [img], ["[refer] red circle"], max_new_tokens=20, logits_processor=lp)
    lp = box_constraint(processor, max_new_tokens=100)                  # [detection] / [grounding]

Grammar (docs/official-model.md §3.5), checked character by character on the text the tokens spell:
    box   = "{" "<" n ">" "<" n ">" "<" n ">" "<" n ">" "}"        n = 0..100, no leading zeros, no spaces
    after a box, a "<" must continue as "<delim>{" (the next box of the same phrase); anything else is free text.
Outside boxes nothing is constrained (free mode), except that a "{" opens a box. With `single=True` (the
`[refer]` output contract: one box) the answer must start with a box (leading spaces allowed) and end right
after it. With `max_new_tokens`, a box is only opened / continued if it can still be closed in the tokens
left, counting one token per missing character (every vocabulary with byte fallback has single-character
tokens, so this bound is always reachable): a box is never cut off by the length limit, so every emitted box
parses (`boxes.parse_boxes`, `metrics.refcoco_parse`).

Built from the text each token spells (`tokenizer.token_text`), so it works for any vocabulary:
  * the official LLaMA vocab, where digits are single tokens and `▁{<`, `{<`, `><`, `>}` are pieces
    (`{<12><40><38><71>}` = `▁{<` `1` `2` `><` `4` `0` ... `>}`);
  * our nano vocab, where `<0>`..`<100>`, `{`, `}`, `<delim>` are single user-defined pieces;
  * HF byte-level BPE vocabs (SmolLM2, Llama-3, Qwen2), whose tokens decode to their text.
A SentencePiece piece is read as text with `▁` -> space and byte pieces `<0xNN>` -> that byte; special ids (BOS, EOS, UNK,
pad) spell nothing: they are allowed only outside boxes, EOS only where the answer may end.

HF passes the logits processor only the generated ids when generation starts from `inputs_embeds` (our
`generate`); `prompt_len` skips leading ids otherwise. Build one instance per `generate` call (the per-state
token tables are cached per tokenizer and shared, so that is cheap).
"""
from __future__ import annotations


import torch
from transformers import LogitsProcessor, LogitsProcessorList

DELIM = "<delim>{"
DIGITS = "0123456789"
BOX_CHARS = set("{}<>" + DIGITS + "delim ")
BOX_LEN = len("<0><0><0><0>}")          # characters still needed after "{"

FREE, CLOSED, START, END, OPEN = ("free",), ("closed",), ("start",), ("end",), ("open",)


def step(state, ch: str, single: bool = False):
    """One character through the box automaton; None = not allowed."""
    kind = state[0]
    if kind == "free":
        return OPEN if ch == "{" else FREE
    if kind == "closed":
        return ("delim", 1) if ch == "<" else step(FREE, ch)
    if kind == "start":
        return START if ch == " " else OPEN if ch == "{" else None
    if kind == "end":
        return None
    if kind == "open":
        return ("num", 0, "") if ch == "<" else None
    if kind == "num":
        _, k, digits = state
        if ch in DIGITS:
            if digits == "0" or int(digits + ch) > 100:
                return None
            return ("num", k, digits + ch)
        return ("gt", k) if ch == ">" and digits else None
    if kind == "gt":
        k = state[1]
        if k < 3:
            return ("num", k + 1, "") if ch == "<" else None
        return (END if single else CLOSED) if ch == "}" else None
    if kind == "delim":
        j = state[1]
        if ch != DELIM[j]:
            return None
        return OPEN if j + 1 == len(DELIM) else ("delim", j + 1)
    raise ValueError(f"unknown state {state!r}")


def need(state) -> int:
    """Characters still needed to close the open box (0 outside boxes)."""
    kind = state[0]
    if kind in ("free", "closed", "end"):
        return 0
    if kind == "start":
        return 1 + BOX_LEN
    if kind == "open":
        return BOX_LEN
    if kind == "num":
        _, k, digits = state
        return (1 if digits else 2) + 3 * (3 - k) + 1
    if kind == "gt":
        return 3 * (3 - state[1]) + 1
    if kind == "delim":
        return len(DELIM) - state[1] + BOX_LEN
    raise ValueError(f"unknown state {state!r}")


class _Tables:
    """Per tokenizer: each token's text and, per automaton state, the allowed tokens and what they leave open."""

    def __init__(self, tokenizer, single: bool):
        self.single = single
        self.eos = tokenizer.eos_id
        self.texts = [tokenizer.token_text(i) for i in range(len(tokenizer))]
        self.specials = [i for i, t in enumerate(self.texts) if t is None or t == ""]
        # inside a box only box characters are allowed, so only tokens starting with one can ever be
        self.box_candidates = [i for i, t in enumerate(self.texts) if t and t[0] in BOX_CHARS]
        self.tables: dict = {}
        self.moves: dict = {}

    def after(self, state, text: str):
        for ch in text:
            state = step(state, ch, self.single)
            if state is None:
                return None
        return state

    def move(self, state, token: int):
        """State after one token (cached); None = the token breaks the syntax."""
        key = (state, token)
        if key not in self.moves:
            t = self.texts[token] if 0 <= token < len(self.texts) else None
            self.moves[key] = state if not t else self.after(state, t)
        return self.moves[key]

    def table(self, state):
        """(allowed token ids, characters each leaves to close) for `state`, ignoring the length budget."""
        if state not in self.tables:
            ids, needs = [], []
            outside = state in (FREE, CLOSED)
            for i in (range(len(self.texts)) if outside else self.box_candidates):
                t = self.texts[i]
                if not t:
                    continue
                if state == FREE and "{" not in t:
                    ids.append(i)
                    needs.append(0)
                    continue
                new = self.after(state, t)
                if new is not None:
                    ids.append(i)
                    needs.append(need(new))
            others = [i for i in self.specials if i != self.eos] if outside else []   # BOS/UNK/pad: no text
            ends = [self.eos] if outside or state == END else []
            ids += others + ends
            needs += [0] * len(others + ends)
            self.tables[state] = (torch.tensor(ids, dtype=torch.long), torch.tensor(needs, dtype=torch.long))
        return self.tables[state]


_CACHE: dict = {}


def _tables_for(tokenizer, single: bool) -> _Tables:
    key = (id(tokenizer), single)
    hit = _CACHE.get(key)
    if hit is None or hit[0] is not tokenizer:
        hit = _CACHE[key] = (tokenizer, _Tables(tokenizer, single))
    return hit[1]


class BoxConstraint(LogitsProcessor):
    """Masks every token that would make a box malformed (see the module docstring)."""

    def __init__(self, tokenizer, max_new_tokens: int | None = None, single: bool = False, prompt_len: int = 0):
        self.t = _tables_for(tokenizer, single)
        self.single = single
        self.max_new_tokens = max_new_tokens
        self.prompt_len = prompt_len

    def state_of(self, generated: list[int]):
        """Automaton state after the generated ids, or None once EOS was written."""
        state = START if self.single else FREE
        for tok in generated:
            if tok == self.t.eos:
                return None
            new = self.t.move(state, tok)
            state = new if new is not None else FREE   # only reachable if a token bypassed the mask
        return state

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()
        vocab = scores.shape[-1]
        for b, row in enumerate(input_ids[:, self.prompt_len:].tolist()):
            state = self.state_of(row)
            if state is None:
                continue                                # finished row: HF pads it anyway
            ids, needs = self.t.table(state)
            if self.max_new_tokens is not None:
                left = self.max_new_tokens - len(row) - 1   # tokens left after this one
                ids = ids[needs <= left]
            ids = ids[ids < vocab]
            if ids.numel() == 0:                        # no box fits any more: end the answer
                ids = torch.tensor([self.t.eos])
            allowed = torch.zeros(vocab, dtype=torch.bool)
            allowed[ids] = True
            scores[b] = scores[b].masked_fill(~allowed.to(scores.device), float("-inf"))
        return scores


def box_constraint(processor, max_new_tokens: int | None = None, single: bool = False) -> LogitsProcessorList:
    """A LogitsProcessorList with one BoxConstraint for `generate(..., logits_processor=...)`."""
    tok = getattr(processor, "tok", processor)
    return LogitsProcessorList([BoxConstraint(tok, max_new_tokens=max_new_tokens, single=single)])


BOX_TASKS = {"refer": True, "detection": False, "grounding": False}    # task -> single (exactly one box)


class PerRow(LogitsProcessor):
    """One constraint (or none) per batch row: prompts of different tasks can share a batch."""

    def __init__(self, rows: list):
        self.rows = rows

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        out = scores
        for b, c in enumerate(self.rows):
            if c is not None:
                out = out.clone() if out is scores else out
                out[b: b + 1] = c(input_ids[b: b + 1], scores[b: b + 1])
        return out


def for_tasks(processor, tasks: list, max_new_tokens: int | None = None) -> LogitsProcessorList | None:
    """Box constraints for a batch whose rows ask `tasks` ("refer": one box then the end; "detection" and
    "grounding": well-formed boxes; anything else: unconstrained). None when no row needs one."""
    tok = getattr(processor, "tok", processor)
    rows = [BoxConstraint(tok, max_new_tokens=max_new_tokens, single=BOX_TASKS[t]) if t in BOX_TASKS else None
            for t in tasks]
    return LogitsProcessorList([PerRow(rows)]) if any(r is not None for r in rows) else None


def well_formed(text: str) -> bool:
    """True if every "{" in `text` starts a box that parses (the property the constraint guarantees)."""
    from minigptv2.boxes import BOX_RE, on_grid

    boxes = BOX_RE.findall(text)
    return text.count("{") == len(boxes) and all(on_grid(b) for b in boxes)
