"""Constrained box decoding: the automaton, both vocabulary styles, and a tiny random model."""
import pytest
import torch
from PIL import Image
from transformers import LogitsProcessor, LogitsProcessorList

from conftest import FIXTURES
from helpers import tiny_model, tiny_tokenizer
from minigptv2 import generate
from minigptv2.boxes import parse_boxes
from minigptv2.constrained import BOX_CHARS, BoxConstraint, box_constraint, well_formed
from minigptv2.eval.metrics import refcoco_parse
from minigptv2.processor import Tokenizer

LLAMA_TOK = FIXTURES / "tiny_llama" / "tokenizer.model"


def _feed(text: str, single: bool = False):
    """Run the automaton over text; None if some character is refused."""
    from minigptv2.constrained import FREE, START, step

    state = START if single else FREE
    for ch in text:
        state = step(state, ch, single)
        if state is None:
            return None
    return state


@pytest.mark.parametrize("text", ["{<0><0><100><100>}", "a <p>cat</p> {<1><2><3><4>}<delim>{<5><6><7><8>} and",
                                  "{<12><40><38><71>} <p>x</p> {<1><2><3><4>}", "no box at all <b> }"])
def test_grammar_accepts_well_formed_text(text):
    assert _feed(text) is not None


@pytest.mark.parametrize("text", ["{<101>", "{<05>", "{<1 >", "{ <1>", "{<1><2><3>}", "{<1><2><3><4><5>}",
                                  "{<1><2><3><4>}<p>", "{<1><2><3><4>}<delix", "{x", "{<-1>"])
def test_grammar_refuses_malformed_boxes(text):
    assert _feed(text) is None


def test_single_mode_is_one_box_then_end():
    assert _feed("  {<1><2><3><4>}", single=True) == ("end",)
    assert _feed("the cat", single=True) is None
    assert _feed("{<1><2><3><4>} more", single=True) is None


def test_token_text_reads_bytes_and_spaces():
    tok = Tokenizer(LLAMA_TOK)
    pieces = {tok.id_to_piece(i): i for i in range(len(tok))}
    assert tok.token_text(pieces["<0x7B>"]) == "{"
    assert tok.token_text(pieces["\u2581{<"]) == " {<"
    assert tok.token_text(tok.eos_id) is None


def _random_decode(tok, n: int, steps: int, constraint_kw=None, seed: int = 0) -> list[str]:
    """Greedy decoding of random logits that favour box characters, optionally through BoxConstraint."""
    g = torch.Generator().manual_seed(seed)
    boxy = torch.tensor([1.0 if (t := tok.token_text(i)) and set(t) <= BOX_CHARS - {" "} else 0.0
                         for i in range(len(tok))])
    texts = []
    for _ in range(n):
        c = BoxConstraint(tok, **constraint_kw) if constraint_kw is not None else None
        ids = torch.zeros((1, 0), dtype=torch.long)
        for _ in range(steps):
            scores = torch.randn(1, len(tok), generator=g) + 3.0 * boxy
            scores[0, tok.eos_id] -= 2.0
            if c is not None:
                scores = c(ids, scores)
            nxt = scores.argmax(-1, keepdim=True)
            ids = torch.cat([ids, nxt], 1)
            if nxt.item() == tok.eos_id:
                break
        texts.append(tok.decode(ids[0].tolist()))
    return texts


@pytest.mark.parametrize("vocab", ["llama", "nano"])
def test_constraint_makes_every_box_parse(vocab, tmp_path):
    tok = Tokenizer(LLAMA_TOK if vocab == "llama" else tiny_tokenizer(tmp_path))
    free = _random_decode(tok, 20, 40)
    assert sum(not well_formed(t) for t in free) >= 10          # unconstrained: mostly malformed
    syntax = _random_decode(tok, 20, 40, {"max_new_tokens": 40})
    assert all(well_formed(t) for t in syntax), [t for t in syntax if not well_formed(t)]
    assert sum(len(parse_boxes(t)) for t in syntax) >= 5           # boxes are written, not just avoided
    single = _random_decode(tok, 20, 20, {"max_new_tokens": 20, "single": True})
    for t in single:
        box, reason = refcoco_parse(t, 640, 480)
        assert box is not None, reason


