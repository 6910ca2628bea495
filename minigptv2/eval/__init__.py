"""Evaluation: `minigptv2 eval` (cli.py), the runner shared with `eval --bench jsonl` (run.py, jsonl.py), and the
metrics of the official evaluators (metrics.py: RefCOCO and boxes; vqa_metrics.py: the VQA-style sets)."""
