"""Per-checkpoint overhead of `ctxrel eval --run`: reloading the base model for every checkpoint against one
resident base with each checkpoint's weights swapped in place (`ctxrel.models.adapter_swap`), in one process.

    python perf/checkpoint_swap.py [--model smollm2-135m-instruct] [--checkpoints 9] [--rank 16] [--mode lora]

The checkpoints are made on the spot with the quickstart's shapes (LoRA rank 16, alpha 32, all linear layers, or
`--mode full|qk`) and random trained weights: only shapes and names matter for loading, so no training is needed.
Reload: `models.load_model(base, adapter=folder)` per checkpoint, as `eval --run` did. Swap: one base load, then
`ResidentModel.load(folder)` per checkpoint; its per-checkpoint overhead counts the base load spread over all the
checkpoints. Both paths run twice, alternating, and the faster run of each counts (the machine is shared). The
script also checks that the last swapped model's logits equal a fresh load's.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path


def make_checkpoints(spec: str, root: Path, n: int, mode: str, rank: int) -> list[Path]:
    import torch

    from ctxrel.config.settings import LoraSettings, TrainConfig
    from ctxrel.models.loading import load_model, select_trainable
    from ctxrel.models.loading import save_weights

    model, _, _ = load_model(spec, device="cpu")
    model = select_trainable(model, TrainConfig(mode=mode, lora=LoraSettings(rank=rank, alpha=2.0 * rank)))
    trained = [p for p in model.parameters() if p.requires_grad]
    folders = []
    for k in range(n):
        torch.manual_seed(k)
        with torch.no_grad():
            for p in trained:
                p.add_(torch.randn_like(p) * 1e-3)
        folder = root / f"step-{k:06d}"
        folder.mkdir()
        save_weights(model, folder, dict(step=k))
        folders.append(folder)
    return folders


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--checkpoints", type=int, default=9, help="checkpoints of the run (the quickstart saves 9)")
    ap.add_argument("--mode", default="lora", choices=["lora", "full", "qk"])
    ap.add_argument("--rank", type=int, default=16, help="LoRA rank (the quickstart's is 16)")
    args = ap.parse_args()

    import torch

    from ctxrel.models.adapter_swap import ResidentModel
    from ctxrel.models.loading import load_model

    with tempfile.TemporaryDirectory() as tmp:
        folders = make_checkpoints(args.model, Path(tmp), args.checkpoints, args.mode, args.rank)
        n = len(folders)
        best_reload = best_swap = float("inf")
        for _ in range(2):
            t = time.perf_counter()
            for f in folders:
                reloaded, tok, _ = load_model(args.model, adapter=str(f), device="cpu")
            best_reload = min(best_reload, time.perf_counter() - t)
            t = time.perf_counter()
            resident = ResidentModel(args.model, device="cpu")
            t_base = time.perf_counter() - t
            for f in folders:
                swapped = resident.load(f)
            best_swap = min(best_swap, time.perf_counter() - t)
            t_steady = (time.perf_counter() - t - t_base) / n
        ids = tok("The capital city of France is", return_tensors="pt")["input_ids"]
        with torch.inference_mode():
            gap = float((swapped(input_ids=ids).logits - reloaded(input_ids=ids).logits).abs().max())
    print(f"{args.model}: {n} {args.mode} checkpoints" + (f" (rank {args.rank})" if args.mode == "lora" else "")
          + f", torch threads={torch.get_num_threads()}")
    print(f"reload per checkpoint:             {best_reload / n * 1000:8.1f} ms  ({best_reload:.2f} s in all)")
    print(f"swap per checkpoint (base amortised): {best_swap / n * 1000:5.1f} ms  ({best_swap:.2f} s in all; "
          f"base load {t_base:.2f} s, one swap {t_steady * 1000:.1f} ms)")
    print(f"max |logit| gap swapped vs fresh load of the last checkpoint: {gap:.2e}")
    print(f"overhead ratio (reload / swap, per checkpoint): {best_reload / best_swap:.1f}x")


if __name__ == "__main__":
    main()
