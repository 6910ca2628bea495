"""The `minigptv2` command and the cheap `import minigptv2`.

* `import minigptv2` and `minigptv2 --help` (and the --help of the subcommands cli.py defines) import neither torch
  nor transformers; the registration with transformers' Auto classes still holds in every import order (the
  docstring of minigptv2/__init__.py), including a failed registration, a reload and another thread. These run in
  a fresh interpreter each: this one has torch already. No timings here: benchmarks/cli_help.py, BENCHMARKS.md.
* every subcommand's --help works, and every argument of every subcommand has a help line (through each module's
  `parser()`).
"""
import argparse
import importlib
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT
from minigptv2 import cli

HEAVY = ("torch", "transformers")

# check(): the Auto classes know minigptv2, asked before minigptv2 looks up any of its names (which would import
# config.py and so transformers), and the finder has left sys.meta_path
CHECK = '''
import sys

def check():
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING

    config = AutoConfig.for_model("minigptv2")
    found = type(config), MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING[type(config)], PROCESSOR_MAPPING[type(config)]
    import minigptv2
    assert found == (minigptv2.MiniGPTv2Config, minigptv2.MiniGPTv2ForConditionalGeneration,
                     minigptv2.MiniGPTv2Processor), found
    assert not [f for f in sys.meta_path if type(f).__module__ == "minigptv2"], sys.meta_path
    return True
'''

ORDERS = {
    "minigptv2 then transformers": """
        import minigptv2
        from transformers import AutoConfig, AutoModelForImageTextToText
        check()
    """,
    "transformers then minigptv2": """
        import transformers
        import minigptv2
        check()
    """,
    # config.py imports transformers while half-imported: registration waits for it to finish
    "transformers first imported by a minigptv2 module": """
        from minigptv2.config import MiniGPTv2Config
        check()
        import minigptv2.generate                  # a submodule does not replace the public name
        assert minigptv2.generate is sys.modules["minigptv2.generate"].generate
    """,
    "a failed registration raises from the import, and the next import tries again": """
        import minigptv2
        real = minigptv2.register
        def fail():
            raise RuntimeError("registration failed")
        minigptv2.register = fail
        for _ in range(2):
            try:
                import transformers
            except RuntimeError:
                assert "transformers" not in sys.modules
            else:
                raise AssertionError("import transformers did not raise")
        minigptv2.register = real
        check()
    """,
    "after importlib.reload, transformers imported in another thread": """
        import importlib, threading
        import minigptv2
        importlib.reload(minigptv2)
        assert sum(type(f).__module__ == "minigptv2" for f in sys.meta_path) == 1
        done = []
        t = threading.Thread(target=lambda: done.append(check()))
        t.start()
        t.join()
        assert done == [True]
    """,
}


def python(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return r


def test_import_minigptv2_imports_neither_torch_nor_transformers():
    r = python("-c", "import sys, minigptv2, minigptv2.cli\n"
               "assert set(minigptv2.__all__) <= set(dir(minigptv2))\n"
               f"print(sorted(set({HEAVY!r}) & set(sys.modules)))")
    assert r.stdout.strip() == "[]"


@pytest.mark.parametrize("order", ORDERS)
def test_registered_with_the_auto_classes(order):
    python("-c", CHECK + textwrap.dedent(ORDERS[order]))


@pytest.mark.parametrize("args", [[], ["generate"], ["convert"], ["migrate"], ["export"], ["demo"]], ids=" ".join)
def test_help_imports_no_torch(args):
    """`python -m minigptv2.cli [SUBCOMMAND] --help`, with the import log of -X importtime."""
    r = python("-X", "importtime", "-m", "minigptv2.cli", *args, "--help")
    imported = {line.rsplit("|", 1)[1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert not {m for m in imported if m.split(".")[0] in HEAVY}
    assert r.stdout.startswith(f"usage: {' '.join(['minigptv2', *args])} ")
    if not args:
        for name, (text, _) in cli.SUBCOMMANDS.items():
            assert f"    {name} " in r.stdout


@pytest.mark.parametrize("args", [[name] for name in cli.SUBCOMMANDS]
                         + [["data", sub] for sub in ("example", "convert", "check", "tokenizer")], ids=" ".join)
def test_every_subcommand_has_help(args, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main([*args, "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: minigptv2 {' '.join(args)} ")


def subcommands(p: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in p._actions if isinstance(a, argparse._SubParsersAction)), None)


def without_help(p: argparse.ArgumentParser) -> list[str]:
    """The arguments of `p` and of its subcommands, recursively, with no help line (and subcommands without one)."""
    bad = [f"{p.prog} {a.option_strings or a.dest}" for a in p._actions
           if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
           and (not (a.help or "").strip() or a.help == argparse.SUPPRESS)]
    if sub := subcommands(p):
        bad += [f"{p.prog} {c.dest}: no help line" for c in sub._choices_actions if not (c.help or "").strip()]
        for q in sub.choices.values():
            bad += without_help(q)
    return bad


def test_the_subcommand_list_has_help_lines():
    assert not without_help(cli.parser())


@pytest.mark.parametrize("name", cli.SUBCOMMANDS)
def test_every_argument_has_help(name):
    where = cli.SUBCOMMANDS[name][1]
    if isinstance(where, str):
        module = importlib.import_module(where)
        if not hasattr(module, "parser"):
            pytest.skip(f"{where} has no parser() yet, its main builds the parser inline; this test checks it as "
                        "soon as it has one")
        p = module.parser()
    else:
        p = subcommands(cli.parser()).choices[name]
    assert p.prog == f"minigptv2 {name}"
    assert not without_help(p)
