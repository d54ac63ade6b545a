"""Drawing a valid model. One draw interface over two sources: `RandomDraw` (a seeded
random.Random: the CLI, fast, mutant i of seed S reproducible from "S:i" alone) and `HypDraw`
(hypothesis: the tests, where every choice shrinks)."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from engine.ir import Graph, Node, Preprocess
from engine.ops import OPS
from formats.tensors import CodebookTensor, from_dense_codes
from formats.writer import encode_tensor
from tests.fuzz.mutants.sections import FileSpec, MetaSec, parse_tensor_section


class RandomDraw:
    """Draws from a seeded random.Random: the CLI's driver (mutant i of seed S = Random("S:i"))."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def int(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi)

    def bool(self, p: float = 0.5) -> bool:
        return self.rng.random() < p

    def choice(self, seq):
        seq = list(seq)
        return seq[self.rng.randrange(len(seq))]

    def weighted(self, pairs):
        total = sum(w for w, _ in pairs)
        x = self.rng.randrange(total)
        for w, v in pairs:
            if x < w:
                return v
            x -= w
        raise AssertionError("unreachable")

    def bytes(self, n: int) -> bytes:
        return self.rng.randbytes(n)


class HypDraw(RandomDraw):
    """The same draws through hypothesis (`st.composite`): every choice shrinks to the first
    option, `bool(p)` to False, so rare features shrink away."""

    def __init__(self, draw) -> None:
        self._draw = draw

    def int(self, lo: int, hi: int) -> int:
        return self._draw(st.integers(lo, hi))

    def bool(self, p: float = 0.5) -> bool:
        return self._draw(st.integers(0, 999)) >= 1000 - int(round(p * 1000))

    def choice(self, seq):
        return self._draw(st.sampled_from(list(seq)))

    def weighted(self, pairs):
        total = sum(w for w, _ in pairs)
        x = self._draw(st.integers(0, total - 1))
        for w, v in pairs:
            if x < w:
                return v
            x -= w
        raise AssertionError("unreachable")

    def bytes(self, n: int) -> bytes:
        return self._draw(st.binary(min_size=n, max_size=n))



@dataclass
class ModelCase:
    graph: Graph
    spec: FileSpec
    blob: bytes
    metadata: dict               # what PnnFile.metadata must be
    tensors: dict                # name -> source tensor (what the reader must decode)
    summary: str = ""


