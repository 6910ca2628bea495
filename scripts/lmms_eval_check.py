"""Run the nano model through lmms-eval's generic Hugging Face chat class, unchanged (docs/evaluation.md).

    python scripts/lmms_eval_check.py [--batch-sizes 1,4] [--device cpu]

Needs an environment with lmms-eval (0.7.x) beside this package. `--model huggingface` is
`lmms_eval/models/chat/huggingface.py`: AutoConfig / AutoModelForImageTextToText-or-AutoModel / AutoProcessor /
AutoTokenizer on `pretrained`, the processor's chat template, `model.generate(**processor(...))` and
`processor.batch_decode`. This script builds the requests as lmms-eval builds them for a chat task
(`ConfigurableMessagesTask._build_user_turn`: the image as a PIL image, then the text; the Instance arguments of
`construct_requests`), on synthetic scenes, answers them with `generate_until` at each batch size, and compares
each answer with `minigptv2.generate` on the same loaded model (lmms-eval always loads bfloat16), one request per
call, greedy, same max_new_tokens. It prints one JSON line and exits 1 if any answer differs.

The class picks its Auto class with `config.model_type in AutoModelForImageTextToText._model_mapping.keys()`,
which holds config classes, not names, so it falls back to AutoModel for every model: `import minigptv2` registers
the model with AutoModel too.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import random
import sys
from importlib.metadata import version

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import minigptv2  # noqa: E402  (registers the model with transformers' Auto classes)
from minigptv2.synthetic import make_scene  # noqa: E402

MAX_NEW_TOKENS = 32
TASK, SPLIT = "minigptv2_synth", "test"


def docs(n_scenes: int = 2) -> list[dict]:
    """Per scene, an object whose shape is unique there (and not asked about before): "[refer] <colour> <shape>"
    and "[vqa] what color is the <shape>?"."""
    out, seed = [], 0
    while len(out) < 2 * n_scenes:
        scene = make_scene(random.Random(seed))
        seed += 1
        shapes = [o.shape for o in scene.objects]
        used = {d["question"] for d in out}
        obj = next((o for o in scene.objects if shapes.count(o.shape) == 1 and f"[refer] {o.name}" not in used), None)
        if obj is not None:
            out += [{"image": scene.image, "question": f"[refer] {obj.name}"},
                    {"image": scene.image, "question": f"[vqa] what color is the {obj.shape}?"}]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-sizes", default="1,4", help="lmms-eval --batch_size values to run (comma-separated)")
    ap.add_argument("--device", default="cpu", help="model_args device (and device_map)")
    args = ap.parse_args(argv)

    from loguru import logger

    importlib.import_module("lmms_eval.models")     # it logs to stdout: to stderr here (stdout is the JSON line)
    logger.remove()
    logger.add(sys.stderr, level="WARNING")
    from lmms_eval.api.instance import Instance
    from lmms_eval.api.task import ConfigurableMessagesTask
    from lmms_eval.models.chat.huggingface import Huggingface

    ds = docs()

    def doc_to_messages(doc):
        return ConfigurableMessagesTask._build_user_turn([doc["image"]], doc["question"])

    gen_kwargs = {"max_new_tokens": MAX_NEW_TOKENS, "temperature": 0, "num_beams": 1, "do_sample": False}
    report = {"lmms_eval": version("lmms_eval"), "transformers": version("transformers"), "requests": len(ds),
              "questions": [d["question"] for d in ds]}
    lm = None
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        lm = Huggingface(pretrained=str(minigptv2.NANO_DIR), device=args.device, device_map=args.device,
                         batch_size=bs)
        lm.task_dict = {TASK: {SPLIT: ds}}            # as the evaluator: lm.task_dict[task] = task.dataset
        requests = [Instance(request_type="generate_until", idx=0,
                             arguments=(d["question"], doc_to_messages, dict(gen_kwargs), i, TASK, SPLIT),
                             metadata={"task": TASK, "doc_id": i, "repeats": 1}) for i, d in enumerate(ds)]
        report[f"lmms_eval_bs{bs}"] = [r.text if hasattr(r, "text") else r for r in lm.generate_until(requests)]
    report["dtype"] = str(lm.model.dtype).removeprefix("torch.")
    ref = [minigptv2.generate(lm.model, lm.processor, [d["image"]], [d["question"]],
                              max_new_tokens=MAX_NEW_TOKENS)[0].text for d in ds]
    report["minigptv2_generate"] = ref
    report["matches"] = {k.removeprefix("lmms_eval_"): sum(a == b for a, b in zip(v, ref))
                         for k, v in list(report.items()) if k.startswith("lmms_eval_bs")}
    print(json.dumps(report))
    return 0 if all(m == len(ds) for m in report["matches"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
