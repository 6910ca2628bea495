"""Training: `minigptv2 train` (cli.py) around the loop (loop.py), with the run's configuration and stage presets
(config.py), its data in micro-batches (batches.py), checkpoints and resume (checkpoints.py), device and
torchrun processes (distributed.py), and the schedule, data check and evaluation around it (schedule.py)."""
