"""A run's per-item results as a Parquet dataset with a dataset card: what `ctxrel export parquet` writes.

    <out>/README.md              dataset card: YAML header (configs for the HF Hub viewer), what the run is, columns
    <out>/data/items.parquet     the per-item table of `ctxrel.api` (one row per item x sample x checkpoint x
                                 benchmark variant), without prompts and local paths
    <out>/data/metrics.parquet   the metric rows (metrics.sqlite)
    <out>/ctxrel-run.json        the run marker: ctxrel rewrites this directory only while it carries one

Readable with `pandas.read_parquet(<out>/data/items.parquet)` and with
`datasets.load_dataset("parquet", data_files=...)`; `huggingface_hub.upload_folder` (or `--push REPO`, online)
publishes the folder as a dataset whose card the Hub reads. Needs pyarrow (extra `export`).
"""

from __future__ import annotations

import io
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from ctxrel.core.errors import CtxrelError

ITEMS_FILE = "data/items.parquet"
METRICS_FILE = "data/metrics.parquet"
CARD_FILE = "README.md"
# columns the export leaves out: where the run lived on this machine, and the prompts (in the records files)
DROPPED = ("run", "prompt", "prompt_without_context")

COLUMN_DOCS = {
    "label": "the run's label (its directory name)",
    "step": "training step of the checkpoint (empty for a lone model evaluation)",
    "checkpoint": "checkpoint name (step-NNNNNN, or model)",
    "benchmark": "conflict benchmark",
    "variant": "benchmark[context kind,decoding] as in the metric rows",
    "context_kind": "conflict (context against memory), gold (agrees with memory), irrelevant (another subject's)",
    "decoding": "greedy, cad<alpha> or adacad",
    "id": "item id (stable across checkpoints)",
    "sample": "sample number of the generation",
    "category": "item category",
    "known": "the base model gives the parametric answer without context (knowledge filter)",
    "outcome": "context, parametric, both or neither (answers found in the output)",
    "contains_context": "the output contains the context answer (cf-acc averages it)",
    "contains_parametric": "the output contains the parametric answer (par-acc averages it)",
    "logp_context": "log-probability of the context answer (likelihood mode)",
    "logp_parametric": "log-probability of the parametric answer (likelihood mode)",
    "m_c": "p_context / (p_context + p_parametric) (likelihood mode)",
    "output": "the generation",
}


def _require_pyarrow() -> None:
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise CtxrelError("writing Parquet needs pyarrow: pip install 'ctxrel[export]'") from None


def _parquet_bytes(frame) -> bytes:
    buf = io.BytesIO()
    frame.to_parquet(buf, index=False)
    return buf.getvalue()


def card(name: str, items, metrics, config: dict[str, Any] | None, version: str) -> str:
    """The dataset card: a YAML header the Hub reads (two configs, items by default) and a short description."""
    header = dict(pretty_name=f"ctxrel per-item results: {name}", tags=["ctxrel", "knowledge-conflicts",
                                                                         "evaluation"],
                  configs=[dict(config_name="items", data_files=ITEMS_FILE, default=True),
                           dict(config_name="metrics", data_files=METRICS_FILE)])
    model = ((config or {}).get("model") or {}).get("name", "?")
    steps = sorted({int(s) for s in items["step"].dropna()}) if "step" in items else []
    benches = sorted(items["variant"].unique()) if "variant" in items else []
    lines = ["---", yaml.safe_dump(header, sort_keys=False).rstrip(), "---", "",
             f"# ctxrel per-item results: {name}", "",
             f"Knowledge-conflict evaluations of `{model}` written by ctxrel {version} on "
             f"{datetime.now(timezone.utc).date().isoformat()}: {len(items)} item rows and {len(metrics)} metric "
             f"rows, benchmarks {', '.join(benches) or '-'}, checkpoint steps "
             f"{', '.join(map(str, steps)) or '- (one model)'}.", "",
             "The items come from their benchmarks' sources, under those sources' licences; the outputs are the "
             "model's. Prompts are left out (the run directory's records files hold them).", "",
             "## Load", "", "```python", "import pandas as pd",
             f'items = pd.read_parquet("{ITEMS_FILE}")', "",
             "from datasets import load_dataset",
             f'ds = load_dataset("parquet", data_files="{ITEMS_FILE}")["train"]', "```", "",
             "## Columns of items", ""]
    lines += [f"- `{c}`: {COLUMN_DOCS[c]}" for c in items.columns if c in COLUMN_DOCS]
    rest = [c for c in items.columns if c not in COLUMN_DOCS]
    if rest:
        lines.append(f"- also: {', '.join(f'`{c}`' for c in rest)} (as in the records files)")
    lines += ["", "`metrics` holds one row per (checkpoint, benchmark, subset, metric): value, n, 95% bootstrap "
              "interval (ci_low, ci_high).", ""]
    return "\n".join(lines)


def export_parquet(run: str | Path, out: str | Path) -> dict[str, Any]:
    """Write the Parquet dataset of run directory `run` into `out` (a new or empty directory, or one this
    command wrote before). Returns {out, items, metrics, files}."""
    from ctxrel import __version__
    from ctxrel.rundir import marker as run_marker
    from ctxrel.api import load
    from ctxrel.rundir.files import atomic_write_bytes, atomic_write_text

    _require_pyarrow()
    run_marker.check_owned(out, "dataset")  # before anything is read or written
    results = load(run)
    items = results.items.drop(columns=[c for c in DROPPED if c in results.items.columns])
    metrics = results.metrics.drop(columns=["run"])
    (label, (loaded, *_)), = results.groups
    with run_marker.held(out, "dataset", verb="export parquet") as dest:
        atomic_write_bytes(dest / ITEMS_FILE, _parquet_bytes(items))
        atomic_write_bytes(dest / METRICS_FILE, _parquet_bytes(metrics))
        atomic_write_text(dest / CARD_FILE, card(label, items, metrics, loaded.config, __version__))
    return dict(out=dest, items=len(items), metrics=len(metrics),
                files=[dest / CARD_FILE, dest / ITEMS_FILE, dest / METRICS_FILE])


def hub_offline() -> bool:
    return any(os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
               for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def push(out: Path, repo: str) -> str:
    """Upload the exported folder as an HF dataset repository (the marker file stays home). Online only."""
    if hub_offline():
        raise CtxrelError(f"--push {repo}: the HF hub is off (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set); the "
                          f"dataset is written to {out}: unset the variable and rerun, or upload that folder yourself")
    from huggingface_hub import HfApi

    api = HfApi()
    api.create_repo(repo, repo_type="dataset", exist_ok=True)
    info = api.upload_folder(folder_path=str(out), repo_id=repo, repo_type="dataset",
                             ignore_patterns=["ctxrel-run.json", ".*"])
    return str(getattr(info, "commit_url", info))
