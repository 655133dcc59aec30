"""Results handed to other tools: an lm-evaluation-harness task (`lmeval_task`), Every Eval Ever records
(`every_eval`), a Parquet dataset with its card (`parquet`); the `ctxrel export` verb (`cli`)."""
