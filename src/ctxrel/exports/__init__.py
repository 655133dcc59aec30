"""Results handed to other tools: an lm-evaluation-harness task (`lmeval_task`), Every Eval Ever records
(`every_eval`); the `ctxrel export` verb (`cli`)."""
