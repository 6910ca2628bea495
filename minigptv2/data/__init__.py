"""Training data: the official datasets and the mixture file (datasets.py), reading annotation files (annotations.py,
also used by the eval benches), and `minigptv2 data` (cli.py) with its converters from COCO / CSV / JSONL
(convert.py) and the checks run before training (check.py)."""
