"""Trajectories from checkpoint series ctxrel did not train: `ctxrel eval --revisions ... / --checkpoints ...`.

The field's most used trajectories are public checkpoint series (Pythia's step revisions, OLMo's intermediate
checkpoints) or a directory of someone else's saved checkpoints. Each entry of `series.revisions` (hub revisions
of `model.name`) or `series.checkpoints` (local model directories, or adapters on `model.name`) is scored, in step
order, into `<out>/evals/step-NNNNNN/` exactly like a study's checkpoint, so `ctxrel report <out>` reads the run
as a trajectory. The first step's knowledge-filter answers define the `known` subset for every step (as step 0
does in a study).

Before anything is scored, every checkpoint's weights are fingerprinted (`ctxrel.core.fingerprint`: the tensors of
its safetensors files): two steps with the same fingerprint stop the run with one sentence naming both, or with
`series.on_duplicate=skip` the later one is skipped with a warning. The fingerprints, sources and steps are
written to `<out>/series.json`. Rerunning the same command resumes, as any evaluation.
"""

from __future__ import annotations

import gc
import json
import re
import sys
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from ctxrel.core.errors import CtxrelError
from ctxrel.models.loading import ADAPTER_WEIGHTS, TRAINABLE_FILE

SERIES_FILE = "series.json"
ADAPTER_FILES = (ADAPTER_WEIGHTS, TRAINABLE_FILE)  # an adapter's weights: a PEFT adapter, a full / qk study checkpoint
_STEP_IN_NAME = re.compile(r"(?:step|checkpoint)[-_]?(\d+)", re.IGNORECASE)
_OFFLINE_VARS = ("HF_HUB_OFFLINE",)


@dataclass
class Checkpoint:
    step: int
    spec: str  # as the user gave it (revision name or path)
    kind: str  # revision | model | adapter
    location: str = ""  # local directory holding the weights (a downloaded revision's snapshot)
    fingerprint: str = ""
    n_tensors: int = 0


def parse_entry(entry: str, key: str) -> tuple[str, int]:
    """(name, step) of one series entry: NAME@STEP, else the step read from the name.

    >>> parse_entry("step1000", "series.revisions"), parse_entry("runs/x/ckpt-a@40", "series.checkpoints")
    (('step1000', 1000), ('runs/x/ckpt-a', 40))
    >>> parse_entry("stage1-step140000-tokens587B", "series.revisions")
    ('stage1-step140000-tokens587B', 140000)
    """
    name, at, step = entry.strip().rpartition("@")
    if at and step.strip().isdigit() and name.strip():
        return name.strip(), int(step)
    name = entry.strip()
    if not name:
        raise CtxrelError(f"config key {key}: an empty entry; give NAME or NAME@STEP")
    found = {int(x) for x in _STEP_IN_NAME.findall(Path(name).name if key.endswith("checkpoints") else name)}
    if len(found) != 1:
        what = "no step" if not found else f"several steps ({', '.join(map(str, sorted(found)))})"
        raise CtxrelError(f"config key {key}: {name!r} names {what}; give it as {name}@STEP")
    return name, found.pop()


def _entries(values: list[str]) -> list[str]:
    """Entries of a list key, each value possibly comma-separated (`--revisions step1000,step2000`)."""
    return [e for v in values for e in str(v).split(",")]


def plan(config) -> list[Checkpoint]:
    """The checkpoints of `config.series` in step order, checked before any model loads or download starts."""
    from ctxrel.models.loading import preflight, resolve

    s = config.series
    if s.revisions and s.checkpoints:
        raise CtxrelError("series.revisions and series.checkpoints cannot be combined; score one series per run")
    if config.model.adapter:
        raise CtxrelError("--adapter cannot be combined with a series; list adapters with --checkpoints PATH@STEP")
    key = "series.revisions" if s.revisions else "series.checkpoints"
    out: list[Checkpoint] = []
    for entry in _entries(s.revisions or s.checkpoints):
        name, step = parse_entry(entry, key)
        if s.revisions:
            out.append(Checkpoint(step, name, "revision"))
            continue
        path = Path(name).expanduser()
        if not path.is_dir():
            raise CtxrelError(f"config key {key}: {name} is not a directory")
        kind = "adapter" if (path / "adapter_config.json").exists() or (path / ADAPTER_FILES[1]).exists() \
            else "model"
        if kind == "model":
            preflight(str(path))  # weights without pickle, tokenizer files
        out.append(Checkpoint(step, name, kind, str(path.resolve())))
    steps = [c.step for c in out]
    twice = sorted({x for x in steps if steps.count(x) > 1})
    if twice:
        names = [c.spec for c in out if c.step == twice[0]]
        raise CtxrelError(f"config key {key}: step {twice[0]} is given twice ({' and '.join(names)}); each "
                          "checkpoint needs its own step")
    if s.revisions:
        if resolve(config.model.name).kind != "hub":
            raise CtxrelError(f"--revisions needs a hub model id as --model (got {config.model.name!r}, a local "
                              "model); for local checkpoints use --checkpoints PATH@STEP")
        if _offline():
            raise CtxrelError(f"--revisions: downloading revisions of {config.model.name} needs the HF hub, which is "
                              "off (HF_HUB_OFFLINE is set); unset it, or download the revisions yourself and pass "
                              "them as --checkpoints DIR@STEP")
    elif any(c.kind == "adapter" for c in out):
        preflight(config.model.name)  # the base the adapters sit on
    return sorted(out, key=lambda c: c.step)


