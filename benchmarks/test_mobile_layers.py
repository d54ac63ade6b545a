"""MobileNetV2-like conv layers, batch 1 (the phone case), each way a layer can run: the Numba
kernels on a 4-bit codebook at 35% density (and at 100%), the SciPy/NumPy path on the same
weight, and the dense float weight (im2col + BLAS, or the depthwise direct kernels).

    pytest benchmarks/test_mobile_layers.py --benchmark-only

Every kernel is built and run once before timing (compiles, or loads Numba's cache).
"""

import numpy as np
import pytest

from engine.kernels._jit import HAVE_NUMBA
from engine.ops import OPS
from formats import from_dense_codes

# name: (C, H=W, O, kernel, stride, groups)
LAYERS = {
    "dw3x3-32x112-s1": (32, 112, 32, 3, 1, 32),
    "dw3x3-96x112-s2": (96, 112, 96, 3, 2, 96),
    "dw3x3-144x56-s1": (144, 56, 144, 3, 1, 144),
    "pw-32to16-112": (32, 112, 16, 1, 1, 1),
    "pw-96to24-56": (96, 56, 24, 1, 1, 1),
    "pw-960to320-7": (960, 7, 320, 1, 1, 1),
    "conv3x3-3to32-224-s2": (3, 224, 32, 3, 2, 1),
}
WAYS = ["dense-numpy", "codebook35-numpy"] + (
    ["dense-numba", "codebook35-numba", "codebook100-numba"] if HAVE_NUMBA else [])


def codebook(rng, shape, density, bits=4):
    codes = rng.integers(0, 2**bits, size=shape)
    codes[rng.random(shape) >= density] = -1
    return from_dense_codes(codes, rng.standard_normal(2**bits).astype(np.float32), bits)


@pytest.mark.parametrize("way", WAYS)
@pytest.mark.parametrize("layer", list(LAYERS))
def test_mobile_layer(benchmark, layer, way):
    c, h, o, k, s, g = LAYERS[layer]
    rng = np.random.default_rng(0)
    shape = (o, c // g, k, k)
    form, backend = way.split("-")
    weight = (rng.standard_normal(shape).astype(np.float32) if form == "dense"
              else codebook(rng, shape, int(form[len("codebook"):]) / 100))
    attrs = {"stride": s, "padding": k // 2, "groups": g}
    kernel = OPS["conv2d"].build(attrs, {"weight": weight}, backend)
    benchmark.group = f"{layer}, batch 1"
    benchmark.extra_info["kernel"] = kernel.name
    x = rng.standard_normal((1, c, h, h)).astype(np.float32)
    kernel(x)
    y = benchmark(kernel, x)
    assert y.shape == (1, o, (h + 2 * (k // 2) - k) // s + 1, (h + 2 * (k // 2) - k) // s + 1)
