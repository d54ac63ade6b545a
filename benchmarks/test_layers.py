"""Each layer of the demo LeNet-5; weight layers three ways: the Numba CSR-codebook kernel, the
SciPy CSR path (no Numba), and the dense path on the decompressed weight (im2col + BLAS).

    pytest benchmarks/test_layers.py --benchmark-only

Every kernel is built and run once before timing (compiles, or loads Numba's cache).
"""

import numpy as np
import pytest

from engine.cli import DEMO_MODEL
from engine.kernels._jit import HAVE_NUMBA
from engine.ops import OPS
from engine.planner import shapes
from engine.runtime import read_graph

GRAPH = read_graph(DEMO_MODEL)
SHAPES = shapes(GRAPH)
WAYS = ["dense", "numpy"] + (["numba"] if HAVE_NUMBA else [])
# weight layers three ways; the others (pooling, flatten, relu) have one NumPy kernel
CASES = [(n, w) for n in GRAPH.nodes for w in (WAYS if n.params else ["numpy"])]


@pytest.mark.parametrize("batch", [1, 32])
@pytest.mark.parametrize("node, way", CASES, ids=[f"{n.name}-{w}" for n, w in CASES])
def test_layer(benchmark, node, way, batch):
    params = GRAPH.params_of(node)
    if way == "dense":
        params = {k: (v.to_dense() if hasattr(v, "to_dense") else v) for k, v in params.items()}
    kernel = OPS[node.op].build(node.attrs, params, "numpy" if way == "dense" else way)
    benchmark.group = f"{node.name} ({node.op}), batch {batch}"
    benchmark.extra_info["kernel"] = kernel.name
    x = np.random.default_rng(0).standard_normal(
        (batch, *SHAPES[node.inputs[0]])).astype(np.float32)
    kernel(x)
    y = benchmark(kernel, x)
    assert y.shape == (batch, *SHAPES[node.outputs[0]])


def test_decode_demo_file(benchmark):
    """Reading and decoding every tensor of the demo file (what `engine.load` does once)."""
    import formats

    def decode():
        with formats.open(DEMO_MODEL) as f:
            return f.tensors()

    benchmark.group = "decode"
    assert len(benchmark(decode)) == 8
