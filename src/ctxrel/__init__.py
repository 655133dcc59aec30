"""ctxrel: watch and fix how a language model weighs its context against what it memorised."""

__version__ = "0.1.0"
