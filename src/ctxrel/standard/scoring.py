"""Pure scoring for the standard benchmarks, following lm-evaluation-harness (v0.4) metric definitions.

* Multiple choice (mmlu, arc_challenge): `acc` = the continuation with the highest summed log-likelihood is the
  gold one; `acc_norm` = the same after dividing each log-likelihood by the continuation's length in characters
  (lm-eval counts the choice text without the target delimiter " "). Ties go to the first choice (np.argmax).
* gsm8k: lm-eval's `gsm8k` filters. strict-match takes the first `#### (\\-?[0-9\\.\\,]+)`; flexible-extract the
  last match of `(-?[$0-9.,]{2,})|(-?[0-9]+)`; both are compared as strings after lm-eval's exact_match
  normalisation (drop "," and "$", a leading "...#### ", one trailing "."; lowercase). `exact_match` uses the
  strict answer when the output has one and the flexible one otherwise.
* squad: the official SQuAD v1.1 `evaluate-v1.1.py` metrics, max over the reference answers: exact match and
  token F1 after normalising (lowercase, drop punctuation, drop the articles a/an/the, collapse whitespace).
  Scores are fractions in [0, 1] (lm-eval reports squad on a 0-100 scale).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from typing import Sequence

from ctxrel.standard.tasks import TARGET_DELIMITER, GenItem, MCItem, gsm8k_normalize

# ------------------------------------------------------------------------------------------- multiple choice


def _argmax(values: Sequence[float]) -> int:
    return max(range(len(values)), key=lambda i: (values[i], -i))  # first maximum, as np.argmax


def mc_scores(item: MCItem, logprobs: Sequence[float]) -> dict:
    """{"acc", "acc_norm", "pred"} for one item from the summed log-probability of each choice."""
    if len(logprobs) != len(item.choices):
        raise ValueError(f"{item.id}: {len(logprobs)} log-probabilities for {len(item.choices)} choices")
    lengths = [max(len(c.removeprefix(TARGET_DELIMITER)), 1) for c in item.choices]
    pred = _argmax(list(logprobs))
    pred_norm = _argmax([lp / n for lp, n in zip(logprobs, lengths)])
    return {"acc": int(pred == item.gold), "acc_norm": int(pred_norm == item.gold), "pred": pred}


# ------------------------------------------------------------------------------------------------------ gsm8k

_GSM8K_STRICT = re.compile(r"#### (\-?[0-9\.\,]+)")
_GSM8K_FLEXIBLE = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")


def gsm8k_strict(text: str) -> str | None:
    m = _GSM8K_STRICT.search(text)
    return gsm8k_normalize(m.group(1)) if m else None


def gsm8k_flexible(text: str) -> str | None:
    matches = _GSM8K_FLEXIBLE.findall(text)
    if not matches:
        return None
    last = next((g for g in matches[-1] if g), "")
    return gsm8k_normalize(last)


def gsm8k_extract(text: str) -> str | None:
    """The final number of a solution: after "#### " if present, else the last number in the text."""
    strict = gsm8k_strict(text)
    return strict if strict is not None else gsm8k_flexible(text)


def gsm8k_correct(output: str, answers: Sequence[str]) -> bool:
    pred = gsm8k_extract(output)
    return pred is not None and pred in {gsm8k_normalize(a) for a in answers}


# ------------------------------------------------------------------------------------------------------ squad

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def squad_normalize(text: str) -> str:
    """Official SQuAD answer normalisation (evaluate-v1.1.py `normalize_answer`)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def _f1(prediction: str, truth: str) -> float:
    pred, gold = squad_normalize(prediction).split(), squad_normalize(truth).split()
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_em_f1(prediction: str, answers: Sequence[str]) -> tuple[float, float]:
    """(exact match, F1), each the max over the reference answers."""
    if not answers:
        raise ValueError("squad_em_f1 needs at least one reference answer")
    em = max(float(squad_normalize(prediction) == squad_normalize(a)) for a in answers)
    return em, max(_f1(prediction, a) for a in answers)


# ------------------------------------------------------------------------------------------------- generation


def truncate_at_stop(text: str, stop: str | Sequence[str]) -> str:
    """The text before the earliest stop string (lm-eval's `until`)."""
    stops = (stop,) if isinstance(stop, str) else stop
    cut = min((i for s in stops if s and (i := text.find(s)) >= 0), default=len(text))
    return text[:cut]


def score_generation(item: GenItem, output: str) -> dict:
    """gsm8k: {"exact_match", "strict_match", "flexible_match"}; squad: {"exact_match", "f1"}. The output is cut
    at the item's stop strings first (the LM interface generates without them)."""
    text = truncate_at_stop(output, item.stop)
    if item.task == "gsm8k":
        gold = {gsm8k_normalize(a) for a in item.answers}
        strict, flexible = gsm8k_strict(text), gsm8k_flexible(text)
        return {"exact_match": int(gsm8k_correct(text, item.answers)), "strict_match": int(strict in gold),
                "flexible_match": int(flexible in gold)}
    if item.task == "squad":
        em, f1 = squad_em_f1(text, item.answers)
        return {"exact_match": em, "f1": f1}
    raise ValueError(f"{item.id}: no generation metric for task {item.task!r}")
