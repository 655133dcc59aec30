"""The terminal lines of the blocks analysis/scrutiny.py adds beside a verdict: power, the selection-honest
verdict, leave one seed out, the plan, the decomposition and the context share. Standard library only (the
report verb imports it at the top and `ctxrel --help` stays instant)."""

from __future__ import annotations

import math
from typing import Any

BASIS = {"items": "items", "seeds": "seeds", "seeds+items": "two-level"}


def number_text(x: Any, fmt: str = ".3f") -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return format(x, fmt)


def interval_text(d: dict[str, Any]) -> str:
    """'+0.120 [+0.050, +0.190] items' (estimate, interval, basis)."""
    ci = (f" [{number_text(d.get('ci_low'), '+.3f')}, {number_text(d.get('ci_high'), '+.3f')}]"
          if d.get("ci_low") is not None and not math.isnan(d["ci_low"]) else "")
    return f"{number_text(d.get('estimate'), '+.3f')}{ci} {BASIS.get(d.get('basis'), d.get('basis'))}"


# why a change in power["untested"] has no power entries (analysis.scrutiny: its two checkpoints coincide)
UNTESTED = {"rise": "the peak is the first checkpoint (the rise is 0 by construction)",
            "drop": "the peak is the last checkpoint (the drop is 0 by construction)"}


def power_lines(pw: dict[str, Any]) -> list[str]:
    """SE, MDE and the largest change still allowed, per change and level."""
    out = []
    for change in ("rise", "drop"):
        parts = [f"{BASIS[e['basis']]} SE {number_text(e['se'])} MDE {number_text(e['mde'])} allows <= {number_text(e['allowed'], '+.3f')}"
                 for e in pw.get(change, [])]
        if parts:
            out.append(f"power {change}: " + "; ".join(parts))
        elif change in pw.get("untested", ()):
            out.append(f"power {change}: not tested: {UNTESTED[change]}")
    two = [e for c in ("rise", "drop") for e in pw.get(c, []) if e["basis"] == "seeds+items"]
    if len(two) == 2:
        out.append(f"two-level interval (seeds, then items): rise {interval_text(two[0])}; drop {interval_text(two[1])}")
    drop = pw.get("drop", [])
    if drop:
        out.append("largest drop still allowed (95%): " + ", ".join(
            f"{number_text(e['allowed'], '+.3f')} ({BASIS[e['basis']]})" for e in drop)
                   + f"; MDE at 80% power: " + ", ".join(f"{number_text(e['mde'])} ({BASIS[e['basis']]})" for e in drop))
    return out


def honest_lines(hs: dict[str, Any]) -> list[str]:
    if not hs.get("split"):
        return [f"selection-honest verdict: {hs.get('verdict_text', 'undetermined')}"]
    sp = hs["split"]
    lines = [f"selection-honest (peak chosen on {sp['n_select']} items, split seed {sp['seed']}; tested on the other "
             f"{sp['n_test']}): peak @ {hs['peak_step']}, rise {interval_text(hs['rise'][0])}"
             + "".join(f"; {interval_text(d)}" for d in hs["rise"][1:]) + f"; drop {interval_text(hs['drop'][0])}"
             + "".join(f"; {interval_text(d)}" for d in hs["drop"][1:]) + f" -> {hs['verdict_text']}"]
    lo = hs.get("loso")
    if lo:
        peaks = ", ".join(str(p["peak_step"]) for p in lo["per_seed"])
        lines.append(f"leave one seed out (peak on the other seeds: {peaks}): rise {interval_text(lo['rise'])}; drop "
                     f"{interval_text(lo['drop'])} -> {lo['verdict_text']}")
    return lines


def plan_lines(pl: dict[str, Any]) -> list[str]:
    seeds = ", ".join(f"{s['items']} items/seed: {s['seeds'] if s['seeds'] is not None else '>1000'} seeds"
                      for s in pl["seeds_needed"])
    unlimited = pl.get("seeds_with_unlimited_items")
    tail = f"; with unlimited items {unlimited} seeds" if unlimited else ""
    note = f" ({pl['note']})" if pl.get("note") else ""
    return [f"plan: to detect a drop of {pl['d']:.3f} (80% power, two-sided .05): {pl['items_needed'] or '-'} items "
            f"for the items interval ({pl['n_seeds']} seed(s) averaged); seeds t test: {seeds}{tail}; "
            f"within-seed item sd {number_text(pl['sigma_w'])}, between-seed sd {number_text(pl['sigma_b'])}{note}"]


def decomposition_lines(dec: dict[str, Any]) -> list[str]:
    out = []
    for name, d in dec.items():
        if not d:
            continue
        out.append(f"decomposition {name} (step {d['from']} -> {d['to']}): cf-acc {interval_text(d['cf_acc'][0])} = "
                   f"-(par-acc {interval_text(d['par_acc'][0])}) + (both {interval_text(d['share_both'][0])}) - (neither "
                   f"{interval_text(d['share_neither'][0])})")
    return out


def share_lines(cs: dict[str, Any]) -> list[str]:
    if not cs.get("peak"):
        return [f"context share cf/(cf+par) (secondary): {cs.get('verdict_text', 'undetermined')}"]
    s0, pk, fn = cs["start"], cs["peak"], cs["final"]
    return [f"context share cf/(cf+par) (secondary verdict): {s0['value']:.3f} @ {s0['step']} -> {pk['value']:.3f} @ "
            f"{pk['step']} -> {fn['value']:.3f} @ {fn['step']}; rise " + "; ".join(interval_text(d) for d in cs["rise"])
            + "; drop " + "; ".join(interval_text(d) for d in cs["drop"]) + f" -> {cs['verdict_text']}"]


def scrutiny_lines(st: dict[str, Any]) -> list[str]:
    """Every line of the new blocks of one subset's statistics, in the order a reviewer reads them."""
    lines = []
    if st.get("power"):
        lines += power_lines(st["power"])
    if st.get("honest"):
        lines += honest_lines(st["honest"])
    if st.get("plan"):
        lines += plan_lines(st["plan"])
    if st.get("decomposition"):
        lines += decomposition_lines(st["decomposition"])
    if st.get("context_share"):
        lines += share_lines(st["context_share"])
    return lines
