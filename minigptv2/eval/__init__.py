"""Evaluation: `minigptv2 eval` (cli.py: the command and run_bench, one official bench end to end), the official
benches' names, prompts and loaders (benches.py), their scorers (scoring.py) over the official evaluators' metrics
(metrics.py: RefCOCO and boxes; vqa_metrics.py: the VQA-style sets), our synthetic benchmark (synthetic.py), the
report and example grid (report.py), the runner every bench shares (run.py), the `jsonl` bench for your own data
(jsonl.py), and the lmms-eval / VLMEvalKit adapter (harness.py)."""
