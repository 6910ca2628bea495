"""The processor's text side (minigptv2/processor.py): messages -> turns, prompt strings <-> structure, items ->
ids and labels, the transformers call, training examples and decoding. Expected values are written out by hand
from the templates in minigptv2/prompts.py."""
import pytest
import torch
from PIL import Image

from helpers import tiny_model
from minigptv2 import prompts
from minigptv2.config import MiniGPTv2Config
from minigptv2.errors import MiniGPTv2Error
from minigptv2.processor import IGNORE, Prompt, _turns, build_processor

IMG = {"type": "image"}


def text(t):
    return {"type": "text", "text": t}


@pytest.fixture(scope="module")
def proc(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("pt"))[1]


def variant(proc, **cfg):
    """The same tokenizer with other config values."""
    return build_processor(proc.tok, MiniGPTv2Config.from_dict({**proc.config.to_dict(), **cfg}))


@pytest.fixture(scope="module")
def chat_proc(tmp_path_factory):
    """A "chat"-template processor (a ChatML byte-level BPE tokenizer, tests/test_llm.py)."""
    from test_llm import hf_folder, small_vision_config

    from minigptv2.llm import from_llm

    return from_llm(hf_folder(tmp_path_factory.mktemp("chat"), "llama"), small_vision_config())[1]


# ---- messages -> (questions, answers, has_image, image) ------------------------------------------------------
PIC = Image.new("RGB", (4, 4))


@pytest.mark.parametrize("messages, want", [
    ([{"role": "user", "content": "hi"}], (["hi"], [], False, None)),
    (({"role": "user", "content": "hi"},), (["hi"], [], False, None)),                    # a tuple is a list
    ([{"role": "user", "content": [IMG, text("[refer]"), text("red circle")]}],
     (["[refer] red circle"], [], True, None)),
    ([{"role": "user", "content": [text("a"), {"type": "image_url", "image_url": {"url": "x"}}]}],
     (["a"], [], True, None)),
    ([{"role": "user", "content": [IMG]}], ([""], [], True, None)),
    ([{"role": "user", "content": [{"type": "image", "image": PIC}, text("q")]}], (["q"], [], True, PIC)),
    ([{"role": "user", "content": [{"type": "image", "path": "a.png", "url": "u"}]}], ([""], [], True, "a.png")),
    ([{"role": "user", "content": [{"type": "image", "image": None, "url": "http://x/i.png"}]}],
     ([""], [], True, "http://x/i.png")),
    ([{"role": "user", "content": [IMG, text("q1")]}, {"role": "assistant", "content": [text("a1")]},
      {"role": "user", "content": "q2"}], (["q1", "q2"], ["a1"], True, None)),
])
def test_turns_of_valid_messages(messages, want):
    assert _turns(messages) == want