def _offline() -> bool:
    import os

    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on") for v in _OFFLINE_VARS)


def _download(model: str, revision: str) -> str:
    """The local snapshot of one hub revision: safetensors weights, configs and tokenizer (never pickle)."""
    from huggingface_hub import snapshot_download

    try:
        return snapshot_download(model, revision=revision, allow_patterns=[
            "*.safetensors", "*.json", "tokenizer.model", "*.txt", "*.tiktoken"])
    except Exception as e:  # hub errors: not found, no such revision, network
        raise CtxrelError(f"--revisions: could not download {model}@{revision} ({' '.join(str(e).split())[:200]})"
                          ) from None


def fingerprint_all(checkpoints: list[Checkpoint], config, log=print) -> list[Checkpoint]:
    """Download what must be downloaded, fingerprint every checkpoint, and apply series.on_duplicate."""
    from ctxrel.core.fingerprint import weights_fingerprint

    kept: list[Checkpoint] = []
    seen: dict[str, Checkpoint] = {}
    for c in checkpoints:
        if c.kind == "revision":
            c.location = _download(config.model.name, c.spec)
        c.fingerprint, c.n_tensors = weights_fingerprint(c.location, ADAPTER_FILES if c.kind == "adapter" else None)
        first = seen.get(c.fingerprint)
        if first is not None:
            msg = (f"step {c.step} ({c.spec}) has the same weights as step {first.step} ({first.spec}): fingerprint "
                   f"{c.fingerprint[:16]} over {c.n_tensors} tensors")
            if config.series.on_duplicate == "stop":
                raise CtxrelError(msg + "; the series would score one model twice (use --on-duplicate skip to leave "
                                        "the later one out)")
            print(f"ctxrel: warning: {msg}; skipped (--on-duplicate skip)", file=sys.stderr, flush=True)
            continue
        seen[c.fingerprint] = c
        kept.append(c)
    return kept


def score_series(config, log=print) -> list[Checkpoint]:
    """Score every checkpoint of `config.series` into `config.out` (resumable); return those scored."""
    from ctxrel.rundir import marker as run_marker
    from ctxrel.config.settings import to_dict
    from ctxrel.evaluate.run import load_lm, run_eval
    from ctxrel.rundir.files import RunDir, step_name

    checkpoints = plan(config)
    if not checkpoints:
        raise CtxrelError("no checkpoints given: pass --revisions or --checkpoints")
    run_marker.check_owned(config.out, "eval")  # before a download or a fingerprint
    checkpoints = fingerprint_all(checkpoints, config, log)
    known = step_name(checkpoints[0].step)
    with run_marker.scope():
        run_marker.claim(config.out, "eval", verb="eval", settings=to_dict(config))  # held for the whole series
        for c in checkpoints:
            name = step_name(c.step)
            lm = (load_lm(config.model.name, c.location, config.model) if c.kind == "adapter" else
                  load_lm(c.location, None, config.model))
            log(f"ctxrel: scoring {name} ({c.spec}, weights {c.fingerprint[:12]})")
            # this checkpoint's own model in its settings (a rerun that points a step at other weights is refused)
            model = (replace(config.model, adapter=c.location) if c.kind == "adapter" else
                     replace(config.model, name=c.location, adapter=None))
            run_eval(replace(config, model=model), checkpoint=name, lm=lm, known_checkpoint=known)
            RunDir(config.out).write_config(to_dict(config))  # the series' own config, not the last checkpoint's
            _write_series(Path(config.out), config, checkpoints)
            del lm
            gc.collect()
    return checkpoints


def _write_series(out: Path, config, checkpoints: list[Checkpoint]) -> None:
    from ctxrel.rundir.files import atomic_write_text

    data: dict[str, Any] = dict(model=config.model.name, on_duplicate=config.series.on_duplicate,
                                checkpoints=[asdict(c) for c in checkpoints])
    atomic_write_text(out / SERIES_FILE, json.dumps(data, indent=1) + "\n")
