"""Reading annotation files (minigptv2/data/annotations.py), shared by the training readers and the eval benches:
the formats each reads, and errors that name the file, the line or record, and the field."""
import json

import pytest

from minigptv2.data.annotations import field, flickr_image, read_list, read_records
from minigptv2.errors import MiniGPTv2Error


def test_read_records_takes_a_list_an_object_holding_one_or_jsonl(tmp_path):
    recs = [{"a": 1}, {"a": 2}]
    for name, text in (("l.json", json.dumps(recs)), ("q.json", json.dumps({"info": 1, "questions": recs})),
                       ("d.json", json.dumps({"x": recs[0], "y": recs[1]})),
                       ("r.jsonl", "\n".join(json.dumps(r) for r in recs) + "\n\n")):
        (tmp_path / name).write_text(text)
        assert read_records(tmp_path / name) == recs, name


@pytest.mark.parametrize("name, text, message", [
    ("bad.jsonl", '{"a": 1}\n\n{"a": \n', r"bad.jsonl: line 3: invalid JSON at column 7"),
    ("bad.json", '[{"a": 1},\n oops]', r"bad.json: invalid JSON at line 2 column 2"),
    ("num.json", "3", r"num.json: expected a JSON list of records, got int"),
    ("deep.json", "[" * 100_000, r"deep.json: invalid JSON: RecursionError"),
])
def test_read_records_errors_name_the_file_and_line(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(MiniGPTv2Error, match=message):
        read_records(tmp_path / name)


def test_missing_folder_and_non_utf8_files(tmp_path):
    with pytest.raises(MiniGPTv2Error, match="annotation file not found: .*nope.json"):
        read_records(tmp_path / "nope.json")
    with pytest.raises(MiniGPTv2Error, match="annotation path is a folder"):
        read_list(tmp_path)
    (tmp_path / "latin.json").write_bytes(b'["\xe9"]')
    with pytest.raises(MiniGPTv2Error, match="latin.json is not UTF-8 text"):
        read_records(tmp_path / "latin.json")
    (tmp_path / "obj.json").write_text('{"questions": []}')
    with pytest.raises(MiniGPTv2Error, match="obj.json: expected a JSON list of records, got dict"):
        read_list(tmp_path / "obj.json")           # the training readers take a list only


def test_field_checks_types_and_none_takes_any_value():
    assert field({"k": [1]}, "k", list, "f.json", 0) == [1]
    assert field({"k": True}, "k", None, "f.json", 0) is True
    assert field({}, "k", str, "f.json", 0, optional=True) is None
    with pytest.raises(MiniGPTv2Error, match=r"f.json: record 2: missing field 'k'"):
        field({}, "k", None, "f.json", 2)
    with pytest.raises(MiniGPTv2Error, match=r"f.json: record 0: field 'w' must be int or float, got bool"):
        field({"w": True}, "w", (int, float), "f.json", 0)
    with pytest.raises(MiniGPTv2Error, match=r"f.json: record 1: expected a JSON object, got list"):
        field([], "k", str, "f.json", 1)
    assert flickr_image({"image_id": 7}, "f.json", 0) == "7.jpg"
    assert flickr_image({"image_id": 7, "image": "a/b.png"}, "f.json", 0) == "a/b.png"
    with pytest.raises(MiniGPTv2Error, match=r"record 0: missing field 'image_id' \(or 'image'\)"):
        flickr_image({"phrase": "x"}, "f.json", 0)
