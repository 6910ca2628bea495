"""recipes/nano_conversation.py: the web demo's conversation as a measure, on the installed nano model."""
from recipes import nano_conversation as conv


def test_count_alone_and_after_a_refer_answer_on_fresh_scenes(capsys):
    from minigptv2 import load

    model, processor = load()
    m = conv.measure(model, processor, range(1000, 1008), batch_size=5)    # two batches, the second short
    # measured on the installed model: 8 of 8 in both (docs/nano.md has the 150-scene figures)
    assert m["n"] == 8 and m["alone"] >= 0.875 and m["after_refer"] >= 0.875
    assert conv.main(["--n", "1"]) == 0 and '"n": 1' in capsys.readouterr().out