@pytest.mark.parametrize("messages, match", [
    ([], r"^messages must be a non-empty list of \{'role', 'content'\} dicts$"), ("hi", "non-empty list"),
    (None, "non-empty list"), ({"role": "user"}, "non-empty list"),
    (["hi"], "message 0: role must be 'user' or 'assistant'"),
    ([{"role": "system", "content": "x"}], r"message 0: .*no system prompt"),
    ([{"content": "x"}], "message 0: role"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": 5}], "message 1: content must be a string"),
    ([{"role": "user", "content": {"type": "text", "text": "a"}}], "message 0: content must be"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": [IMG]}, {"role": "user", "content": "b"}],
     "message 1: MiniGPT-v2 takes one image, in the first user message"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": [IMG]}],
     "message 2: MiniGPT-v2 takes one image"),
    ([{"role": "user", "content": [IMG, IMG]}], "message 0: MiniGPT-v2 takes one image"),
    ([{"role": "user", "content": [{"type": "audio"}]}], "message 0: unknown content part"),
    ([{"role": "user", "content": [{"type": "text", "text": 3}]}], "unknown content part"),
    ([{"role": "user", "content": ["plain"]}], "unknown content part"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
     "^messages must alternate user / assistant, starting and ending with the user$"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "must alternate"),
    ([{"role": "assistant", "content": "a"}, {"role": "user", "content": "b"}], "must alternate"),
])
def test_turns_refuse_malformed_messages(messages, match):
    with pytest.raises(MiniGPTv2Error, match=match):
        _turns(messages)


# ---- apply_chat_template: the prompt string and its structure --------------------------------------------------
def test_apply_chat_template_renders_the_official_and_the_training_form(proc):
    one = [{"role": "user", "content": [IMG, text("[refer] red circle")]}]
    p = proc.apply_chat_template(one)
    assert isinstance(p, Prompt) and p == "<s><s>[INST] <Img><ImageHere></Img> [refer] red circle [/INST]"
    assert p.items == (prompts.BOS, prompts.BOS, prompts.Text("[INST] <Img>"), prompts.IMAGE,
                       prompts.Text("</Img> [refer] red circle [/INST]"))
    two = one + [{"role": "assistant", "content": "{<1><2><3><4>}"}, {"role": "user", "content": "and blue?"}]
    assert proc.apply_chat_template(two) == ("<s><s>[INST] <Img><ImageHere></Img> [refer] red circle [/INST]"
                                             "{<1><2><3><4>}</s><s>[INST] and blue? [/INST]")
    trained = variant(proc, prompt_form="training")
    assert trained.apply_chat_template(one) == "<s>[INST] <Img><ImageHere></Img> [refer] red circle  [/INST]"
    assert proc.apply_chat_template([{"role": "user", "content": "hi"}]) == "<s><s>[INST] hi [/INST]"
    batch = proc.apply_chat_template([one, [{"role": "user", "content": "hi"}]])
    assert batch == [p, "<s><s>[INST] hi [/INST]"]


def test_apply_chat_template_tokenized(proc):
    tok = proc.tok
    msgs = [{"role": "user", "content": [{"type": "image", "image": PIC}, text("[vqa] what color")]}]
    out = proc.apply_chat_template(msgs, tokenize=True)
    assert out["input_ids"].tolist() == [proc.prompt_ids(["[vqa] what color"])]
    assert out["attention_mask"].tolist() == [[1] * out["input_ids"].shape[1]]
    assert torch.equal(out["pixel_values"], proc.image(PIC)[None])
    assert "pixel_values" not in proc.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=True)
    with pytest.raises(MiniGPTv2Error, match=r"^apply_chat_template\(tokenize=True\) needs the image itself in its "
                                             r"part: \{\"type\": \"image\", \"image\": PIL image or path\}$"):
        proc.apply_chat_template([{"role": "user", "content": [IMG, text("q")]}], tokenize=True)
    batch = proc.apply_chat_template([msgs, [{"role": "user", "content": "hi"}]], tokenize=True)
    assert torch.equal(batch["pixel_values"], proc.image(PIC)[None])             # the batch keeps its image
    assert proc.apply_chat_template([msgs, msgs], tokenize=True)["pixel_values"].shape[0] == 2
    with pytest.raises(MiniGPTv2Error, match=r"^apply_chat_template\(tokenize=True\) needs the image itself in its "
                                             r"part: \{\"type\": \"image\", \"image\": PIL image or path\}$"):
        proc.apply_chat_template([msgs, [{"role": "user", "content": [IMG, text("q")]}]], tokenize=True)
    short = [tok.bos_id, tok.bos_id] + tok.encode("[INST] hi [/INST]")
    n = batch["input_ids"].shape[1] - len(short)
    assert batch["input_ids"][1].tolist() == [proc._fill_id] * n + short         # left padding
    assert batch["attention_mask"][1].tolist() == [0] * n + [1] * len(short)


