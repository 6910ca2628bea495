"""Reading annotation files and checking their records' fields: the one place that does it, for the training
readers (datasets.py), the converters (convert.py) and the evaluation benches (minigptv2/eval/benches.py,
minigptv2/eval/synthetic.py). Every error is a MiniGPTv2Error naming the file, and the record and field where
there is one.
"""
from __future__ import annotations

import json

from minigptv2.errors import MiniGPTv2Error


def read_text(path) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise MiniGPTv2Error(f"annotation file not found: {path}") from None
    except IsADirectoryError:
        raise MiniGPTv2Error(f"annotation path is a folder, not a file: {path}") from None
    except UnicodeDecodeError as e:
        raise MiniGPTv2Error(f"annotation file {path} is not UTF-8 text ({e})") from None
    except OSError as e:
        raise MiniGPTv2Error(f"cannot read annotation file {path}: {e.strerror or e}") from None


def _parse(text: str, where, one_line: bool = False):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        at = f"column {e.colno}" if one_line else f"line {e.lineno} column {e.colno}"
        raise MiniGPTv2Error(f"{where}: invalid JSON at {at}: {e.msg}") from None
    except (ValueError, RecursionError) as e:   # an over-long integer literal, nesting too deep
        raise MiniGPTv2Error(f"{where}: invalid JSON: {type(e).__name__}: {str(e)[:200]}") from None


def _jsonl(path, text: str):
    """(line number, "file: line N", value) for each non-blank line of a .jsonl text, parsed in order."""
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            yield n, f"{path}: line {n}", _parse(line, f"{path}: line {n}", one_line=True)


def read_jsonl_objects(path) -> list[tuple[int, str, dict]]:
    """A .jsonl file's records, one JSON object a line (blank lines skipped), each with its line number and its
    place for messages ("file: line N")."""
    out = []
    for n, where, r in _jsonl(path, read_text(path)):
        if not isinstance(r, dict):
            raise MiniGPTv2Error(f"{where}: expected a JSON object, got {type(r).__name__}")
        out.append((n, where, r))
    return out


def read_json(path):
    return _parse(read_text(path), path)


def read_list(path) -> list:
    """A file holding a JSON list of records (the training readers' formats)."""
    data = read_json(path)
    if not isinstance(data, list):
        raise MiniGPTv2Error(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def read_records(path) -> list:
    """The records of an evaluation file: a JSON list, an object holding one ({"questions" / "annotations" /
    "data": [...]}, else its values), or, for a .jsonl file, one JSON value a line (blank lines skipped)."""
    text = read_text(path)
    if str(path).endswith(".jsonl"):
        return [r for _, _, r in _jsonl(path, text)]
    data = _parse(text, path)
    if isinstance(data, dict):
        for key in ("questions", "annotations", "data"):
            if isinstance(data.get(key), list):
                return data[key]
        return list(data.values())
    if not isinstance(data, list):
        raise MiniGPTv2Error(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return data


def where(path, i: int) -> str:
    return f"{path}: record {i}"


def field(rec, key: str, types, path, i: int, optional: bool = False):
    """rec[key] checked against `types` (a type or a tuple of types; a bool never counts as a number; None takes
    any value). With `optional`, a missing key or null gives None."""
    if not isinstance(rec, dict):
        raise MiniGPTv2Error(f"{where(path, i)}: expected a JSON object, got {type(rec).__name__}")
    if key not in rec:
        if optional:
            return None
        raise MiniGPTv2Error(f"{where(path, i)}: missing field '{key}'")
    v = rec[key]
    if (optional and v is None) or types is None:
        return v
    types = types if isinstance(types, tuple) else (types,)
    if not isinstance(v, types) or isinstance(v, bool):
        want = " or ".join(t.__name__ for t in types)
        raise MiniGPTv2Error(f"{where(path, i)}: field '{key}' must be {want}, got {type(v).__name__}")
    return v


def str_list(rec, key: str, path, i: int, allow_str: bool = False) -> list[str]:
    v = field(rec, key, (list, str) if allow_str else list, path, i)
    if isinstance(v, str):
        return [v]
    if not v or not all(isinstance(s, str) for s in v):
        raise MiniGPTv2Error(f"{where(path, i)}: field '{key}' must be a non-empty list of strings")
    return v


def flickr_image(rec, path, i: int) -> str:
    """Flickr files name images by `image_id` ({id}.jpg); an explicit "image" path wins (our extension)."""
    img = field(rec, "image", str, path, i, optional=True)
    if img is not None:
        return img
    if not isinstance(rec, dict) or "image_id" not in rec:
        raise MiniGPTv2Error(f"{where(path, i)}: missing field 'image_id' (or 'image')")
    return f"{field(rec, 'image_id', (str, int), path, i)}.jpg"
