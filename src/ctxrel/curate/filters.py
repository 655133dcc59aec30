"""Pure filters: context-only, keyword overlap, and the C / C+S / S classification from losses.

The study (Goyal et al., ICLR 2025, §4-5) traces context-parametric inversion to finetuning examples whose
context the model does not need: *non-context-critical* (C+S) examples, whose target the model already
predicts well without the context, and subject-critical (S) examples with no context at all. Its mitigations
keep only examples with a context, and drop the context examples with the lowest loss without context (the
lowest 25%). These functions take plain data and return plain data; loading and scoring live elsewhere.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from ctxrel.core.errors import CtxrelError, InputError

CLASSES = ("C", "C+S", "S")
UNSCORED = "unscored"  # a context record whose response did not fit in --max-length


# -- C / C+S / S ----------------------------------------------------------------------------------------------

def quantile(values: list[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (numpy's default method)."""
    if not values:
        raise CtxrelError("no scored context records to take a quantile of")
    xs = sorted(values)
    pos = q * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def loss_threshold(scores: Iterable[dict], *, quantile_: float | None = None, value: float | None = None,
                   s_quantile: float | None = None) -> float:
    """The loss-without-context below which a context record counts as C+S, by exactly one rule:

    * `quantile_`: that quantile of loss without context over the scored context records (0.25 = the study's
      lowest 25%; the C+S share of the context records is then fixed by construction);
    * `value`: a fixed loss (nats);
    * `s_quantile`: that quantile of the loss of the records *without* context (S, pure recall), e.g. 0.5: a
      context record is C+S when the model predicts its response without the context at least as well as the
      median pure-recall example. The C+S share is then a measurement, not a choice.
    """
    scores = list(scores)
    if sum(x is not None for x in (quantile_, value, s_quantile)) != 1:
        raise CtxrelError("give exactly one threshold rule: a quantile, a value, or an S-quantile")
    if value is not None:
        if not math.isfinite(value):
            raise CtxrelError(f"--threshold {value}: must be a finite loss value")
        return value
    q = quantile_ if quantile_ is not None else s_quantile
    if not 0 <= q <= 1:
        raise CtxrelError(f"quantile {q}: must lie in [0, 1]")
    want_context = quantile_ is not None
    losses = [s["loss_without"] for s in scores if s["context"] == want_context and s["loss_without"] is not None]
    if not losses:
        raise CtxrelError(f"no scored {'context' if want_context else 'no-context (S)'} records to take a "
                          "quantile of")
    return quantile(losses, q)


def classify_score(score: dict, threshold: float) -> str:
    """S: no context. C+S: context present and loss without it strictly below `threshold`. C: the rest.
    A context record with no response token within --max-length cannot be scored: `unscored`."""
    if not score["context"]:
        return "S"
    if score["loss_without"] is None:
        return UNSCORED
    return "C+S" if score["loss_without"] < threshold else "C"


# -- keywords -------------------------------------------------------------------------------------------------

@dataclass
class KeywordMatcher:
    """Whole-word matcher for a list of entity names.

    A name matches only where neither side touches a letter or digit: "Roman" does not match "Romania", "Nice"
    does not match "Nicely"; punctuation and hyphens are boundaries ("Paris-based", "France's" match). Spaces
    inside a name match any whitespace. Longer names are tried first at a position, so "New Cairo" is reported
    as "New Cairo", not "Cairo". Case-sensitive by default: entity names are proper nouns ("Turkey" the
    country, not "turkey" the bird).
    """

    names: list[str]
    ignore_case: bool = False
    _pattern: re.Pattern = field(init=False, repr=False)
    _canon: dict[str, str] = field(init=False, repr=False)

    def __post_init__(self):
        names = sorted({n.strip() for n in self.names if n.strip()}, key=lambda n: (-len(n), n))
        if not names:
            raise CtxrelError("keyword list is empty")
        self.names = names
        alts = "|".join(r"\s+".join(re.escape(w) for w in n.split()) for n in names)
        flags = re.IGNORECASE if self.ignore_case else 0
        self._pattern = re.compile(rf"(?<![^\W_])(?:{alts})(?![^\W_])", flags)
        self._canon = {self._key(n): n for n in names}

    def _key(self, text: str) -> str:
        text = " ".join(text.split())
        return text.lower() if self.ignore_case else text

    def find(self, text: str) -> list[str]:
        """The listed names found in `text` (each once, in order of first appearance)."""
        seen: dict[str, None] = {}
        for m in self._pattern.finditer(text):
            seen[self._canon[self._key(m.group(0))]] = None
        return list(seen)


def countries_capitals() -> list[str]:
    """Every name the `cf_capitals` benchmark uses: countries, real capitals and their aliases, and the other
    cities of each country (the last of them is the counterfactual capital; the rest appear in contexts)."""
    from ctxrel.benchmarks.builtin import load_country_facts

    names = []
    for f in load_country_facts():
        names += [f.country, f.capital, *f.capital_aliases, *f.other_cities]
    return names


def read_keyword_file(path: str | Path) -> list[str]:
    """One name per line; blank lines and lines starting with '#' are skipped."""
    p = Path(path).expanduser()
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CtxrelError(f"--drop-keywords {path}: cannot read ({e}); give a UTF-8 text file with one name per "
                          "line, or countries-capitals") from None
    names = []
    for n, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if len(line) > 200:
            raise InputError("a keyword longer than 200 characters; one name per line expected", path=str(p),
                             line=n)
        names.append(line)
    if not names:
        raise CtxrelError(f"--drop-keywords {path}: no names in the file (one per line, '#' for comments)")
    return names


def keyword_list(spec: str) -> tuple[list[str], str | None]:
    """(names, file path or None) for `--drop-keywords countries-capitals|FILE`."""
    if spec == "countries-capitals":
        return countries_capitals(), None
    p = Path(spec).expanduser()
    if not p.is_file():
        raise CtxrelError(f"--drop-keywords {spec}: not a file; give countries-capitals or a text file with one "
                          "name per line")
    return read_keyword_file(p), str(p)


def summarise_matches(matches: list[list[str]]) -> dict:
    """Per-name record counts (most frequent first) for the keyword report."""
    counts = Counter(name for names in matches for name in names)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
