"""The core: pure functions on text and numbers that every other folder builds on.

Owns the error types (`errors`), strict JSON (`strict_json`), answer matching (`matching`), the metrics and their
bootstrap (`metrics`), the contrast-decoding math (`decoding`), prompt templates (`prompts`), entity substitution
(`entity_swap`, the engine behind `ctxrel curate substitute`), the probes' math (`probe_math`), tensor
fingerprints read from safetensors (`fingerprint`) and the cache location (`cache`). It may import nothing of
ctxrel outside core/ (the lowest layer; tests/test_layering.py checks it), and no module here imports torch at
import time.
"""
