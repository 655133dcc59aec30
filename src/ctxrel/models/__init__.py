"""Models: turning a model spec (hub id, local directory, GGUF, alias) into a backend, and swapping checkpoints.

Owns loading (`loading`: model + tokenizer, GGUF conversion, PEFT adapters, trainable parameters, a
checkpoint's trained weights) and `adapter_swap` (one resident base model, each checkpoint's weights swapped in,
for `eval --run`). The model interface itself is declared in backends/base.py, beside this folder, in the same
layer. It may import core/, config/, rundir/, benchmarks/ and backends/; never evaluate/, train/ or above.
Nothing here imports torch at import time.
"""
