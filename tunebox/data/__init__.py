"""Training data: rows to samples, answer formats, prompts, packing, tokenizers."""