def test_budget_closes_the_box_in_time():
    tok = Tokenizer(LLAMA_TOK)
    for n in (14, 15, 18):      # `{<1><2><3><4>}` needs 14 single-character tokens in the worst case
        for t in _random_decode(tok, 5, n, {"max_new_tokens": n, "single": True}, seed=n):
            assert refcoco_parse(t, 100, 100)[0] is not None, t
    for t in _random_decode(tok, 10, 12, {"max_new_tokens": 12}, seed=1):
        assert well_formed(t), t           # no box is opened that could not be closed


class Chaos(LogitsProcessor):
    """Pushes a random model towards box characters so that it writes (mostly broken) boxes."""

    def __init__(self, tok, seed=0):
        self.g = torch.Generator().manual_seed(seed)
        self.boxy = torch.tensor([4.0 if (t := tok.token_text(i)) and set(t) <= BOX_CHARS - {" "} else 0.0
                                  for i in range(len(tok))])
        self.brace = tok.sp.piece_to_id("{")

    def __call__(self, input_ids, scores):
        scores = scores + self.boxy[: scores.shape[-1]] + 2 * torch.randn(scores.shape, generator=self.g)
        if input_ids.shape[1] == 0:
            scores[:, self.brace] += 100.0        # every answer starts with "{": box-prefixed answers
        return scores


def test_tiny_model_box_prefixed_answers_parse_with_the_constraint(tmp_path):
    model, proc = tiny_model(tmp_path, seed=3)
    images = [Image.new("RGB", (64, 48), c) for c in ((200, 30, 30), (30, 200, 30), (30, 30, 200), (90, 90, 90))]
    prompts = ["[refer] red circle", "[detection] square", "[grounding] describe", "[refer] the blue one"]
    tok = proc.tok
    free = generate(model, proc, images, prompts, max_new_tokens=24, logits_processor=LogitsProcessorList([Chaos(tok)]))
    assert all(r.text.startswith("{") for r in free)
    assert any(not well_formed(r.text) for r in free)
    lp = LogitsProcessorList([Chaos(tok), *box_constraint(proc, max_new_tokens=24)])
    fixed = generate(model, proc, images, prompts, max_new_tokens=24, logits_processor=lp)
    assert all(r.text.startswith("{") and well_formed(r.text) and r.boxes for r in fixed), [r.text for r in fixed]
    lp = LogitsProcessorList([Chaos(tok, seed=1), *box_constraint(proc, max_new_tokens=20, single=True)])
    for r in generate(model, proc, images, prompts, max_new_tokens=20, logits_processor=lp):
        assert refcoco_parse(r.text, 64, 48)[0] is not None, r.text
    # the plain random model under the single-box constraint still answers with exactly one box
    for r in generate(model, proc, images, prompts, max_new_tokens=20,
                      logits_processor=box_constraint(proc, max_new_tokens=20, single=True)):
        assert refcoco_parse(r.text, 64, 48)[0] is not None, r.text


