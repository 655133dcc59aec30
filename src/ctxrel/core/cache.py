"""Where ctxrel keeps what it makes or fetches once (converted models, downloaded benchmark files)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """$CTXREL_CACHE, else ~/.cache/ctxrel."""
    return Path(os.environ.get("CTXREL_CACHE") or Path.home() / ".cache" / "ctxrel")
