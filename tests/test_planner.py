"""Well-formed files whose graph cannot run: each is a ModelError naming the file and node,
found before any kernel is built or any activation allocated."""

import numpy as np
import pytest

import engine
import formats
from engine.cli import DEMO_MODEL
from engine.runtime import read_graph


def _set(attr, **kv):
    return lambda g: g.nodes[attr].attrs.update(**kv)


CASES = {
    "stride 0": (_set(0, stride=[0, 0]), "stride"),
    "negative padding": (_set(0, padding=[-3, -3]), "padding"),
    "stride not a number": (_set(0, stride="x"), "stride"),
    "huge padding": (_set(0, padding=[10**6, 10**6]), "limit"),
    "pool window 0": (_set(1, kernel=[0, 0]), "kernel"),
    "pool window too big": (_set(1, kernel=[100, 100]), "window"),
    "groups": (_set(0, groups=2), "not supported"),
    "huge input": (lambda g: setattr(g, "input_shape", (1, 10**6, 10**6)), "limit"),
    "negative input dim": (lambda g: setattr(g, "input_shape", (1, -28, 28)), r"integers in 1\.\."),
    "dangling input": (lambda g: setattr(g.nodes[2], "inputs", ["nope"]), "nope"),
    "weight of another layer": (lambda g: g.nodes[0].params.update(weight="fc1.weight"),
                                "weight"),
    "output never produced": (lambda g: setattr(g, "output_name", "probs"), "probs"),
    "unknown op": (lambda g: setattr(g.nodes[3], "op", "lstm"), "lstm"),
    "4001-digit mean": (lambda g: setattr(g.preprocess, "mean", [10**4000]), "finite number"),
    "2**40-pixel input side": (lambda g: setattr(g, "input_shape", (1, 2**40, 28)),
                               "integers in 1..16777216"),
    "inputs as a string": (lambda g: setattr(g.nodes[1], "inputs", "relu1"),
                           "inputs must be a list of strings"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("backend", ["numpy", "auto"])
def test_unrunnable_graph_is_a_model_error(case, backend, tmp_path):
    edit, needle = CASES[case]
    graph = read_graph(DEMO_MODEL).copy()
    edit(graph)
    path = tmp_path / "bad.pnn"
    formats.write(path, graph.to_metadata(), graph.tensors)
    with pytest.raises(engine.ModelError, match=needle) as info:
        engine.load(path, backend=backend)
    assert str(path) in str(info.value)


def test_unmodified_copy_runs(tmp_path):
    graph = read_graph(DEMO_MODEL).copy()
    formats.write(tmp_path / "ok.pnn", graph.to_metadata(), graph.tensors)
    m = engine.load(tmp_path / "ok.pnn", backend="numpy")
    assert m.run(np.zeros((2, 1, 28, 28), np.float32)).shape == (2, 10)