@pytest.mark.parametrize("vocab", ["llama", "nano"])
@pytest.mark.parametrize("single", [False, True])
def test_eos_is_masked_inside_an_open_box_and_allowed_where_the_answer_may_end(vocab, single, tmp_path):
    """The logits processor alone, on hand-made prefixes: while a box is open (every proper prefix of a box)
    EOS gets -inf whatever the length budget; after the closing "}" it is allowed (single: only EOS is)."""
    from minigptv2.constrained import CLOSED, END, FREE, START, need

    tok = Tokenizer(LLAMA_TOK if vocab == "llama" else tiny_tokenizer(tmp_path))
    box = "{<12><40><38><71>}"
    c = BoxConstraint(tok, max_new_tokens=None, single=single)
    opened = 0
    for k in range(1, len(box) + 1):
        ids = tok.encode(box[:k])
        state = c.state_of(ids)
        assert state not in (FREE, START, None), (box[:k], state)     # the prefix reached the automaton as text
        for budget in (None, len(ids) + 40, len(ids) + need(state) + 1):
            c.max_new_tokens = budget
            out = c(torch.tensor([ids]), torch.zeros(1, len(tok)))[0]
            allowed = torch.isfinite(out)
            if k < len(box):
                opened += 1
                assert state not in (CLOSED, END) and not allowed[tok.eos_id], (box[:k], budget)
                assert allowed.any()                                 # something continues the box
            else:
                assert state == (END if single else CLOSED) and allowed[tok.eos_id], budget
                assert allowed.sum() == 1 if single else allowed.sum() > 1
    assert opened >= 3 * 5
    # before anything is written: free text may end at once; a single-box answer may not
    out = BoxConstraint(tok, single=single)(torch.zeros((1, 0), dtype=torch.long), torch.zeros(1, len(tok)))[0]
    assert bool(torch.isfinite(out[tok.eos_id])) is not single



class FakeTok:
    """A vocabulary written out: 0-2 special (no text), 3 spells "", then words, box pieces and digits."""
    PIECES = [None, None, None, "", "red", " ", "{", "}", "<", ">", "<delim>", *"0123456789"]
    eos_id = 2

    def __len__(self):
        return len(self.PIECES)

    def token_text(self, i):
        return self.PIECES[i]


def _allowed(c, text_ids, width=None):
    scores = torch.zeros(1, width or len(FakeTok.PIECES))
    return {i for i, v in enumerate(c(torch.tensor([text_ids], dtype=torch.long), scores)[0]) if torch.isfinite(v)}


def test_tables_on_a_written_out_vocabulary():
    from minigptv2.constrained import FREE, OPEN

    tok = FakeTok()
    ids = {p: i for i, p in enumerate(FakeTok.PIECES) if p}
    everything = set(range(len(tok)))
    c = BoxConstraint(tok)
    assert c.single is False and c.prompt_len == 0
    assert _allowed(c, []) == everything                         # free text: any token, specials, "", EOS
    assert _allowed(c, [ids["{"]]) == {ids["<"]}                 # an open box: only "<"; no special, "" or EOS
    assert _allowed(c, [ids["red"], ids["{"], ids["<"], ids["1"]]) == {ids[">"], *(ids[d] for d in "0123456789")}
    # scores narrower than the vocabulary (a model vocab < the tokenizer's): the missing ids are dropped
    assert _allowed(c, [], width=len(tok) - 1) == everything - {len(tok) - 1}
    c.max_new_tokens = 3                                         # the last token: no box fits, free text still does
    assert _allowed(c, [ids["red"], ids["red"]]) == everything - {ids["{"]}
    single = BoxConstraint(tok, max_new_tokens=5, single=True)   # a box needs 14 tokens: only EOS is left
    assert _allowed(single, []) == {tok.eos_id}
    assert _allowed(BoxConstraint(tok, single=True), [ids[" "]]) == {ids[" "], ids["{"]}
    # ids that are not text: specials and ids outside the vocabulary leave the state as it is; a token that
    # breaks the syntax (only if it bypassed the mask) falls back to free text
    assert c.state_of([1, 0, len(tok), len(tok) + 5, -1, ids["{"]]) == OPEN
    assert c.state_of([ids["{"], ids["red"]]) == FREE and c.state_of([ids["{"], ids["red"], ids["{"]]) == OPEN
    assert c.state_of([ids["red"], tok.eos_id, ids["{"]]) is None          # EOS ends the row


