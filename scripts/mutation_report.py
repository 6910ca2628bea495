"""Scope and report of the mutation run (scripts/mutation.sh, docs/mutation-testing.md).

    python scripts/mutation_report.py --patterns [module ...]   # the mutmut mutant-name patterns of the scope
    python scripts/mutation_report.py [module ...]              # per-module counts from mutants/*.meta
    python scripts/mutation_report.py --survivors [module ...]  # every surviving / untested mutant, by name

mutmut mutates whole files; SCOPE names, per module, the functions whose mutants are run and counted (all of
them for the pure modules; the text side of the processor and the config's validation).
"""
import fnmatch
import json
import sys
from collections import Counter
from pathlib import Path

P = "xǁMiniGPTv2Processorǁ"     # mutmut's mangling of a method name: x ǁ class ǁ method
SCOPE = {
    "boxes": ["*"], "prompts": ["*"], "eval.metrics": ["*"], "eval.vqa_metrics": ["*"], "constrained": ["*"],
    "processor": ["x__turns"] + [P + m for m in (
        "_parse", "_mark", "encode_items", "prompt_ids", "_render", "apply_chat_template", "__call__",
        "training_example", "truncate", "decode", "batch_decode", "decode_answer", "decode_answer_text",
        "post_process_generation", "post_process_image_text_to_text")],
    "config": ["xǁMiniGPTv2VisionConfigǁcheck", "xǁMiniGPTv2Configǁcheck", "x__check_int"],
}
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 36: "timeout", -24: "timeout",
          24: "timeout", 152: "timeout", 255: "timeout", None: "not checked"}
COLUMNS = ("killed", "survived", "no tests", "timeout", "other")


def patterns(modules):
    return [f"minigptv2.{m}.{f}__mutmut_*" for m in modules for f in SCOPE[m]]


def results(module: str) -> dict:
    meta = Path("mutants") / "minigptv2" / f"{module.replace('.', '/')}.py.meta"
    codes = json.loads(meta.read_text())["exit_code_by_key"] if meta.is_file() else {}
    pats = patterns([module])
    return {k: STATUS.get(v, "other") for k, v in codes.items() if any(fnmatch.fnmatchcase(k, p) for p in pats)}


def main(argv) -> int:
    flags = {a for a in argv if a.startswith("--")}
    modules = [a for a in argv if not a.startswith("--")] or list(SCOPE)
    unknown = set(modules) - set(SCOPE)
    if unknown:
        print(f"unknown module(s) {sorted(unknown)}; choose from {sorted(SCOPE)}", file=sys.stderr)
        return 2
    if "--patterns" in flags:
        print("\n".join(patterns(modules)))
        return 0
    if "--survivors" in flags:
        for m in modules:
            for k, s in sorted(results(m).items()):
                if s not in ("killed", "timeout"):
                    print(f"{s:12} {k}")
        return 0
    print("| module | mutants | " + " | ".join(COLUMNS) + " | not checked | surviving |")
    print("|---" * (len(COLUMNS) + 4) + "|")
    total = Counter()
    for m in modules:
        c = Counter(results(m).values())
        total.update(c)
        print(row(m, c))
    print(row("**all**", total))
    return 0


def row(name: str, c: Counter) -> str:
    checked = sum(v for k, v in c.items() if k != "not checked")
    alive = c["survived"] + c["no tests"]
    share = f"{100 * alive / checked:.1f} %" if checked else "-"
    return (f"| {name} | {checked} | " + " | ".join(str(c[k]) for k in COLUMNS) +
            f" | {c['not checked']} | {share} |")


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
