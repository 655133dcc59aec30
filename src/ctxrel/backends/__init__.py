"""Language-model backends behind one narrow interface (`ctxrel.backends.base.LM`)."""

from ctxrel.backends.base import LM

__all__ = ["LM"]