# ---- prompt strings -> structure -----------------------------------------------------------------------------
def test_plain_prompt_strings_are_parsed_at_the_markers(proc, chat_proc):
    s = "<s><s>[INST] <Img><ImageHere></Img> q [/INST]a</s>"
    assert proc._parse(s) == [prompts.BOS, prompts.BOS, prompts.Text("[INST] <Img>"), prompts.IMAGE,
                              prompts.Text("</Img> q [/INST]a"), prompts.EOS]
    assert proc._parse("") == [] and proc._parse("<ImageHere>") == [prompts.IMAGE]
    with pytest.raises(MiniGPTv2Error, match="a prompt must be a string, got int"):
        proc._parse(5)
    # a chat template's prompt: <s> and </s> are its own text (special tokens parsed), only the image is structure
    assert chat_proc._parse("<s>x<ImageHere></s>") == [prompts.Text("<s>", template=True),
                                                        prompts.Text("x", template=True), prompts.IMAGE,
                                                        prompts.Text("</s>", template=True)]


def test_call_encodes_prompts_and_checks_the_images(proc):
    tok, n = proc.tok, proc.config.num_image_tokens
    img = Image.new("RGB", (30, 20), (200, 10, 10))
    p = proc.apply_chat_template([{"role": "user", "content": [IMG, text("[refer] x")]}])
    want = [tok.bos_id, tok.bos_id] + tok.encode("[INST] <Img>") + [proc.image_token_id] * n + \
        tok.encode("</Img> [refer] x [/INST]")
    for t in (p, str(p), [p]):                    # a Prompt, the same string parsed at its markers, a list
        out = proc(images=img, text=t)
        assert out["input_ids"].tolist() == [want] and out["pixel_values"].shape == (1, 3, 56, 56)
    both = proc(images=[img, None], text=[p, "<s>hello"])
    assert both["input_ids"].shape == (2, len(want)) and both["pixel_values"].shape[0] == 1
    pad = len(want) - 1 - len(tok.encode("hello"))
    assert both["attention_mask"][1].tolist() == [0] * pad + [1] * (len(want) - pad)        # left by default
    right = proc(images=[img], text=[p, "<s>hello"], padding_side="right")
    assert right["input_ids"][1].tolist()[:2] == [tok.bos_id] + tok.encode("hello")[:1]
    assert right["attention_mask"][1].tolist() == [1] * (1 + len(tok.encode("hello"))) + \
        [0] * (len(want) - 1 - len(tok.encode("hello")))
    with pytest.raises(MiniGPTv2Error, match="^the processor needs text: a prompt from apply_chat_template$"):
        proc(images=img, text=[])
    with pytest.raises(MiniGPTv2Error, match=r"1 prompt\(s\) with an image slot but 0 image\(s\)"):
        proc(text=p)
    with pytest.raises(MiniGPTv2Error, match=r"0 prompt\(s\) with an image slot but 1 image\(s\)"):
        proc(images=[img], text="<s>hello")
    with pytest.raises(MiniGPTv2Error, match=r"1 prompt\(s\) with an image slot but 2 image\(s\)"):
        proc(images=[img, img], text=p)


# ---- items -> ids and labels ---------------------------------------------------------------------------------
def test_encode_items_ids_and_labels(proc, tmp_path):
    tok, n = proc.tok, proc.config.num_image_tokens
    items = [prompts.BOS, prompts.Text("[INST] <Img>"), prompts.IMAGE, prompts.Text("q [/INST]"),
             prompts.Text("red", target=True), prompts.EOS_TARGET, prompts.EOS]
    ids, labels = proc.encode_items(items)
    head = [tok.bos_id] + tok.encode("[INST] <Img>") + [proc.image_token_id] * n + tok.encode("q [/INST]")
    assert ids == head + tok.encode("red") + [tok.eos_id, tok.eos_id]
    assert labels == [IGNORE] * len(head) + tok.encode("red") + [tok.eos_id, IGNORE]
    # text that encodes to the id marking image positions is refused (here a config that made "red" that id)
    red = tok.encode("red")[0]
    clash = variant(proc, image_token_id=red)
    long = "what is the red circle in this image and where is the square"          # shown cut to 40 characters
    with pytest.raises(MiniGPTv2Error, match=f"^the text '{long[:40]}' encodes to the image token id {red}, "):
        clash.encode_items([prompts.Text(long)])