def test_id_zero_can_be_text():
    """Byte-level vocabularies (GPT-2's "!") spell text with id 0: it moves the automaton like any token."""
    from minigptv2.constrained import OPEN

    class ZeroIsBrace(FakeTok):
        PIECES = ["{", *FakeTok.PIECES[1:]]

    assert BoxConstraint(ZeroIsBrace()).state_of([0]) == OPEN


def test_tables_are_cached_per_tokenizer_and_mode():
    from minigptv2.constrained import _tables_for, box_constraint

    a, b = FakeTok(), FakeTok()
    ta = _tables_for(a, False)
    assert _tables_for(b, False) is not ta and _tables_for(a, True) is not ta
    assert _tables_for(a, False) is ta
    [lp] = box_constraint(a)                                     # a tokenizer itself, or a processor with .tok
    assert lp.t is ta and lp.single is False and lp.max_new_tokens is None


def test_need_and_step_by_hand():
    from minigptv2.constrained import CLOSED, END, FREE, OPEN, START, need, step

    # characters left to close: "{" + "<0><0><0><0>}" from START, then counting down
    cases = {START: 14, OPEN: 13, ("num", 0, ""): 12, ("num", 0, "7"): 11, ("gt", 0): 10, ("num", 2, ""): 6,
             ("num", 3, "5"): 2, ("gt", 1): 7, ("gt", 3): 1, ("delim", 1): 20, ("delim", 7): 14, FREE: 0,
             CLOSED: 0, END: 0}
    assert {s: need(s) for s in cases} == cases
    assert step(("gt", 3), "}") == CLOSED and step(("gt", 3), "}", single=True) == END
    for fn, args in ((need, (("bogus",),)), (step, (("bogus",), "x"))):
        with pytest.raises(ValueError, match=r"unknown state \('bogus',\)"):
            fn(*args)


def test_per_row_constraints_for_a_batch_of_tasks():
    """for_tasks: refer rows get one box then the end, detection / grounding rows well-formed boxes, other rows
    nothing; the scores passed in are not changed in place."""
    from minigptv2.constrained import PerRow, _tables_for, for_tasks

    tok = FakeTok()
    assert for_tasks(tok, ["vqa", "caption", "identify"]) is None
    [lp] = for_tasks(tok, ["refer", "vqa", "detection", "grounding"], max_new_tokens=20)
    assert isinstance(lp, PerRow) and lp.rows[1] is None
    assert [(c.single, c.max_new_tokens, c.t.single) for c in (lp.rows[0], lp.rows[2], lp.rows[3])] == \
        [(True, 20, True), (False, 20, False), (False, 20, False)]
    scores = torch.zeros(4, len(tok))
    out = lp(torch.zeros((4, 0), dtype=torch.long), scores)
    allowed = [{i for i, v in enumerate(row) if torch.isfinite(v)} for row in out]
    assert allowed[0] == {5, 6} and allowed[1] == set(range(len(tok)))          # " " or "{" first; free
    assert allowed[2] == allowed[3] == set(range(len(tok)))
    assert torch.equal(scores, torch.zeros(4, len(tok)))                         # the input is left as it was
    ids = torch.tensor([[6], [6], [6], [4]])                                      # "{" "{" "{" "red"
    out = lp(ids, torch.zeros(4, len(tok)))
    assert [{i for i, v in enumerate(row) if torch.isfinite(v)} for row in out] == \
        [{8}, set(range(len(tok))), {8}, set(range(len(tok)))]                   # "<" inside an open box
    free = torch.zeros(2, len(tok))
    assert PerRow([None, None])(torch.zeros((2, 0), dtype=torch.long), free) is free
    from types import SimpleNamespace

    [lp] = for_tasks(SimpleNamespace(tok=tok), ["refer"])                   # a processor: its prompt tokenizer
    assert lp.rows[0].t is _tables_for(tok, True)
