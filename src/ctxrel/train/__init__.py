"""Instruction finetuning: data, trainable parameters, the loop, and studies (train + evaluate + plot)."""
