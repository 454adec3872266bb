"""Training: the plan of a LoRA run (steps, checkpoints, what a resume must match), its inputs for
MindFormers' Trainer, the launch of its workers, and what it leaves behind. jobs/train.py wires them."""
