"""The HTML of the blocks analysis/scrutiny.py adds beside a verdict: a power table (SE, MDE at 80% power, the
largest change still allowed, per change and level), the selection-honest and leave-one-seed-out verdicts, the
plan, the decomposition of cf-acc's changes and the context share's secondary verdict."""

from __future__ import annotations

import html
from typing import Any

from ctxrel.report.scrutiny_text import BASIS, UNTESTED, interval_text, number_text, honest_lines, plan_lines, share_lines


def _e(x: Any) -> str:
    return html.escape(str(x))


def power_table(pw: dict[str, Any]) -> str:
    rows = "".join(
        f"<tr><td class='l'>{change}</td><td class='l'>{BASIS[e['basis']]}</td><td>{e['n']}</td>"
        f"<td>{number_text(e['estimate'], '+.3f')}</td><td>{number_text(e['ci_low'], '+.3f')}, {number_text(e['ci_high'], '+.3f')}</td>"
        f"<td>{number_text(e['se'])}</td><td>{number_text(e['mde'])}</td><td>{number_text(e['allowed'], '+.3f')}</td></tr>"
        for change in ("rise", "drop") for e in pw.get(change, []))
    rows += "".join(f"<tr><td class='l'>{change}</td><td class='l' colspan='7'>not tested: {_e(UNTESTED[change])}</td></tr>"
                    for change in pw.get("untested", ()))
    return ("<table><tr><th class='l'>change</th><th class='l'>interval over</th><th>n</th><th>estimate</th>"
            "<th>95% CI</th><th>SE</th><th>MDE (80% power, two-sided .05)</th><th>largest change still allowed"
            f"</th></tr>{rows}</table>")


def decomposition_table(dec: dict[str, Any]) -> str:
    rows = []
    for name, d in dec.items():
        if not d:
            continue
        cells = "".join(f"<td>{_e(interval_text(d[m][0]))}</td>" for m in ("cf_acc", "par_acc", "share_both", "share_neither"))
        rows.append(f"<tr><td class='l'>{_e(name)} (step {d['from']} &rarr; {d['to']})</td>{cells}</tr>")
    if not rows:
        return ""
    return ("<table><tr><th class='l'>between</th><th>&Delta; cf-acc</th><th>&Delta; par-acc</th>"
            "<th>&Delta; both</th><th>&Delta; neither</th></tr>" + "".join(rows) + "</table>"
            "<p class='note'>&Delta; cf-acc = &minus;&Delta; par-acc + &Delta; both &minus; &Delta; neither exactly "
            "(every generation has one of the four outcomes); paired 95% intervals over items.</p>")


def group_subsets(groups: list[dict[str, Any]], bench: str) -> list[tuple[dict[str, Any], str, dict[str, Any]]]:
    """(group, subset, its statistics) of benchmark `bench` in every group of a report, in order."""
    return [(g, subset, st) for g in groups for subset, st in g["benchmarks"][bench]["subsets"].items()]


def scrutiny_section(groups: list[dict[str, Any]], bench: str) -> str:
    """One <details> per group and subset holding every new block; '' when no subset has them."""
    parts = []
    for g, subset, st in group_subsets(groups, bench):
        body = []
        if st.get("power"):
            body.append(power_table(st["power"]))
        for key, lines in (("honest", honest_lines), ("plan", plan_lines), ("context_share", share_lines)):
            if st.get(key):
                body += [f"<p>{_e(line)}</p>" for line in lines(st[key])]
        if st.get("honest", {}).get("split"):
            ids = st["honest"]["split"]["select_ids"]
            body.append(f"<details><summary>items that chose the peak ({len(ids)})</summary><p class='note'>"
                        f"{_e(', '.join(ids))}</p></details>")
        if st.get("decomposition"):
            body.append(decomposition_table(st["decomposition"]))
        if body:
            who = f"{g['label']}: " if len(groups) > 1 else ""
            parts.append(f"<details open><summary>{_e(who + subset)}: power, selection-honest verdict, "
                         f"decomposition</summary>{''.join(body)}</details>")
    if not parts:
        return ""
    return ("<h3>What the verdict can see</h3><p class='note'>Items intervals answer <i>would another sample of "
            "items agree?</i>; seeds and two-level intervals answer <i>would another training run agree?</i>. The "
            "selection-honest verdict chooses the peak on half of the items and tests it on the other half.</p>"
            + "".join(parts))
