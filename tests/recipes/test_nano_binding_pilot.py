"""recipes/nano_binding_pilot.py: its arguments, the binding measure (the pointing loss: tests/train/test_pointing.py; a toy end-to-end run
takes ~17 s here; the pilot itself was checked end to end at toy size by hand: docs/nano.md, research log)."""
import pytest

from recipes import nano_binding_pilot as pilot


def test_defaults_are_the_control_pilot():
    a = pilot.parse(["--work", "w"])
    assert (a.steps, a.seed, a.variant, a.bind_steps, a.eval_limit) == (1500, 0, "control", 300, 150)
    assert a.vit_steps is None and a.data_n is None      # None: RECIPE's numbers


def test_bind_variant_needs_a_phase_shorter_than_the_run(capsys):
    a = pilot.parse(["--work", "w", "--variant", "bind", "--steps", "1500", "--bind-steps", "300", "--seed", "1"])
    assert (a.variant, a.bind_steps, a.seed) == ("bind", 300, 1)
    for bad in (["--bind-steps", "1500"], ["--bind-steps", "0"], ["--variant", "other"]):
        with pytest.raises(SystemExit):
            pilot.parse(["--work", "w", "--variant", "bind", "--steps", "1500", *bad])
    with pytest.raises(SystemExit):
        pilot.parse([])                                  # --work is required


def test_bind_phase_draws_refer_and_phrase_to_box_on_multi_object_scenes():
    assert set(pilot.BIND_RATIOS) == {"refcoco", "flickr_phrase_to_object"}
    assert pilot.BIND_DATA["object_weights"][0] == 0 and pilot.BIND_DATA["seed"] != 2    # not data_all's scenes


def test_binding_counts_answers_on_the_asked_object_among_those_on_any_object(tmp_path):
    import json

    scenes = [{"image": "images/0.png", "objects": [{"box": [0, 0, 10, 10]}, {"box": [20, 20, 30, 30]}]},
              {"image": "images/1.png", "objects": [{"box": [0, 0, 10, 10]}]}]
    rows = [{"task": "refer", "id": "synth_0_0", "image": "t/images/0.png", "pred_box_xyxy": [0, 0, 10, 10]},
            {"task": "refer", "id": "synth_0_1", "image": "t/images/0.png", "pred_box_xyxy": [0, 0, 10, 10]},
            {"task": "refer", "id": "synth_1_0", "image": "t/images/1.png", "pred_box_xyxy": [50, 50, 60, 60]},
            {"task": "identify", "id": "x", "image": "t/images/0.png"}]
    (tmp_path / "s.jsonl").write_text("\n".join(map(json.dumps, scenes)))
    (tmp_path / "p.jsonl").write_text("\n".join(map(json.dumps, rows)))
    b = pilot.binding(tmp_path / "p.jsonl", tmp_path / "s.jsonl")
    assert b == {"on_object": 1.0, "bound": 0.5, "chance": 0.5, "n": 2}     # one box for both names: chance


def test_point_variant_trains_recipe_stage_all_with_the_pointing_loss():
    a = pilot.parse(["--work", "w", "--variant", "point", "--point-weight", "0.1", "--point-layer", "2"])
    assert (a.point_weight, a.point_layer) == (0.1, 2)


def test_then_takes_recipe_stages_and_from_needs_then():
    a = pilot.parse(["--work", "w", "--from", "point_w0.5_l1_s1_3000", "--then", "focus_identify,focus_vqa"])
    assert (a.from_run, a.then, a.then_steps) == ("point_w0.5_l1_s1_3000", ["focus_identify", "focus_vqa"], None)
    assert pilot.parse(["--work", "w"]).then == []
    for bad in (["--then", "no_such_stage"], ["--from", "x"]):
        with pytest.raises(SystemExit):
            pilot.parse(["--work", "w", *bad])
