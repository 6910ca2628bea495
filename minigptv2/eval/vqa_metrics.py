"""Text-answer metrics of MiniGPT-v2's VQA benchmarks, computed as the official evaluation code computes them.

OKVQA / VQAv2 (the official VQA accuracy), VizWiz, GQA, VSR, Hateful Memes and IconVQA. What the official code
does, quirks included, is written down in docs/evaluation-semantics.md; each function names its section there.

A *prediction* is the text `generate` returns (`Result.text`): the official `generate` output, already cut at
</s>, taken after the last [/INST] and stripped. Whatever a benchmark's official script does to that text before
comparing (lowercasing, removing "<unk>", stripping) is done here, per benchmark, and nothing more.
Bad input (length mismatch, empty lists, wrong types) raises `MiniGPTv2Error`; bad model output never raises.
"""
from __future__ import annotations

import math
import re
from collections.abc import Sequence

from minigptv2.errors import MiniGPTv2Error

# ---------------------------------------------------------------------------------------------------------------
# small helpers (also used by metrics.py)


def _check_pairs(preds, gts, what: str) -> None:
    if isinstance(preds, (str, bytes)) or isinstance(gts, (str, bytes)):
        raise MiniGPTv2Error(f"{what}: predictions and ground truth must be sequences, not single strings")
    if len(preds) != len(gts):
        raise MiniGPTv2Error(f"{what}: {len(preds)} predictions but {len(gts)} ground-truth items")
    if len(preds) == 0:
        raise MiniGPTv2Error(f"{what}: nothing to score (empty lists)")


def _text(pred) -> str:
    """Model output as text; None (no prediction) becomes '' so it simply never matches."""
    if pred is None:
        return ""
    if not isinstance(pred, str):
        raise MiniGPTv2Error(f"prediction must be a string, got {type(pred).__name__}: {pred!r}")
    return pred


def _answer_list(answers, what: str) -> list[str]:
    if isinstance(answers, (str, bytes)) or len(answers) == 0:
        raise MiniGPTv2Error(f"{what} needs a non-empty list of human answers, got {answers!r}")
    for a in answers:
        if not isinstance(a, str):
            raise MiniGPTv2Error(f"{what}: human answers must be strings, got {type(a).__name__}: {a!r}")
    return list(answers)


def exact_match(pred, gt) -> bool:
    """Lenient exact match (our synthetic benchmark, not an official one): strip, lowercase and collapse runs of
    whitespace on both sides."""
    norm = lambda s: " ".join(_text(s).lower().split())  # noqa: E731
    return norm(pred) == norm(gt)


# ---------------------------------------------------------------------------------------------------------------
# VQA accuracy (OKVQA / VQAv2): docs/evaluation-semantics.md §1

