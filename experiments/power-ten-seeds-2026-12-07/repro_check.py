"""Reproduction check (prereg): each seed's cf-acc per checkpoint against the 2026-11-29 table. Run in the clone:
`PYTHONPATH=src python repro_check.py 0 1 ... 9` (reads runs/ir-sS)."""
import sys

import ctxrel

OLD = {0: ".58 .63 .73 .70 .59 .51 .62 .60", 1: ".58 .62 .68 .65 .60 .68 .69 .73", 2: ".58 .63 .68 .68 .55 .71 .56 .56",
       3: ".58 .63 .72 .62 .57 .74 .61 .75", 4: ".58 .63 .75 .78 .57 .60 .71 .71", 5: ".58 .62 .71 .77 .62 .68 .69 .83",
       6: ".58 .63 .68 .65 .57 .64 .71 .72", 7: ".58 .62 .72 .61 .72 .56 .61 .63", 8: ".58 .63 .73 .78 .54 .59 .78 .76",
       9: ".58 .64 .74 .75 .59 .79 .77 .74"}
for s in map(int, sys.argv[1:]):
    m = ctxrel.load(f"runs/ir-s{s}").metrics
    m = m[(m.benchmark == "cf_capitals_moved") & (m.subset == "all") & (m.metric == "cf_acc")].sort_values("step")
    new = " ".join(f"{v:.2f}".lstrip("0") for v in m.value)
    print(f"seed {s} new {new}\n       old {OLD[s]}  {'same' if new == OLD[s] else 'DIFFERENT'}")