def _values(d, rng: np.random.Generator, shape) -> np.ndarray:
    """float32 values: mostly normal, sometimes with special values sprinkled in."""
    v = rng.standard_normal(shape).astype(np.float32) * np.float32(d.choice([1.0, 0.1, 3.0]))
    if v.size and d.bool(0.1):
        special = np.array([0.0, -0.0, 1e-40, -1e-40, 65504.0, 1e30, -1e-8, 6e-8],
                           dtype=np.float32)
        at = rng.integers(0, v.size, max(1, v.size // 8))
        v.reshape(-1)[at] = rng.choice(special, at.size)
    return v


def draw_codebook(d, shape: tuple) -> CodebookTensor:
    rng = np.random.default_rng(d.int(0, 2**32 - 1))
    o = shape[0]
    mode = d.choice(["shared", "per_channel", "scaled"])
    bits = d.weighted([(12, None), (1, 16), (1, "wide")])
    bits = d.int(1, 8) if bits is None else d.int(9, 15) if bits == "wide" else 16
    kmax = 1 << bits
    k = d.weighted([(6, "small"), (3, "medium"), (1, "full")])
    if k == "small":
        k = d.int(1, min(kmax, 16))
    elif k == "medium":
        k = d.int(1, min(kmax, 300))
    else:
        k = kmax if bits <= 10 else d.int(1, min(kmax, 5000))
    density = d.weighted([(2, 0.0), (3, 1.0), (8, None)])
    if density is None:
        density = d.int(1, 99) / 100
    dist = d.choice(["flat", "skewed", "one", "two"])
    if dist == "flat":
        codes = rng.integers(0, k, shape)
    elif dist == "skewed":
        codes = np.minimum(rng.geometric(d.choice([0.05, 0.3, 0.7]), shape) - 1, k - 1)
    elif dist == "one":
        codes = np.full(shape, d.int(0, k - 1))
    else:
        codes = rng.choice(np.array([0, k - 1]), shape)
    codes = codes.astype(np.int64)
    codes[rng.random(shape) >= density] = -1
    book = _values(d, rng, (o, k) if mode == "per_channel" else (k,))
    scale = None
    if mode == "scaled":
        scale = (rng.random(o).astype(np.float32) * np.float32(2.0)
                 * np.where(rng.random(o) < 0.2, -1, 1).astype(np.float32))
        if d.bool(0.1):
            scale[rng.integers(0, o)] = 0.0
    return from_dense_codes(codes, book, bits, scale)


def draw_weight(d, shape: tuple, kinds=((6, "codebook"), (2, "f32"), (1, "f16"))):
    kind = d.weighted(list(kinds))
    if kind == "codebook":
        return draw_codebook(d, shape)
    rng = np.random.default_rng(d.int(0, 2**32 - 1))
    v = _values(d, rng, shape)
    if d.bool(0.3):
        v[rng.random(shape) < d.int(1, 99) / 100] = 0.0
    return np.clip(v, -6e4, 6e4).astype(np.float16) if kind == "f16" else v


NAMES = ["x", "input", "img", "données", "层", "a.b", "out", "𝑥"]


def _pair_attr(d, a: int, b: int, default: int):
    """An attribute as JSON: an int when both halves agree (sometimes), else a pair; omitted
    (None) sometimes when it is the default."""
    if a == b == default and d.bool(0.4):
        return None
    if a == b and d.bool(0.5):
        return a
    return [a, b]


def draw_model(d) -> ModelCase:
    """A valid chain model, every shape chained through its op's own infer_shape."""
    c, h, w = d.int(1, 4), d.int(1, 16), d.int(1, 16)
    shape = in_shape = (c, h, w)
    tensors: dict = {}
    nodes: list[Node] = []
    prefix = d.choice(["", "", "", "层.", "m/"])
    value = d.choice(NAMES[:6])
    input_name = value
    layer = 0

    def add(op: str, attrs: dict, params: dict) -> None:
        nonlocal shape, value, layer
        layer += 1
        name = f"{prefix}{op}{layer}"
        out = f"v{layer}"
        pshapes = {r: tuple(int(s) for s in tensors[t].shape) for r, t in params.items()}
        shape = tuple(OPS[op].infer_shape(attrs, (shape,), pshapes))
        nodes.append(Node(op=op, name=name, inputs=[value], outputs=[out], attrs=attrs,
                          params=params))
        value = out

    def params_for(o: int, wshape: tuple) -> dict:
        name = f"{prefix}l{layer + 1}"
        tensors[f"{name}.weight"] = draw_weight(d, wshape)
        params = {"weight": f"{name}.weight"}
        bias = d.weighted([(3, None), (5, "f32"), (2, "f16"), (1, "codebook")])
        if bias is not None:
            tensors[f"{name}.bias"] = draw_weight(d, (o,), ((1, bias),))
            params["bias"] = f"{name}.bias"
        return params

    for _ in range(d.weighted([(1, 0), (3, 1), (3, 2), (2, 3), (1, 4)])):
        op = d.weighted([(4, "conv2d"), (2, "relu"), (2, "maxpool2d")])
        c, h, w = shape
        if op == "conv2d":
            ph, pw = d.int(0, 2), d.int(0, 2)
            kh, kw = d.int(1, min(5, h + 2 * ph)), d.int(1, min(5, w + 2 * pw))
            sh, sw = d.int(1, 3), d.int(1, 3)
            o = d.int(1, 8)
            attrs = {}
            for key, (a, b), default in (("stride", (sh, sw), 1), ("padding", (ph, pw), 0)):
                v = _pair_attr(d, a, b, default)
                if v is not None:
                    attrs[key] = v
            if d.bool(0.1):
                attrs["dilation"] = d.choice([1, [1, 1]])
            if d.bool(0.1):
                attrs["groups"] = 1
            add(op, attrs, params_for(o, (o, c, kh, kw)))
        elif op == "maxpool2d":
            kh, kw = d.int(1, min(4, h)), d.int(1, min(4, w))
            ph, pw = d.int(0, kh // 2), d.int(0, kw // 2)
            attrs = {"kernel": kh if kh == kw and d.bool() else [kh, kw]}
            if d.bool(0.6):
                attrs["stride"] = _pair_attr(d, d.int(1, 3), d.int(1, 3), 0) or 1
            v = _pair_attr(d, ph, pw, 0)
            if v is not None:
                attrs["padding"] = v
            add(op, attrs, {})
        else:
            add(op, {}, {})
    if d.bool(0.9):
        attrs = d.choice([{}, {"start_dim": 1}, {"start_dim": -3}])
        add("flatten", attrs, {})
        for _ in range(d.weighted([(1, 0), (4, 1), (3, 2), (1, 3)])):
            if d.bool(0.3):
                add("relu", {}, {})
            n_in = shape[0]
            o = d.weighted([(3, None), (1, 1), (1, 64)]) or d.int(1, 24)
            add("linear", {}, params_for(o, (o, n_in)))
    if d.bool(0.5):
        nd = len(shape) + 1
        axes = [1, -1] if nd == 2 else [1, 2, 3, -1, -2, -3]
        add("softmax", d.choice([{}, {"axis": d.choice(axes)}]), {})
    if d.bool(0.05):  # a tensor no node uses: allowed
        tensors["spare"] = draw_weight(d, (d.int(1, 5), d.int(1, 5)))

    n_out = shape[0] if shape else 1
    labels = [f"class{i}" for i in range(n_out)]
    if d.bool(0.2):
        labels = d.choice([[], ["T-shirt/top", "Trouser", "Pullover"], ["é"] * n_out])
    cin = in_shape[0]
    pre = Preprocess(scale=d.choice([1 / 255, 1.0, 0.5]),
                     mean=[d.int(0, 255) / 255 for _ in range(d.choice([1, cin]))],
                     std=[d.int(1, 100) / 100 for _ in range(d.choice([1, cin]))])
    graph = Graph(nodes=nodes, input_name=input_name, input_shape=in_shape, output_name=value,
                  tensors=tensors, labels=labels, preprocess=pre,
                  producer=d.choice(["pocketnn", "mutants", ""]))
    meta = graph.to_metadata()
    if d.bool(0.2):
        del meta["graph"]["ir_version"]  # files before versioning: version 1
    for n in meta["graph"]["nodes"]:
        for key in ("attrs", "params"):
            if not n[key] and d.bool(0.2):
                del n[key]
    if d.bool(0.1):
        meta["comment"] = d.choice(["made by tests/fuzz/mutants.py", {"a": [1, 2.5, None]}])
    names = list(tensors)
    if d.bool(0.2):  # file order other than creation order
        for i in range(len(names) - 1, 0, -1):
            j = d.int(0, i)
            names[i], names[j] = names[j], names[i]
    items: list = [MetaSec(doc={"metadata": meta, "tensors": []}, zlib=d.bool(0.8),
                           sort_keys=d.bool(0.9))]
    for name in names:
        rel_bits = d.weighted([(4, None), (1, "forced")])
        if rel_bits is not None:
            rel_bits = d.weighted([(6, None), (1, 16), (1, 13)]) or d.int(1, 12)
        raw = encode_tensor(name, tensors[name], rel_bits)
        sec = parse_tensor_section(raw)
        assert sec.to_bytes() == raw
        items.append(sec)
    spec = FileSpec(items)
    spec.renumber()
    blob = spec.to_bytes()
    metadata = json.loads(json.dumps(meta))
    summary = (f"input {in_shape}; " + ", ".join(f"{n.op}" for n in nodes) + "; "
               + ", ".join(f"{k}:{_describe(t)}" for k, t in tensors.items()))
    return ModelCase(graph, spec, blob, metadata, {k: tensors[k] for k in names}, summary)


def _describe(t) -> str:
    if isinstance(t, CodebookTensor):
        mode = "scaled" if t.scale is not None else ("per_channel" if t.codebook.ndim == 2
                                                       else "shared")
        return (f"cb{t.shape}/{mode}/{t.bits}b/K{t.codebook.shape[-1]}/nnz{t.nnz}")
    return f"{t.dtype}{t.shape}"
