"""The synthetic study as one function: `run_synth(cfg, out)` (what `ctxrel synth` calls); see lab.py for
the recipe and the run-directory layout."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import random
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ctxrel.core.errors import CtxrelError
from ctxrel.rundir.files import (CHECKPOINT_META, CHECKPOINTS_DIR, RunDir, append_records, atomic_write_text, read_records,
                                 step_name)
from ctxrel.synth import measure
from ctxrel.synth.lab import (SynthConfig, batch_indices, load_state, lr_at, save_state,
                              train_steps, validate)
from ctxrel.synth.mixture import conflict_items, id_context_items, ift_mixture, train_probe
from ctxrel.synth.model import TinyGPT, greedy, qk_parameters
from ctxrel.synth.world import BOS, IS, make_world, pretraining_corpus
from ctxrel.train.checkpoints import checkpoint_steps


def config_digest(cfg: SynthConfig) -> str:
    d = dataclasses.asdict(cfg)
    d.pop("threads")
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def pretrain(cfg: SynthConfig, world, log: Callable[[str], None]) -> tuple[TinyGPT, dict[str, float]]:
    """A fresh model trained from scratch on the world's statements (+ copy documents); returns it and its
    statement-format recall over every pretrained fact."""
    torch.manual_seed(cfg.seed)
    model = TinyGPT(cfg.model, len(world.vocab))
    corpus = pretraining_corpus(world, cfg.pretrain.copy_docs, random.Random(f"pretrain-{cfg.seed}"))
    p = cfg.pretrain
    opt = torch.optim.AdamW(model.parameters(), lr=p.lr, weight_decay=0.0, betas=(0.9, 0.98))
    loss = train_steps(model, opt, corpus, 0, p.steps, p.batch_size,
                       lambda s: lr_at(s, p.lr, p.warmup, p.steps, "cosine"), cfg.seed)
    facts = [(s, r) for pool in ("known", "conflict") for s in world.pools[pool] for r in world.relations]
    outs = greedy(model, [[BOS, s, r, IS] for s, r in facts], cfg.world.answer_len)
    recall = sum(tuple(o) == world.facts[f] for o, f in zip(outs, facts)) / len(facts)
    log(f"pretrained {p.steps} steps on {len(corpus)} sequences: loss {loss:.3f}, recall {recall:.3f} "
        f"of {len(facts)} facts")
    return model, {"recall": recall, "loss": loss, "n_facts": len(facts)}


def _done(run: RunDir, done_rows: set[str], ckpt: str) -> bool:
    return ckpt in done_rows and run.eval_file(ckpt, measure.BENCHMARK).exists()


def run_synth(cfg: SynthConfig, out: str | Path, *, preset: str | None = None,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Pretrain, finetune and score a synthetic study into run directory `out` (resumable); returns a summary
    {"peak_step", "peak", "final", "drop", "pretrain", "seconds"} of cf-acc on the conflict items (subset all)."""
    validate(cfg)
    t0 = time.perf_counter()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    world = make_world(cfg.world, cfg.seed)
    ft = cfg.finetune
    shares = dict(c=ft.c, cs=ft.cs, s=ft.s, irrelevant=ft.irrelevant, cf_aug=ft.cf_aug)
    examples = ift_mixture(world, shares, ft.n_examples, ft.drop_cs, cfg.seed, ft.c_fresh)
    if not examples:
        raise CtxrelError("synth config: the finetuning mixture is empty (all shares 0, or only C+S with drop_cs)")
    longest = max(len(e.ids) for e in examples)
    if longest > cfg.model.max_len:
        raise CtxrelError(f"synth config: sequences reach {longest} tokens; raise model.max_len (now "
                          f"{cfg.model.max_len}) or lower world.distractors / world.answer_len")
    from ctxrel.rundir import marker as run_marker

    run_marker.claim(out, "synth", verb="synth")  # config errors above, before anything is written
    run = RunDir(out)
    first = step_name(0)
    try:
        run.check_settings(first, measure.BENCHMARK, {"config_sha256": config_digest(cfg)})
    except CtxrelError:  # rundir/files.py's advice (delete one checkpoint's folder) does not fit a whole study
        raise CtxrelError(f"{run.path} holds a synth study made with another config; use another --out, or "
                          f"delete {run.path} to start over") from None
    run.write_config({"verb": "synth", "preset": preset, **dataclasses.asdict(cfg)})

    items = conflict_items(world, cfg.seed)
    id_items = id_context_items(world, cfg.seed)
    probe = train_probe(examples, cfg.eval.probe, cfg.seed)

    # -- pretraining (reused when saved) --
    pre_dir = run.path / CHECKPOINTS_DIR / "pretrained"
    if (pre_dir / CHECKPOINT_META).exists():
        model = TinyGPT(cfg.model, len(world.vocab))
        pre_stats = load_state(pre_dir, model, None)["stats"]
        log(f"pretrained model reused from {pre_dir}")
    else:
        t = time.perf_counter()
        model, pre_stats = pretrain(cfg, world, log)
        pre_stats["seconds"] = time.perf_counter() - t
        save_state(pre_dir, model, None, {"stats": pre_stats})
        run.write_metrics([dict(checkpoint="pretrained", benchmark="synth_pretrain", subset="all", metric=k,
                                value=v, n=pre_stats["n_facts"]) for k, v in pre_stats.items()])
    model.eval()

    # -- finetuning --
    names = set(qk_parameters(model)) if ft.train == "qk" else None
    for n, p in model.named_parameters():
        p.requires_grad_(names is None or n in names)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=ft.lr, weight_decay=ft.weight_decay, betas=(0.9, 0.98))
    schedule = checkpoint_steps(ft.steps, cfg.eval.every, cfg.eval.early)
    done_rows = {r["checkpoint"] for r in run.metrics() if r["benchmark"] == "id_accuracy"}
    start = 0
    saved = sorted(run.path.glob("checkpoints/step-*/checkpoint.json"))
    if saved:
        start = load_state(saved[-1].parent, model, opt)["step"]
        log(f"resuming from {saved[-1].parent.name}")
    known_path = run.eval_file(first, measure.BENCHMARK, "nocontext")
    if not read_records(known_path):
        append_records(known_path, measure.knowledge_records(model, world, items))
    known = {r["id"]: bool(r["known"]) for r in read_records(known_path)}

    step, t_train, t_eval = start, 0.0, 0.0
    lr = lambda s: lr_at(s, ft.lr, ft.warmup, ft.steps, ft.schedule)  # noqa: E731
    for target in [s for s in schedule if s >= start]:
        t = time.perf_counter()
        train_steps(model, opt, examples, step, target, ft.batch_size, lr, cfg.seed)
        step = target
        t_train += time.perf_counter() - t
        ckpt = step_name(step)
        if not _done(run, done_rows, ckpt):
            t = time.perf_counter()
            tokens = sum(len(examples[i].ids) for s in range(step)
                         for i in batch_indices(s, ft.batch_size, len(examples), cfg.seed))
            _score(run, model, world, items, id_items, probe, known, cfg, ckpt, step, len(examples), tokens)
            t_eval += time.perf_counter() - t
        save_state(run.path / CHECKPOINTS_DIR / ckpt, model, opt, {"step": step})
        for old in run.path.glob("checkpoints/step-*"):  # only the latest state is needed to resume
            if old.name != ckpt:
                shutil.rmtree(old, ignore_errors=True)

    from ctxrel.report import plot_trajectory, trajectory_rows
    from ctxrel.report.trajectory import peak_and_last

    steps_per_epoch = len(examples) / ft.batch_size
    bounds = [round(k * steps_per_epoch) for k in range(1, int(ft.steps / steps_per_epoch) + 1)]
    png = plot_trajectory(run.path, epoch_boundaries=bounds)
    traj = trajectory_rows(run.metrics(), "all")[measure.BENCHMARK]
    ps, pv, ls, lv = peak_and_last(traj, "cf_acc")
    summary = {"preset": preset, "seed": cfg.seed, "peak_step": ps, "peak": pv, "final_step": ls, "final": lv,
               "drop": pv - lv, "cf_acc": {e["step"]: e["cf_acc"][0] for e in traj},
               "m_c": {e["step"]: e["m_c"][0] for e in traj}, "pretrain": pre_stats,
               "n_examples": len(examples), "epochs": ft.steps / steps_per_epoch,
               "train_seconds": t_train, "eval_seconds": t_eval, "seconds": time.perf_counter() - t0,
               "plot": str(png)}
    atomic_write_text(run.path / "summary.json", json.dumps(summary, indent=1))
    return summary


def _score(run: RunDir, model, world, items, id_items, probe, known, cfg: SynthConfig, ckpt: str, step: int,
           n_examples: int, tokens: int) -> None:
    """Records and metric rows of one checkpoint; records are recomputed whole (the model is deterministic), so
    a crash between records and rows never duplicates a record."""
    path = run.eval_file(ckpt, measure.BENCHMARK)
    path.unlink(missing_ok=True)
    recs = measure.conflict_records(model, world, items, known)
    append_records(path, recs)
    e = cfg.eval
    rows = measure.conflict_rows(recs, n_boot=e.bootstrap, seed=cfg.seed)
    rows += measure.probe_rows(model, probe)
    rows += measure.id_rows(model, world, id_items, items, n_boot=e.bootstrap, seed=cfg.seed)  # last: "done"
    meta = dict(epoch=step * cfg.finetune.batch_size / n_examples, tokens=tokens)
    run_ck = RunDir(run.path, row_defaults=meta)
    run_ck.write_metrics([dict(checkpoint=ckpt, step=step, **r) for r in rows])
