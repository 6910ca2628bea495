import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _find_fixtures() -> Path:
    env = os.environ.get("MINIGPTV2_FIXTURES")
    cands = [Path(env)] if env else []
    cands += [ROOT / "tests" / "fixtures" / "official", ROOT.parent / "shared" / "reference" / "official-fixtures"]
    for c in cands:
        if (c / "minigptv2_tiny_ckpt.pth").is_file():
            return c
    return cands[0]


FIXTURES = _find_fixtures()
