"""Latency of the bundled demo LeNet-5 (`engine/data/lenet5.pnn`) on both backends.

    pytest benchmarks/ --benchmark-only

Each model is loaded and run once before timing, so Numba compilation (or loading its cache)
is never timed.
"""

import numpy as np
import pytest

import engine
from engine.cli import DEMO_MODEL
from engine.kernels._jit import HAVE_NUMBA

BACKENDS = ["numpy"] + (["numba"] if HAVE_NUMBA else [])


@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("backend", BACKENDS)
def test_demo_lenet5(benchmark, backend, batch):
    benchmark.group = f"demo lenet5, batch {batch}"
    model = engine.load(DEMO_MODEL, backend=backend)
    x = np.random.default_rng(0).standard_normal((batch, 1, 28, 28)).astype(np.float32)
    model.run(x)  # warm-up: compile / load the cache
    logits = benchmark(model.run, x)
    assert logits.shape == (batch, 10)