def test_a_prompt_keeps_its_structure_where_the_string_would_not(proc):
    """User text that spells a marker stays text when the Prompt from apply_chat_template is passed; the same
    characters in a plain string are structure (by definition)."""
    p = proc.apply_chat_template([{"role": "user", "content": [IMG, text("[vqa] what is <ImageHere> or <s>?")]}])
    n = proc.config.num_image_tokens
    img = Image.new("RGB", (8, 8))
    ids = proc(images=[img], text=p)["input_ids"][0].tolist()
    assert ids.count(proc.image_token_id) == n and ids.count(proc.tok.bos_id) == 2
    plain = proc(images=[img], text=str(p))["input_ids"][0].tolist()
    assert plain.count(proc.image_token_id) == 2 * n and plain.count(proc.tok.bos_id) == 3


def test_chat_template_prompts_and_training_examples(chat_proc):
    """"chat" models: the prompt is the tokenizer's own chat template rendered for the conversation (user text
    never parsed for special tokens), the image inside the first user message, training targets as rendered."""
    hf, n = chat_proc.tok.hf, chat_proc.config.num_image_tokens
    msgs = [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"},
            {"role": "user", "content": "q2"}]
    ids = chat_proc.prompt_ids(["q1", "q2"], ["a1"], has_image=False)
    assert hf.decode(ids) == hf.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    img_ids = chat_proc.prompt_ids(["[refer] x"], has_image=True)
    k = img_ids.index(chat_proc.image_token_id)
    assert img_ids.count(chat_proc.image_token_id) == n
    assert hf.decode(img_ids[:k]) == "<|im_start|>user\n<Img>"
    assert hf.decode(img_ids[k + n:]) == "</Img> [refer] x<|im_end|>\n<|im_start|>assistant\n"
    ex = chat_proc.training_example([("q", "a")], image=torch.zeros(3, 56, 56))
    assert ex["input_ids"].count(chat_proc.image_token_id) == n
    assert chat_proc.image_token_id not in chat_proc.training_example([("q", "a")], image=None)["input_ids"]
    # template text parses special tokens, user text does not
    eot = chat_proc.tok.eos_id
    assert chat_proc.encode_items([prompts.Text("<|im_end|>", template=True)])[0] == [eot]
    assert eot not in chat_proc.encode_items([prompts.Text("<|im_end|>")])[0]


def test_prompt_ids_refuse_empty_questions(proc):
    for bad in ("", "   ", None, 3):
        with pytest.raises(MiniGPTv2Error, match="^the prompt text is empty$"):
            proc.prompt_ids(["ok", bad], ["a"])
    tok = proc.tok
    assert proc.prompt_ids(["hi"], has_image=False) == [tok.bos_id, tok.bos_id] + tok.encode("[INST] hi [/INST]")


# ---- training examples ---------------------------------------------------------------------------------------
def test_training_example_truncates_answers_and_refuses_over_long_samples(proc):
    tok = proc.tok
    short = variant(proc, max_txt_len=3, max_context_len=40)
    long_answer = "red green blue yellow purple"
    assert len(tok.encode(long_answer)) > 3
    cut = tok.decode(tok.encode(long_answer)[:3])
    assert short.truncate(long_answer) == cut
    three = tok.decode(tok.encode("red green blue"))
    assert len(tok.encode(three)) == 3 and short.truncate(three) == three      # exactly max_txt_len: kept
    e = short.training_example([("q", long_answer)], image=None)
    assert [i for i, lab in zip(e["input_ids"], e["labels"]) if lab != IGNORE] == tok.encode(cut) + [tok.eos_id]
    assert e["pixel_values"] is None
    n = len(short.training_example([("q", "red")], image=None)["input_ids"])
    fits = variant(proc, max_context_len=n)
    assert len(fits.training_example([("q", "red")], image=None)["input_ids"]) == n            # exactly the limit
    with pytest.raises(MiniGPTv2Error, match=f"training sample is {n} tokens, over max_context_len {n - 1}"):
        variant(proc, max_context_len=n - 1).training_example([("q", "red")], image=None)


