"""Well-formed files whose graph cannot run: each is a ModelError naming the file and node,
found before any kernel is built or any activation allocated."""

import numpy as np
import pytest

import engine
import formats
from engine.cli import DEMO_MODEL
from engine.errors import ModelError
from engine.ir import Graph, Node
from engine.planner import plan
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
    "groups not matching the channels": (_set(0, groups=2), "with groups=2 expects 2"),
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


# --- graphs that are not chains ------------------------------------------------------------


class _Sum:
    """A two-input op for planner tests, independent of the real op set."""
    NAME, ATTRS, INPUTS = "test_sum", (), (2, 2)

    @staticmethod
    def infer_shape(attrs, in_shapes, params):
        if in_shapes[0] != in_shapes[1]:
            raise ValueError(f"shapes differ: {in_shapes}")
        return in_shapes[0]

    @staticmethod
    def cost(attrs, in_shapes, out_shape, params, backend):
        return int(np.prod(out_shape)), 0

    @staticmethod
    def build(attrs, params, backend):
        from engine.kernels import Kernel
        return Kernel("test_sum", lambda a, b: a + b)


@pytest.fixture
def with_sum(monkeypatch):
    from engine import ops
    monkeypatch.setitem(ops.OPS, "test_sum", _Sum)


def diamond(order=(0, 1, 2, 3)):
    """x -> relu a; a -> relu b; (a, b) -> sum c; c -> flatten: a is read twice."""
    nodes = [Node("relu", "ra", ["x"], ["a"]), Node("relu", "rb", ["a"], ["b"]),
             Node("test_sum", "s", ["a", "b"], ["c"]), Node("flatten", "f", ["c"], ["y"])]
    return Graph([nodes[i] for i in order], "x", (2, 3, 3), "y", {})


@pytest.mark.parametrize("order", [(0, 1, 2, 3), (3, 2, 1, 0), (2, 0, 3, 1)])
def test_dag_runs_in_any_listed_order(with_sum, order):
    p = plan(diamond(order), "numpy")
    assert [s.node.name for s in p.steps] == ["ra", "rb", "s", "f"]
    # a lives until the sum reads it; x dies after its only reader
    assert p.steps[0].free_after == ("x",) and set(p.steps[2].free_after) == {"a", "b"}
    x = np.random.default_rng(0).standard_normal((4, 2, 3, 3)).astype(np.float32)
    from engine.runtime import Model
    m = Model(diamond(order), "numpy")
    a = np.maximum(x, 0)
    np.testing.assert_array_equal(m.run(x), (a + a).reshape(4, -1))


def test_value_read_twice_by_one_node(with_sum):
    g = Graph([Node("test_sum", "s", ["x", "x"], ["y"])], "x", (2,), "y", {})
    p = plan(g, "numpy")
    assert p.steps[0].free_after == ("x",)


@pytest.mark.parametrize("nodes, reason", [
    ([Node("test_sum", "s", ["x", "b"], ["a"]), Node("relu", "r", ["a"], ["b"])],
     r"cycle through node\(s\) 's', 'r'"),
    ([Node("relu", "r", ["x"], ["a"]), Node("relu", "q", ["x"], ["a"])],
     "node 'q' writes 'a', which is already written"),
    ([Node("relu", "r", ["nope"], ["a"])], "node 'r' reads 'nope', which no node writes"),
    ([Node("relu", "r", ["x", "x"], ["a"])], r"relu reads 1 input value\(s\), the node gives 2"),
    ([Node("test_sum", "s", ["x"], ["a"])], r"test_sum reads 2 input value\(s\), the node gives 1"),
    ([Node("relu", "r", ["x"], ["a", "b"])], "node 'r' must write one value, not 2"),
    ([Node("test_sum", "s", ["x", "x"], ["a"]), Node("flatten", "f", ["x"], ["x2"]),
      Node("test_sum", "t", ["a", "x2"], ["y"])], r"shapes differ"),
])
def test_bad_dags_are_refused(with_sum, nodes, reason):
    out = nodes[-1].outputs[0]
    with pytest.raises(ModelError, match=reason):
        plan(Graph(nodes, "x", (2, 3, 3), out, {}), "numpy")


@pytest.mark.parametrize("node, version", [
    (Node("conv2d", "c", ["x"], ["y"], {"stride": 2, "padding": [1, 1]}, {}), 1),
    (Node("conv2d", "c", ["x"], ["y"], {"groups": 2}, {}), 2),
    (Node("conv2d", "c", ["x"], ["y"], {"padding": [1, 0, 1, 0]}, {}), 2),
    (Node("maxpool2d", "p", ["x"], ["y"], {"kernel": 2, "ceil_mode": 1}, {}), 2),
    (Node("relu6", "r", ["x"], ["y"]), 2),
    (Node("add", "a", ["x", "x"], ["y"]), 2),
])
def test_files_are_stamped_with_the_oldest_ir_that_describes_them(node, version):
    g = Graph([node], "x", (1, 4, 4), "y", {})
    assert g.to_metadata()["graph"]["ir_version"] == version