# Punctuation of the answer processing, in the official order (no apostrophe, no colon, no period).
VQA_PUNCT = ";/[]\"{}()=+\\_-><@`,?!"
_DIGIT_COMMA = re.compile(r"\d,\d")
# A period not followed by a digit is removed, at most the first 32 of them (§1.2: the official call passes
# re.UNICODE, whose value is 32, as the `count` argument of `sub`).
_PERIOD = re.compile(r"\.(?!\d)")
VQA_MAX_PERIODS_REMOVED = 32
VQA_NUMBER_WORDS = {"none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
                    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
VQA_ARTICLES = ("a", "an", "the")
# The official contraction table, entry for entry (its capitalised keys can never match a lowercased word, and
# "somebody'd" really maps to "somebodyd"; §1.3).
VQA_CONTRACTIONS = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't", "dont": "don't",
    "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't", "havent": "haven't",
    "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's", "howd": "how'd", "howll": "how'll",
    "hows": "how's", "Id've": "I'd've", "I'dve": "I'd've", "Im": "I'm", "Ive": "I've", "isnt": "isn't", "itd": "it'd",
    "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll", "let's": "let's", "maam": "ma'am",
    "mightnt": "mightn't", "mightnt've": "mightn't've", "mightn'tve": "mightn't've", "mightve": "might've",
    "mustnt": "mustn't", "mustve": "must've", "neednt": "needn't", "notve": "not've", "oclock": "o'clock",
    "oughtnt": "oughtn't", "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've", "shouldnt": "shouldn't",
    "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've", "somebody'd": "somebodyd",
    "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've", "somebodyll": "somebody'll",
    "somebodys": "somebody's", "someoned": "someone'd", "someoned've": "someone'd've", "someone'dve": "someone'd've",
    "someonell": "someone'll", "someones": "someone's", "somethingd": "something'd",
    "somethingd've": "something'd've", "something'dve": "something'd've", "somethingll": "something'll",
    "thats": "that's", "thered": "there'd", "thered've": "there'd've", "there'dve": "there'd've",
    "therere": "there're", "theres": "there's", "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've",
    "theyll": "they'll", "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't",
    "wed've": "we'd've", "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll",
    "whatre": "what're", "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd",
    "wheres": "where's", "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've",
    "wholl": "who'll", "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}


def vqa_process_punctuation(text: str) -> str:
    """The official punctuation step (§1.2).

    Each character of `VQA_PUNCT` is deleted if the text anywhere has it next to a space (e.g. "red, white") or
    if the text contains digit-comma-digit anywhere ("1,000": then every punctuation character is deleted);
    otherwise it becomes a space ("red/white" -> "red white"). The tests look at the text as it came in, not at
    the text being rewritten. Then the first 32 periods that are not followed by a digit are removed.
    """
    delete_all = _DIGIT_COMMA.search(text) is not None
    out = text
    for p in VQA_PUNCT:
        touches_space = (p + " ") in text or (" " + p) in text
        out = out.replace(p, "" if (delete_all or touches_space) else " ")
    return _PERIOD.sub("", out, count=VQA_MAX_PERIODS_REMOVED)


def vqa_process_digit_article(text: str) -> str:
    """The official digit/article step (§1.3): lowercase, split on whitespace, number words zero..ten and "none"
    -> digits, drop a/an/the, then map each word through `VQA_CONTRACTIONS`; join with single spaces."""
    words = []
    for w in text.lower().split():
        w = VQA_NUMBER_WORDS.get(w, w)
        if w not in VQA_ARTICLES:
            words.append(w)
    return " ".join(VQA_CONTRACTIONS.get(w, w) for w in words)


def _vqa_whitespace(text: str) -> str:
    return text.replace("\n", " ").replace("\t", " ").strip()


def vqa_normalize(answer) -> str:
    """The full official answer processing (§1.1-1.3): newlines and tabs -> spaces, strip, punctuation step,
    digit/article step. Note that the official accuracy applies it only when the human answers disagree."""
    return vqa_process_digit_article(vqa_process_punctuation(_vqa_whitespace(_text(answer))))


def vqa_accuracy(prediction, answers: Sequence[str], *, lenient: bool = False) -> float:
    """VQA accuracy of one question, in [0, 1], exactly as the official VQA evaluation computes it (§1.4).

    Newlines/tabs -> spaces and strip, on the prediction and on every human answer. If the human answers are not
    all identical (case-sensitive, after that strip), both sides get `vqa_normalize`; if they *are* all identical,
    nothing more is done to either side. So against ten "yes", "yes." scores 0 while "Yes" scores 1 (the final
    comparison is case-insensitive). Then, for each human answer i, the other answers equal to the prediction are
    counted, min(1, count / 3) is taken, and these n values are averaged: with 10 answers and m matches,
    m = 0, 1, 2, 3, >=4 -> 0, 0.3, 0.6, 0.9, 1. Each answer counts as a separate record (the VQA files give each
    one its own answer_id); with a single human answer there is nothing left after leaving it out, so the result
    is always 0, as officially.

    lenient=True (not official, documented in §1.6): always normalise both sides, and with a single human answer
    return min(matches / 3, 1). Never use it for numbers that are compared with published ones.
    """
    answers = _answer_list(answers, "vqa_accuracy")
    pred = _vqa_whitespace(_text(prediction))
    gts = [_vqa_whitespace(a) for a in answers]
    if lenient or len(set(gts)) > 1:
        pred = vqa_normalize(pred)
        gts = [vqa_normalize(a) for a in gts]
    pred = pred.lower()
    matches = [a.lower() == pred for a in gts]
    if lenient and len(gts) == 1:
        return min(1.0, matches[0] / 3)
    total = sum(matches)
    # leaving out answer i leaves total - matches[i] matching answers among the others
    per_subset = [min(1, (total - m) / 3) for m in matches]
    return sum(per_subset) / len(per_subset)


def vqa_score(preds: Sequence, answer_lists: Sequence[Sequence[str]], *, lenient: bool = False) -> float:
    """Mean `vqa_accuracy` × 100, not rounded (the official tool prints it rounded to 2 decimals)."""
    _check_pairs(preds, answer_lists, "vqa_score")
    return 100.0 * sum(vqa_accuracy(p, a, lenient=lenient) for p, a in zip(preds, answer_lists)) / len(preds)


def okvqa_prediction(answer) -> str:
    """What the official OKVQA script does to an answer before the VQA evaluation sees it (§1.5): lowercase,
    then remove "<unk>" (so "<UNK>" goes too), then strip."""
    return _text(answer).lower().replace("<unk>", "").strip()


# ---------------------------------------------------------------------------------------------------------------
# VizWiz, GQA, VSR, Hateful Memes: docs/evaluation-semantics.md §2


def vizwiz_accuracy(prediction, answers: Sequence[str]) -> float:
    """VizWiz as MiniGPT-v2 scores it (§2.1): min(count / 3, 1), no leave-one-out.

    The human answers are joined with "_" and split on "_" again (so an answer containing "_" counts as several),
    and count = the pieces whose lower() equals the prediction's lower(). The prediction is the raw answer text:
    no strip, "<unk>" not removed; the pieces are not stripped either.
    """
    pieces = "_".join(_answer_list(answers, "vizwiz_accuracy")).split("_")
    pred = _text(prediction).lower()
    count = sum(1 for piece in pieces if piece.lower() == pred)
    return min(count / 3.0, 1.0)


def vizwiz_score(preds: Sequence, answer_lists: Sequence[Sequence[str]]) -> float:
    """Mean `vizwiz_accuracy` × 100."""
    _check_pairs(preds, answer_lists, "vizwiz_score")
    return 100.0 * sum(vizwiz_accuracy(p, a) for p, a in zip(preds, answer_lists)) / len(preds)


def gqa_correct(prediction, answer: str) -> bool:
    """GQA (§2.2): prediction.lower() == answer, the answer taken as it is (not lowercased, not stripped)."""
    if not isinstance(answer, str):
        raise MiniGPTv2Error(f"GQA answer must be a string, got {type(answer).__name__}: {answer!r}")
    return _text(prediction).lower() == answer


def gqa_score(preds: Sequence, answers: Sequence[str]) -> float:
    """GQA accuracy × 100 of `gqa_correct`."""
    _check_pairs(preds, answers, "gqa_score")
    return 100.0 * sum(gqa_correct(p, a) for p, a in zip(preds, answers)) / len(preds)


def _binary_label(label, true_word: str, false_word: str) -> int:
    """Ground-truth label as 0/1: accepts 0/1, bool, or the words ('true'/'false', 'yes'/'no')."""
    if isinstance(label, str):
        word = label.strip().lower()
        if word in (true_word, "1"):
            return 1
        if word in (false_word, "0"):
            return 0
    elif isinstance(label, (bool, int)) or hasattr(label, "item"):  # ints, bools, numpy/torch scalars
        value = int(label)
        if value in (0, 1):
            return value
    raise MiniGPTv2Error(f"label must be 0/1 or '{true_word}'/'{false_word}', got {label!r}")


def vsr_label(prediction) -> int | None:
    """VSR answer -> 1 ("true"), 0 ("false"), None (anything else). lower() only, no strip (§2.3)."""
    return {"true": 1, "false": 0}.get(_text(prediction).lower())


def vsr_correct(prediction, label) -> bool:
    """VSR (§2.3): prediction.lower() equals "true" for label 1, "false" for label 0."""
    return vsr_label(prediction) == _binary_label(label, "true", "false")


def vsr_score(preds: Sequence, labels: Sequence) -> float:
    """VSR accuracy × 100 of `vsr_correct`."""
    _check_pairs(preds, labels, "vsr_score")
    return 100.0 * sum(vsr_correct(p, y) for p, y in zip(preds, labels)) / len(preds)


def hm_label(prediction) -> int | None:
    """Hateful-Memes answer -> 1 ("yes"), 0 ("no"), None (anything else), after lower() and strip() (§2.4).

    "Yes." is not "yes". The official script keeps any other answer as its raw string, which never equals the
    0/1 label; here it is None, with the same effect.
    """
    return {"yes": 1, "no": 0}.get(_text(prediction).lower().strip())


def hm_correct(prediction, label) -> bool:
    """Hateful Memes (§2.4): `hm_label(prediction)` equals the 0/1 label (1 = hateful)."""
    return hm_label(prediction) == _binary_label(label, "yes", "no")


def hm_score(preds: Sequence, labels: Sequence) -> float:
    """Hateful Memes accuracy × 100 of `hm_correct`."""
    _check_pairs(preds, labels, "hm_score")
    return 100.0 * sum(hm_correct(p, y) for p, y in zip(preds, labels)) / len(preds)


# ---------------------------------------------------------------------------------------------------------------
# IconVQA: docs/evaluation-semantics.md §3

ICONVQA_PAD_LOSS = 9999.0


def iconvqa_choice(losses: Sequence[float], n_slots: int | None = None) -> int:
    """Index of the candidate the official likelihood ranking picks (§3).

    The row is padded with `ICONVQA_PAD_LOSS` (9999) up to `n_slots` (the largest number of candidates in the
    official batch; None = no padding), then sorted ascending as torch sorts: NaN after everything, +inf after
    9999. Ties go to the lowest index (the official GPU sort leaves tie order unspecified). The result can be a
    padding slot (index >= len(losses)) when every real loss is above 9999 or NaN; that is never the answer.
    """
    values = [float(v) for v in losses]
    if not values:
        raise MiniGPTv2Error("iconvqa_choice needs at least one candidate loss")
    if n_slots is not None:
        if n_slots < len(values):
            raise MiniGPTv2Error(f"iconvqa_choice: n_slots {n_slots} < {len(values)} candidate losses")
        values += [ICONVQA_PAD_LOSS] * (n_slots - len(values))

    def rank(i: int):
        v = values[i]
        return (1, 0.0, i) if math.isnan(v) else (0, v, i)

    return min(range(len(values)), key=rank)
