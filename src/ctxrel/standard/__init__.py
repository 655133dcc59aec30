"""Standard benchmarks (GSM8K, MMLU, ARC-Challenge, SQuAD v1.1): the ID-accuracy axis of every trajectory.

`tasks` turns local files into items with lm-evaluation-harness prompts; `scoring` holds the pure metrics.
"""

from ctxrel.standard.scoring import (gsm8k_correct, gsm8k_extract, mc_scores, score_generation, squad_em_f1,
                                     truncate_at_stop)
from ctxrel.standard.tasks import (STANDARD_TASKS, GenItem, MCItem, items_from_hub_rows, load_task, load_task_hub,
                                   stratified_limit)

__all__ = ["STANDARD_TASKS", "GenItem", "MCItem", "load_task", "load_task_hub", "items_from_hub_rows",
           "stratified_limit", "mc_scores", "gsm8k_extract", "gsm8k_correct", "squad_em_f1", "score_generation",
           "truncate_at_stop"]
