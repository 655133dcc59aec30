"""Hypothesis profiles of the fuzz suite: `ci` (default: a few hundred examples per target, derandomized so a
CI failure replays) and `long` (CTXREL_FUZZ=long: 1,000 random examples per target, for a nightly-style run).
CTXREL_FUZZ_EXAMPLES=N overrides the number of examples of either profile."""

from __future__ import annotations

import os

try:
    from hypothesis import HealthCheck, settings
except ImportError:  # the fuzz tests skip themselves (pytest.importorskip) without the dev extra
    settings = None

if settings is not None:
    _quiet = [HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large,
              HealthCheck.filter_too_much]
    _n = os.environ.get("CTXREL_FUZZ_EXAMPLES")
    settings.register_profile("ci", max_examples=int(_n or 200), deadline=None, derandomize=True, database=None,
                              suppress_health_check=_quiet, print_blob=True)
    settings.register_profile("long", max_examples=int(_n or 1000), deadline=None, database=None,
                              suppress_health_check=_quiet, print_blob=True)
    settings.load_profile(os.environ.get("CTXREL_FUZZ", "ci"))
