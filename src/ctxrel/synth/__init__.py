"""Synthetic lab: a generated world of facts, a tiny transformer pretrained on it from scratch, then
instruction-finetuned on C / C+S / S mixtures and scored as a ctxrel study (DESIGN §3)."""
