"""Shared test settings: one hypothesis profile for CI, one for local runs."""

import os

from hypothesis import HealthCheck, settings

# deadline=None: the first call of a Numba kernel compiles, which no per-example deadline survives.
settings.register_profile(
    "ci", max_examples=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=25, deadline=None)
# Emulated aarch64 runs each example ~50x slower: fewer examples, same fixed seed.
settings.register_profile(
    "arm64", max_examples=8, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(
    os.environ.get("HYPOTHESIS_PROFILE") or ("ci" if os.environ.get("CI") else "dev"))


# ---- shared fixtures ------------------------------------------------------------------------

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def fashion_mnist():
    """The real Fashion-MNIST data. Missing data fails (never skips): the tests need it."""
    from compress.datasets import DatasetError, load_fashion_mnist

    try:
        return load_fashion_mnist()
    except DatasetError as e:
        pytest.fail(f"real data needed: {e}", pytrace=False)


def make_compressed_lenet5(path, seed=0, densities=(0.5, 0.1, 0.05, 0.2), bits=(6, 5, 4, 3)):
    """A LeNet-5 .pnn with random weights, pruned and shared: quick to make, real code path."""
    from compress import zoo
    from compress.pack import pack
    from compress.prune import magnitude_mask
    from compress.quantize import cluster_weight
    from compress.trainer import Dense, Shared

    graph = zoo.build("lenet5", seed=seed)
    params = {}
    names = ["conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"]
    for name, tensor in graph.tensors.items():
        if name in names:
            i = names.index(name)
            mask = magnitude_mask(tensor, densities[i])
            codes, centroids = cluster_weight(tensor, mask, bits[i])
            params[name] = Shared(codes, centroids)
        else:
            params[name] = Dense(np.asarray(tensor, np.float32))
    pack(graph, params, str(path))
    return graph, params


@pytest.fixture(scope="session")
def tiny_pnn(tmp_path_factory):
    """Path of a small compressed LeNet-5 (random weights) shared by the engine tests."""
    path = tmp_path_factory.mktemp("models") / "lenet5-random.pnn"
    make_compressed_lenet5(path)
    return path
