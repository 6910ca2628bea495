"""Training: `minigptv2 train` (loop.py: the loop, checkpoints, DDP/FSDP) and its schedule and overrides
(schedule.py)."""
