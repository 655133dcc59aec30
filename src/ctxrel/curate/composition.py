"""The C / C+S / S composition of an instruction set: counts, shares, loss summaries, examples of each class,
agreement with the generator's own kinds for the built-in mixture, a printed table and a histogram PNG.

Pure apart from `plot_histogram`, which writes the PNG (matplotlib, atomically).
"""

from __future__ import annotations

import io
import statistics
from pathlib import Path
from typing import Any

from ctxrel.core.errors import CtxrelError
from ctxrel.curate.dataset import Record, context_of
from ctxrel.curate.filters import CLASSES, UNSCORED, classify_score

MIXTURE_KIND = {"c": "C", "cs": "C+S", "ci": "C+S", "s": "S"}


def _short(text: str, n: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[:n - 1] + "…"


def _preview(rec: Record) -> dict[str, str]:
    d, fmt = rec.data, rec.fmt
    if fmt == "alpaca":
        prompt, answer = d["instruction"], d["output"]
    elif fmt == "chat":
        prompt = next((m["content"] for m in d["messages"] if m["role"] == "user"), "")
        answer = next((m["content"] for m in d["messages"] if m["role"] == "assistant"), "")
    else:
        prompt = d["question"]
        answer = d.get("answer") or (d.get("answers") or {}).get("text", [""])[0]
    ctx = context_of(d, fmt)
    return {"prompt": _short(prompt), **({"context": _short(ctx)} if ctx else {}), "response": _short(answer)}


def composition(records: list[Record], scores: list[dict[str, Any]], threshold: float, *,
                rule: str, n_examples: int = 3) -> tuple[list[str], dict[str, Any]]:
    """(class per record, report). Examples are the first `n_examples` records of each class in input order."""
    classes = [classify_score(s, threshold) for s in scores]
    n = len(records)
    names = [*CLASSES, UNSCORED]
    counts = {c: classes.count(c) for c in names}
    report: dict[str, Any] = {
        "records": n, "threshold": threshold, "threshold_rule": rule,
        "counts": counts, "shares": {c: (counts[c] / n if n else 0.0) for c in names},
        "context_records": sum(s["context"] for s in scores),
        "loss_without_context": {}, "loss_with_context": {},
        "context_gain": {},  # mean of (loss without - loss with): how much the context helps, per class
        "examples": {},
    }
    for c in names:
        mine = [s for s, k in zip(scores, classes) if k == c and s["loss_without"] is not None]
        for key, field in (("loss_without_context", "loss_without"), ("loss_with_context", "loss_with")):
            vals = [s[field] for s in mine]
            report[key][c] = ({"mean": statistics.fmean(vals), "median": statistics.median(vals),
                               "min": min(vals), "max": max(vals)} if vals else None)
        gains = [s["loss_without"] - s["loss_with"] for s in mine]
        report["context_gain"][c] = statistics.fmean(gains) if gains else None
        report["examples"][c] = [
            {"where": r.where, "loss_with": s["loss_with"], "loss_without": s["loss_without"], **_preview(r)}
            for r, s, k in zip(records, scores, classes) if k == c][:n_examples]
    if records and records[0].fmt == "mixture" and all("kind" in r.data for r in records):
        # the generator knows each record's true kind: how often does the loss rule agree?
        table = {MIXTURE_KIND.get(r.data["kind"], r.data["kind"]): {} for r in records}
        for r, k in zip(records, classes):
            row = table[MIXTURE_KIND.get(r.data["kind"], r.data["kind"])]
            row[k] = row.get(k, 0) + 1
        agree = sum(MIXTURE_KIND.get(r.data["kind"]) == k for r, k in zip(records, classes))
        report["mixture_agreement"] = {"by_true_kind": table, "agree": agree, "share": agree / n if n else 0.0}
    return classes, report


def format_composition(report: dict[str, Any]) -> str:
    lines = [f"{report['records']} records, {report['context_records']} with context; "
             f"C+S threshold: loss without context < {report['threshold']:.4f} ({report['threshold_rule']})",
             f"  {'class':<9}{'n':>7}{'share':>8}  {'loss w/o ctx (mean)':>20}  {'loss with ctx (mean)':>20}"]
    for c in (*CLASSES, UNSCORED):
        if c == UNSCORED and not report["counts"][c]:
            continue
        lo, lw = report["loss_without_context"][c], report["loss_with_context"][c]
        mean_lo = f"{lo['mean']:.3f}" if lo else "-"
        mean_lw = f"{lw['mean']:.3f}" if lw else "-"
        lines.append(f"  {c:<9}{report['counts'][c]:>7}{report['shares'][c]:>8.3f}  {mean_lo:>20}  {mean_lw:>20}")
    agreement = report.get("mixture_agreement")
    if agreement:
        lines.append(f"  mixture: the loss rule agrees with the generator's kind on {agreement['agree']} records "
                     f"({agreement['share']:.3f}); true kind -> predicted: "
                     + "; ".join(f"{k}: {v}" for k, v in agreement["by_true_kind"].items()))
    for c in CLASSES:
        for ex in report["examples"][c][:1]:
            ctx = f" | context: {ex['context'][:70]}" if "context" in ex else ""
            lines.append(f"  e.g. {c:<4} {ex['where']}: {ex['prompt'][:70]}{ctx} -> {ex['response'][:50]}")
    return "\n".join(lines)


def plot_histogram(scores: list[dict[str, Any]], classes: list[str], threshold: float, dest: Path,
                   title: str = "") -> Path:
    """Histogram of loss without context for context records (split C / C+S at the threshold), with records
    without context (S) overlaid for comparison: C+S examples are those the model predicts nearly as well as
    pure recall."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise CtxrelError("the histogram needs matplotlib: pip install 'ctxrel[report]'") from None
    from ctxrel.rundir.files import atomic_write_bytes

    ctx = [s["loss_without"] for s, k in zip(scores, classes) if k in ("C", "C+S")]
    s_only = [s["loss_without"] for s, k in zip(scores, classes) if k == "S" and s["loss_without"] is not None]
    fig = Figure(figsize=(7.0, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    everything = ctx + s_only
    if everything:
        lo, hi = min(everything), max(everything)
        bins = [lo + (hi - lo) * i / 40 for i in range(41)] if hi > lo else 10
        if ctx:
            ax.hist(ctx, bins=bins, alpha=0.75, color="tab:blue", label=f"with context (C, C+S): n={len(ctx)}")
        if s_only:
            ax.hist(s_only, bins=bins, histtype="step", linewidth=1.5, color="tab:gray",
                    label=f"no context (S), for comparison: n={len(s_only)}")
    ax.axvline(threshold, color="tab:red", linestyle="--", label=f"C+S threshold {threshold:.3f}")
    ax.set_xlabel("mean response-token loss without the context (nats)")
    ax.set_ylabel("records")
    ax.set_title(title or "Loss without context: C+S lie left of the threshold")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    atomic_write_bytes(dest, buf.getvalue())
    return dest
