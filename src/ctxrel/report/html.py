"""One self-contained HTML page from study summaries: inline CSS, PNGs embedded as base64, no external
reference of any kind, so the file opens offline and can be mailed as is."""

from __future__ import annotations

import base64
import html
import math
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ctxrel.report.scrutiny_html import group_subsets, scrutiny_section

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:24px auto;max-width:1150px;
     color:#1d1d1f;line-height:1.4;padding:0 16px}
h1{font-size:1.5em;margin-bottom:0} h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:1.8em}
table{border-collapse:collapse;margin:8px 0 16px;font-size:0.88em}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:right;vertical-align:top;white-space:nowrap}
th{background:#f0f0f3;white-space:normal} td.l,th.l{text-align:left;white-space:normal}
.verdict{font-weight:600;padding:2px 6px;border-radius:4px}
.inversion{background:#fde2e1;color:#8a1c14} .rise{background:#e1f0fd;color:#0b4f8a}
.fall{background:#fff1d6;color:#7a4b00} .no_change,.undetermined{background:#eee;color:#444}
img{max-width:100%;border:1px solid #e3e3e3;margin:6px 0}
pre{background:#f7f7f9;padding:8px;overflow-x:auto;font-size:0.8em}
.note{color:#555;font-size:0.88em} summary{cursor:pointer;font-weight:600;margin:6px 0}
"""


def _e(x: Any) -> str:
    return html.escape(str(x))


def _f(x: Any, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}f}"


def _diff(diffs: list[dict[str, Any]]) -> str:
    """'+0.150 [0.08, 0.22] items; [0.05, 0.25] seeds'."""
    if not diffs:
        return "-"
    parts = [f"{diffs[0]['estimate']:+.3f}" if not math.isnan(diffs[0]["estimate"]) else "-"]
    for d in diffs:
        if d["basis"] != "none":
            parts.append(f"[{_f(d['ci_low'])}, {_f(d['ci_high'])}] {d['basis']}")
    return _e(" ".join(parts[:2]) + ("; " + "; ".join(parts[2:]) if len(parts) > 2 else ""))


def _at(p: dict[str, Any] | None) -> str:
    return "-" if not p else f"{_f(p['value'])} @ {p['step']}"


def left_out_text(label: str, bench_summary: dict[str, Any]) -> str:
    """The sentence that says which checkpoints the pooled statistics of a group's seeds left out."""
    return (f"{label}: the seeds do not share every checkpoint; pooled statistics use the steps all of them have, "
            "leaving out " + "; ".join(f"{run}: step {', '.join(map(str, steps))}"
                                       for run, steps in bench_summary["steps_left_out"].items()))


def _verdict(st: dict[str, Any], short: bool = False) -> str:
    text = st["verdict_text"].split(":")[0] if short else st["verdict_text"]
    return f'<span class="verdict {_e(st["verdict"])}">{_e(text)}</span>'


def _row_cells(st: dict[str, Any]) -> str:
    return "".join([f"<td>{st.get('n_items', '-')}</td>", f"<td>{_at(st.get('start'))}</td>",
                    f"<td>{_at(st.get('peak'))}</td>", f"<td>{_at(st.get('trough'))}</td>",
                    f"<td>{_at(st.get('final'))}</td>", f"<td>{_diff(st.get('rise', []))}</td>",
                    f"<td>{_diff(st.get('drop', []))}</td>",
                    f"<td>{_diff((st.get('memory_return') or {}).get('change', []))}</td>",
                    f"<td class='l'>{_verdict(st, short=True)}</td>"])


HEAD = ("<tr><th class='l'>{first}</th><th class='l'>subset</th><th>items</th><th>start @ step</th>"
        "<th>peak @ step</th><th>trough @ step</th><th>final @ step</th><th>rise = peak - start [95% CI]</th>"
        "<th>drop = peak - final [95% CI]</th><th>memory return: par-acc final - its trough [95% CI]</th>"
        "<th class='l'>verdict</th></tr>")


def summary_table(groups: list[dict[str, Any]], bench: str) -> str:
    rows = [f"<tr><td class='l'>{_e(g['label'])}</td><td class='l'>{_e(subset)}</td>{_row_cells(st)}</tr>"
            for g, subset, st in group_subsets(groups, bench)]
    return f"<table>{HEAD.format(first='study')}{''.join(rows)}</table>"


def category_table(groups: list[dict[str, Any]], bench: str) -> str:
    rows = []
    for g in groups:
        for cat, subs in g["benchmarks"][bench]["categories"].items():
            for subset, st in subs.items():
                label = f"{g['label']}: {cat}" if len(groups) > 1 else cat
                rows.append(f"<tr><td class='l'>{_e(label)}</td><td class='l'>{_e(subset)}</td>{_row_cells(st)}</tr>")
    if not rows:
        return ""
    return (f"<details><summary>Per category ({len(rows)} rows)</summary>"
            f"<table>{HEAD.format(first='category')}{''.join(rows)}</table></details>")


def flips_section(fl: dict[str, Any]) -> str:
    head = (f"<h4>{_e(fl['run'])}: {_e(fl['from']['checkpoint'])} ({_e(fl['from']['spec'])}) &rarr; "
            f"{_e(fl['to']['checkpoint'])} ({_e(fl['to']['spec'])}), subset {_e(fl['subset'])}</h4>")
    rows = "".join(
        f"<tr><td class='l'>{_e(cat)}</td><td>{t['n']}</td><td>{_f(t['cf_a'])}</td><td>{_f(t['cf_b'])}</td>"
        f"<td>{t['lost']}</td><td>{t['gained']}</td><td>{len(t['to_parametric'])}</td><td>{len(t['to_context'])}</td>"
        f"<td>{t['p_value']:.3g}</td></tr>" for cat, t in fl["by_category"].items())
    table = ("<table><tr><th class='l'>category</th><th>items</th><th>cf-acc before</th><th>cf-acc after</th>"
             "<th>lost context answer</th><th>gained context answer</th><th>context&rarr;parametric</th>"
             "<th>parametric&rarr;context</th><th>McNemar exact p</th></tr>" + rows + "</table>")
    tr = fl["by_category"]["all"]["transitions"]
    outs = list(tr)
    matrix = ("<table><tr><th class='l'>before \\ after</th>" + "".join(f"<th>{_e(o)}</th>" for o in outs) + "</tr>"
              + "".join(f"<tr><th class='l'>{_e(a)}</th>" + "".join(f"<td>{tr[a][b]}</td>" for b in outs) + "</tr>"
                        for a in outs) + "</table>")
    items = []
    for kind, title in (("to_parametric", "context &rarr; parametric"), ("to_context", "parametric &rarr; context")):
        lst = fl["items"][kind]
        if not lst:
            continue
        body = "".join(f"<tr><td class='l'>{_e(i['id'])}</td><td class='l'>{_e(i['category'])}</td>"
                       f"<td class='l'>{_e(i['question'])}</td><td class='l'>{_e(i['context_answer'])}</td>"
                       f"<td class='l'>{_e(i['parametric_answer'])}</td><td class='l'>{_e(i['output_from'])}</td>"
                       f"<td class='l'>{_e(i['output_to'])}</td></tr>" for i in lst[:50])
        more = f" (first 50 of {len(lst)})" if len(lst) > 50 else ""
        noun = "item" if len(lst) == 1 else "items"
        items.append(f"<details><summary>{title}: {len(lst)} {noun}{more}</summary><table><tr><th class='l'>id</th>"
                     "<th class='l'>category</th><th class='l'>question</th><th class='l'>context answer</th>"
                     "<th class='l'>parametric answer</th><th class='l'>output before</th>"
                     f"<th class='l'>output after</th></tr>{body}</table></details>")
    return head + table + "<p class='note'>Resolved outcomes (all items):</p>" + matrix + "".join(items)


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{_e(path.stem)}" src="data:image/png;base64,{data}">'


DEFINITIONS = """
<ul class="note">
<li><b>cf-acc</b>: share of generations containing the context (counterfactual) answer; <b>par-acc</b>: share
containing the parametric answer (both can hold). In likelihood mode the followed metric is <b>M_C</b> =
p_ctx / (p_ctx + p_par), averaged over items.</li>
<li><b>known</b>: items the base model (step 0) answers with the parametric answer when asked without context
(knowledge filter); <b>all</b>: no filter.</li>
<li><b>peak</b>: highest value (earliest step on ties); <b>trough</b>: lowest value at or after the peak;
<b>rise</b> = peak - start, <b>drop</b> = peak - final, each with a 95% percentile bootstrap CI over items,
paired (the same items at both checkpoints). With several seeds, a second CI across seeds (t interval).</li>
<li><b>Verdict</b>: <i>inversion</i> when rise and drop are both positive with every CI excluding 0. The peak is
chosen on the same data, so intervals are somewhat optimistic with many checkpoints; seeds settle a borderline
case.</li>
<li><b>Probes</b> (eval.probes): <i>weight change</i> ||ΔW||_F / ||W_0||_F per layer and projection (LoRA:
ΔW = B·A·scale), and the q/k share of the squared change; <i>heads</i>: attention mass from the answer position to
the context per layer and head, at the peak and the final checkpoint, changes with a paired bootstrap CI over
items (boxed when it excludes 0); <i>lens</i>: log p(context answer's first token) - log p(parametric answer's
first token) read off each layer through the final norm and the unembedding; <i>cross</i> = the layer where
the mean curve last changes sign.</li>
<li><b>Flips</b>: items whose answer changed side between two checkpoints. McNemar's exact test compares items
that lost the context answer with items that gained it (two-sided binomial test on the discordant pairs).</li>
</ul>
"""


def _cell(p: dict[str, Any] | None, signed: bool = False) -> str:
    if not p or p.get("value") is None:
        return "<td>-</td>"
    f = "+.3f" if signed else ".3f"
    ci = (f" <span class='note'>[{p['ci_low']:{f[:-2] + '2f'}}, {p['ci_high']:{f[:-2] + '2f'}}]</span>"
          if p.get("ci_low") is not None and p.get("ci_high") is not None else "")
    return f"<td>{p['value']:{f}}{ci}</td>"


def mitigation_section(groups: list[dict[str, Any]], figures: dict[str, list[Path]]) -> list[str]:
    """Per benchmark with decoding methods or context kinds: the recovery sentence per method and subset, the
    do-no-harm table at the final checkpoint (accuracy per context kind and decoding), the two figures."""
    parts = []
    for g in groups:
        for bench, m in g.get("mitigation", {}).items():
            who = f" ({_e(g['label'])})" if len(groups) > 1 else ""
            parts.append(f"<h2 id='{_e(bench)}-mitigation'>{_e(bench)}: decoding methods and context kinds{who}</h2>")
            for subset, stats in m["recovery"].items():
                parts += [f"<p><b>{_e(subset)}</b>: {_e(st['sentence'])}</p>" for st in stats]
            ctx = m["contexts"]
            decs = list(dict.fromkeys(d for k in ctx.values() for d in k))
            kinds = [k for k in ("conflict", "gold", "irrelevant") if k in ctx]
            if ctx:
                final = max(p["step"] for k in ctx.values() for pts in k.values() for p in pts)
                head = "".join(f"<th>{_e(k)}</th>" for k in kinds)
                rows = []
                for d in decs:
                    cells = "".join(_cell(next((p for p in ctx.get(k, {}).get(d, []) if p["step"] == final), None))
                                    for k in kinds)
                    rows.append(f"<tr><td class='l'>{_e(d)}</td>{cells}</tr>")
                parts.append(f"<p class='note'>Do no harm at the final checkpoint (step {final}), all items: "
                             "accuracy per context kind (conflict: cf-acc; gold and irrelevant: the parametric "
                             "answer), [95% CI]. <code>acc_vs_greedy</code> rows in metrics.csv hold the paired "
                             "changes against greedy at every checkpoint.</p>"
                             f"<table><tr><th class='l'>decoding</th>{head}</tr>{''.join(rows)}</table>")
            key = f"{bench} (decoding and context kinds)"
            parts += [_img(p) for p in figures.get(key, [])] if g is groups[0] else []
    return parts


def render(groups: list[dict[str, Any]], figures: dict[str, list[Path]], configs: dict[str, str],
           title: str) -> str:
    """The page: verdicts and summary table, plots, per-category table, flips, definitions, configs."""
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{_e(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{_e(title)}</h1>",
             f"<p class='note'>ctxrel report, {now}. Runs: " +
             "; ".join(f"<b>{_e(g['label'])}</b> = {', '.join(_e(r) for r in g['runs'])}"
                       + (f" ({g['n_seeds']} seeds)" if g["n_seeds"] > 1 else "") for g in groups) + "</p>"]
    smoothed = {st.get("smoothed") for g in groups for b in g["benchmarks"].values() for st in b["subsets"].values()}
    if any(smoothed):
        parts.append(f"<p class='note'><b>Smoothed</b>: statistics on a centred moving average over "
                     f"{max(s for s in smoothed if s)} checkpoints.</p>")
    for bench, figs in figures.items():
        if bench not in groups[0]["benchmarks"]:
            if not bench.endswith(("(decoding and context kinds)", "(outcomes)")):  # a section of the model itself
                parts.append(f"<h2>{_e(bench)}</h2>" + "".join(_img(p) for p in figs))
            continue  # the decoding / context-kind figures: mitigation_section
        metric = groups[0]["benchmarks"][bench]["metric"]
        parts.append(f"<h2 id='{_e(bench)}'>{_e(bench)} <span class='note'>(followed metric: {_e(metric)})</span></h2>")
        for g in groups:
            st = g["benchmarks"][bench]["subsets"]
            parts.append("<p>" + (f"<b>{_e(g['label'])}</b>: " if len(groups) > 1 else "") + " &nbsp; ".join(
                f"{_e(s)}: {_verdict(x)}" for s, x in st.items()) + "</p>")
            for s_name, x in st.items():  # a multi-stage study: each stage's own verdict
                if x.get("stages"):
                    parts.append(f"<p class='note'>{_e(s_name)}, per stage: " + " &nbsp; ".join(
                        f"{_e(one['name'])} ({_e(one['kind'])}, steps {one['offset']}-{one['offset'] + one['total']})"
                        f": {_verdict(one)}" for one in x["stages"]) + "</p>")
            if g["benchmarks"][bench].get("steps_left_out"):
                parts.append(f"<p class='note'>{_e(left_out_text(g['label'], g['benchmarks'][bench]))}</p>")
        parts.append(summary_table(groups, bench))
        parts.append(scrutiny_section(groups, bench))
        parts += [_img(p) for p in figs]
        parts += [_img(p) for p in figures.get(f"{bench} (outcomes)", [])]  # report/share_plots.py
        parts.append(category_table(groups, bench))
        fl = [f for g in groups for f in g["benchmarks"][bench].get("flips", [])]
        if fl:
            parts.append("<h3>Item flips</h3>" + "".join(flips_section(f) for f in fl))
    parts += mitigation_section(groups, figures)
    parts.append("<h2>Definitions</h2>" + DEFINITIONS)
    if configs:
        parts.append("<h2>Resolved configs</h2>" + "".join(
            f"<details><summary>{_e(name)}</summary><pre>{_e(text)}</pre></details>" for name, text in configs.items()))
    parts.append("</body></html>")
    return "\n".join(parts)
