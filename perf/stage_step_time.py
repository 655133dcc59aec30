"""Time per DPO step against an SFT step, in one process, on the multistage preset's shapes; and peak memory.

    OMP_NUM_THREADS=1 python perf/stage_step_time.py [--preset multistage] [--steps 8] [--device cpu]

Runs the preset's stages (`ctxrel.train.stages.train_stages`) for `--steps` optimizer steps each, without
evaluation, into a temporary directory, and prints seconds per step of each stage (from its train_summary:
training time only, checkpoint writing excluded), the DPO / SFT ratio, tokens per step, and the peak resident
memory of the process (on CUDA also the peak allocated GPU memory). A DPO step runs the policy on chosen and
rejected responses (2x the sequences of an SFT step of the same batch size) with gradients, and the reference
model on both without (once per pair; all steps here are in the first epoch, so every step pays it).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="multistage")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)

    from ctxrel.train.stages import train_stages
    from ctxrel.config import load_study_config

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_study_config(args.preset, [f"out={tmp}/run"] + ([f"model.device={args.device}"] if args.device
                                                                  else []))
        for st in cfg.stages:
            st.train = {**st.train, "max_steps": args.steps}
        cfg.train.tensorboard = False
        summary = train_stages(cfg, on_checkpoint=None, log=lambda *a, **k: None)
    rows = []
    for st in summary["stages"]:
        per_step = st["train_s"] / st["total_steps"]
        rows.append(dict(stage=st["name"], kind=st["kind"], steps=st["total_steps"], s_per_step=round(per_step, 3),
                         tokens_per_step=round(st["tokens"] / st["total_steps"], 1)))
        print(f"{st['name']:>6} ({st['kind']}): {st['total_steps']} steps, {per_step:.2f} s/step, "
              f"{st['tokens'] / st['total_steps']:.0f} tokens/step (batch {st['batch_size']})")
    sft = next(r for r in rows if r["kind"] == "sft")
    dpo = next(r for r in rows if r["kind"] == "dpo")
    ratio = dpo["s_per_step"] / sft["s_per_step"]
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux -> MiB
    out = dict(preset=args.preset, stages=rows, dpo_over_sft=round(ratio, 2), peak_rss_mib=round(peak_rss))
    try:
        import torch

        if torch.cuda.is_available():
            out["peak_cuda_mib"] = round(torch.cuda.max_memory_allocated() / 2 ** 20)
            out["device"] = torch.cuda.get_device_name()
    except ImportError:
        pass
    print(f"DPO step / SFT step = {ratio:.2f}; peak resident memory {peak_rss:.0f} MiB"
          + (f"; peak CUDA memory {out['peak_cuda_mib']} MiB" if "peak_cuda_mib" in out else ""))
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
