"""Shared test settings: one hypothesis profile for CI, one for local runs."""

import os

from hypothesis import HealthCheck, settings

# deadline=None: the first call of a Numba kernel compiles, which no per-example deadline survives.
settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))