def test_training_example_images_and_the_unwrapped_format(proc, chat_proc, tmp_path):
    tok = proc.tok
    img = Image.new("RGB", (30, 20), (10, 200, 10))
    e = proc.training_example([("[vqa] color?", "green")], image=img)
    assert torch.equal(e["pixel_values"], proc.image(img))
    t = torch.zeros(3, 56, 56)
    assert proc.training_example([("q", "a")], image=t)["pixel_values"] is t
    img.save(tmp_path / "i.png")
    assert proc.training_example([("q", "a")], image=str(tmp_path / "i.png"), load_image=False)["pixel_values"] == \
        str(tmp_path / "i.png")
    plain = proc.training_example([("q", "a")], image=None, chat_template=False)   # official chat_template: False
    assert plain["input_ids"] == [tok.bos_id] + tok.encode("q ") + tok.encode("a") + [tok.eos_id]
    with pytest.raises(MiniGPTv2Error, match="chat_template=False .* needs template 'llama2'"):
        chat_proc.training_example([("q", "a")], image=None, chat_template=False)
    with pytest.raises(MiniGPTv2Error, match=r"official inference form \(inference_form\) needs template 'llama2'"):
        chat_proc.training_example([("q", "a")], image=None, as_inference=True)
    ex = chat_proc.training_example([("q", "a")], image=None)
    hf = chat_proc.tok.hf
    assert hf.decode([i for i, lab in zip(ex["input_ids"], ex["labels"]) if lab != IGNORE]) == "a<|im_end|>"


# ---- decoding ------------------------------------------------------------------------------------------------
def test_decoding_drops_image_positions_and_cleans_answers(proc):
    tok = proc.tok
    ids = [proc.image_token_id] * 3 + tok.encode("red circle")
    assert proc.decode(ids) == "red circle" and proc.decode(torch.tensor(ids)) == "red circle"
    assert proc.batch_decode([ids, tok.encode("blue")]) == ["red circle", "blue"]
    answer = tok.encode("<s>[INST] q [/INST] a red circle</s> junk")          # the markers as plain text
    assert proc.decode_answer(answer) == "a red circle"
    assert proc.post_process_image_text_to_text([answer, tok.encode("blue")]) == ["a red circle", "blue"]
    assert proc.post_process_image_text_to_text(answer) == ["a red circle"]                      # one row
    rows = torch.tensor([tok.encode("red circle"), tok.encode("a red")])                 # 2 x 2 ids
    assert proc.post_process_image_text_to_text(rows) == ["red circle", "a red"]
    assert proc.decode_answer_text("<s>[INST] q [/INST] yes</s> no") == "yes"


def test_post_process_generation_boxes_in_grid_and_pixels(proc):
    text = "[INST] q [/INST] <p>cup</p> {<10><20><30><40>} and {<0><0><100><100>}</s>"
    assert proc.post_process_generation(text, (200, 100)) == {
        "text": "<p>cup</p> {<10><20><30><40>} and {<0><0><100><100>}",
        "boxes": [{"phrase": "cup", "box": [10, 20, 30, 40], "box_pixels": [20.0, 20.0, 60.0, 40.0]},
                  {"phrase": None, "box": [0, 0, 100, 100], "box_pixels": [0.0, 0.0, 200.0, 100.0]}]}
    assert proc.post_process_generation("{<1><2><3><4>}") == {"text": "{<1><2><3><4>}",
                                                               "boxes": [{"phrase": None, "box": [1, 2, 3, 4]}]}
