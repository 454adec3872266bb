"""Models and checkpoints: the registry, weights on disk, the .ckpt format, LoRA, MindFormers."""
