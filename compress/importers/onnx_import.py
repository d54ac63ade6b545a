"""`import_onnx(path_or_model) -> engine.ir.Graph`: an ONNX CNN as our graph IR (docs/ONNX.md).

    from compress.importers.onnx_import import import_onnx
    graph = import_onnx("mobilenet_v2.onnx")                # needs pip install 'pocketnn[onnx]'
    formats.write("m.pnn", graph.to_metadata(), graph.tensors)

The file is untrusted: its size is bounded before it is parsed, external data is refused (a
path in a model must not make us read other files), and every tensor's declared size is
checked against its stored bytes and our limits before any is converted. A model that parses
is translated node by node (compress/importers/onnx_ops.py); every op, attribute or use the IR
cannot express is collected and reported in one OnnxImportError. Then BatchNormalization is
folded into the conv (or linear) before it, a constant add after one becomes its bias, and
nodes that do not lead to the output are dropped.
"""

from __future__ import annotations

import math
import os
from collections import Counter, defaultdict

import numpy as np

from compress.importers.errors import printable
from compress.importers.onnx_context import Context, Unsupported, q
from compress.importers.onnx_fold import fold
from compress.importers.onnx_ops import EXTRA_OUTPUTS, RULES
from engine.ir import MAX_INPUT_DIM, Graph, Node, Preprocess
from formats.constants import MAX_ELEMENTS, MAX_NDIM

# A .onnx file or model larger than this is refused before parsing: the engine's default
# memory limit (engine/budget.py), and half of protobuf's 2 GiB ceiling.
MAX_MODEL_BYTES = 1 << 30
MAX_NODES = 10_000  # ResNet-152 has about 500; a .pnn's metadata holds about 13,000 (formats)
DTYPES = ("float32", "float16")  # how parameter tensors are stored
_MAX_LISTED = 6  # node names listed per kind of problem
MAX_NAME = 200  # longer ONNX node names are replaced (they name tensors: at most 1,024 bytes)


class OnnxImportError(ValueError):
    """An ONNX model we cannot read or translate; the message is one line naming the file.
    `problems` lists (node, op_type, what) for every unsupported node."""

    def __init__(self, source: str, message: str, problems: list | None = None):
        super().__init__(f"{source}: {message}")
        self.source = source
        self.problems = problems or []


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("importing ONNX models needs the onnx package: "
                          "pip install 'pocketnn[onnx]'") from None
    return onnx


def import_onnx(model, *, dtype: str = "float32") -> Graph:
    """An ONNX model (a path, bytes, or an onnx.ModelProto) as a Graph whose weights are
    `dtype` ("float32", or "float16" to halve them; 1-d tensors stay float32).
    OnnxImportError if it cannot be."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    onnx = _onnx()
    proto, source = _load(onnx, model)
    _check_model(onnx, proto, source)
    graph = proto.graph
    input_name, input_shape, static_batch = _graph_input(graph, source)
    inferred = _infer_shapes(onnx, proto, input_name, source)
    if len(graph.output) != 1:
        raise OnnxImportError(source, f"the graph has {len(graph.output)} outputs; "
                                      f"one is supported")
    output = graph.output[0].name

    ctx = Context(shapes=_shapes(inferred.graph), static_batch=static_batch)
    ctx.values[input_name] = input_name
    for t in graph.initializer:
        ctx.consts[t.name] = onnx.numpy_helper.to_array(t)
    version = _opset(onnx, proto, source)
    problems = _translate(onnx, graph, ctx, version, output)
    if not problems and output not in ctx.values:
        problems.append((output, "(output)", "the graph output is a constant"))
    if problems:
        raise OnnxImportError(source, _summary(problems), problems)
    if ctx.values[output] == input_name:  # the model computes nothing (Identity)
        ctx.nodes.append(Node("identity", "identity", [input_name], [output]))
        ctx.values[output] = output
    nodes, tensors = fold(ctx.nodes, ctx.tensors, ctx.values[output])
    producer = f"pocketnn import of ONNX ({proto.producer_name} {proto.producer_version})"
    result = Graph(nodes=nodes, input_name=input_name, input_shape=input_shape,
                   output_name=ctx.values[output],
                   tensors={k: _stored(v, dtype) for k, v in tensors.items()},
                   preprocess=Preprocess(scale=1.0, mean=[0.0], std=[1.0]),
                   producer=printable(producer, 200))
    _verify(result, ctx.shapes, source)
    return result


def _stored(t: np.ndarray, dtype: str) -> np.ndarray:
    """float16 halves the weights; 1-d tensors (biases, BatchNorm's shift folded in, add's
    constants) stay float32: a small share of the bytes, and one rounded shift moves every
    output of its channel (as `python -m compress import --dtype float16` stores them)."""
    return np.ascontiguousarray(t, dtype if np.ndim(t) > 1 else "float32")


def _verify(graph: Graph, onnx_shapes: dict, source: str) -> None:
    """The engine's shape check of the translation (what it would refuse at load is refused
    here, naming the node), and every value's shape against ONNX's shape inference: a
    disagreement is a model ONNX Runtime would not run either, or a bug of ours."""
    from engine import planner

    try:
        shapes = planner.shapes(graph, source)
        for name, t in graph.tensors.items():
            planner.check_finite(name, t)
    except ValueError as e:  # ModelError, or a weight that is NaN or infinite
        raise OnnxImportError(source, f"the engine cannot run the translation: "
                                      f"{str(e).removeprefix(source + ': ')}") from None
    for name, shape in shapes.items():
        full = onnx_shapes.get(name)
        if full and all(isinstance(d, int) for d in full[1:]) and tuple(full[1:]) != shape:
            raise OnnxImportError(source, f"value {q(name)} has the per-sample shape {shape} "
                                          f"in the translation but {tuple(full[1:])} by ONNX's "
                                          f"shape inference")


# ---- reading and checking the file --------------------------------------------------------------


def _load(onnx, model):
    """(ModelProto, name for messages) from a path, bytes or a ModelProto."""
    if isinstance(model, onnx.ModelProto):
        if model.ByteSize() > MAX_MODEL_BYTES:
            raise OnnxImportError("<model>", f"{model.ByteSize():,} bytes, over the limit of "
                                             f"{MAX_MODEL_BYTES:,}")
        return model, (printable(model.graph.name, 60) or "<model>")
    if isinstance(model, (bytes, bytearray)):
        source, size = "<bytes>", len(model)
    else:
        source = os.fspath(model)
        try:
            size = os.stat(source).st_size
        except OSError as e:
            raise OnnxImportError(source, f"cannot read it ({e.strerror or e})") from None
    if size > MAX_MODEL_BYTES:
        raise OnnxImportError(source, f"{size:,} bytes, over the limit of {MAX_MODEL_BYTES:,}")
    try:
        if isinstance(model, (bytes, bytearray)):
            proto = onnx.load_model_from_string(bytes(model))
        else:
            proto = onnx.load(source, load_external_data=False)
    except OSError as e:
        raise OnnxImportError(source, f"cannot read it ({e.strerror or e})") from None
    except Exception as e:  # protobuf's DecodeError and friends: damage, not a bug of ours
        raise OnnxImportError(source, f"not a valid ONNX model ({type(e).__name__}: "
                                      f"{_first_line(e)})") from None
    return proto, source


def _check_model(onnx, proto, source: str) -> None:
    """Structure (onnx.checker), then every stored tensor before any is converted."""
    if not proto.HasField("graph") or (not proto.graph.node and not proto.graph.output):
        raise OnnxImportError(source, "not an ONNX model (no graph: empty or truncated file?)")
    if len(proto.graph.node) > MAX_NODES:
        raise OnnxImportError(source, f"{len(proto.graph.node):,} nodes, over the limit of "
                                      f"{MAX_NODES:,}")
    if proto.graph.sparse_initializer:
        raise OnnxImportError(source, "sparse initializers are not supported")
    total = 0
    for t in proto.graph.initializer:
        total += _check_tensor(onnx, t, f"initializer {q(t.name)}", source)
    for node in proto.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                total += _check_tensor(onnx, attr.t, f"node {q(node.name or node.op_type)} "
                                                     f"attribute {q(attr.name)}", source)
            elif attr.type in (onnx.AttributeProto.TENSORS, onnx.AttributeProto.GRAPH,
                               onnx.AttributeProto.GRAPHS, onnx.AttributeProto.SPARSE_TENSOR):
                continue  # no supported op takes these: reported as an unknown attribute
    if total > MAX_MODEL_BYTES:
        raise OnnxImportError(source, f"the tensors hold {total:,} bytes, over the limit of "
                                      f"{MAX_MODEL_BYTES:,}")
    try:
        onnx.checker.check_model(proto)
    except Exception as e:  # ValidationError, or C++ errors on damaged models
        raise OnnxImportError(source, f"invalid ONNX model: {_first_line(e)}") from None


def _check_tensor(onnx, t, what: str, source: str) -> int:
    """Bytes the tensor holds once converted; OnnxImportError unless its declared shape and
    type agree with the bytes stored and stay within the limits."""
    if t.data_location == onnx.TensorProto.EXTERNAL or t.external_data:
        raise OnnxImportError(source, f"{what} keeps its data in an external file; only "
                                      f"self-contained models are read (save it with "
                                      f"onnx.save_model(..., save_as_external_data=False))")
    dims = list(t.dims)
    if len(dims) > MAX_NDIM or any(d < 0 or d > MAX_ELEMENTS for d in dims):
        raise OnnxImportError(source, f"{what} has shape {dims}: more than {MAX_NDIM} dims or "
                                      f"a dim outside 0..{MAX_ELEMENTS}")
    count = math.prod(dims)
    if count > MAX_ELEMENTS:
        raise OnnxImportError(source, f"{what} declares {count:,} elements, over the limit of "
                                      f"{MAX_ELEMENTS:,}")
    try:
        np_dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
        field = onnx.helper.tensor_dtype_to_field(t.data_type)
    except Exception:
        raise OnnxImportError(source, f"{what} has data type {t.data_type}, which is not "
                                      f"supported") from None
    if np_dtype.kind not in "fiub" or t.data_type in (onnx.TensorProto.BFLOAT16,):
        raise OnnxImportError(source, f"{what} has data type "
                                      f"{onnx.TensorProto.DataType.Name(t.data_type)}, which is "
                                      f"not supported")
    if t.HasField("raw_data"):
        stored, need, unit = len(t.raw_data), count * np_dtype.itemsize, "bytes"
    else:
        stored, need, unit = len(getattr(t, field)), count, "values"
    if stored != need:
        raise OnnxImportError(source, f"{what} declares shape {dims} "
                                      f"({onnx.TensorProto.DataType.Name(t.data_type)}) but "
                                      f"stores {stored:,} {unit}, not {need:,}")
    return count * max(np_dtype.itemsize, 4)


def _opset(onnx, proto, source: str) -> int:
    versions = {o.domain: o.version for o in proto.opset_import}
    version = versions.get("", versions.get("ai.onnx"))
    if version is None:
        raise OnnxImportError(source, "the model imports no version of the ONNX operator set")
    if not 1 <= version <= onnx.defs.onnx_opset_version():
        raise OnnxImportError(source, f"opset {version} is newer than the installed onnx "
                                      f"({onnx.__version__}) knows; upgrade onnx")
    return version


def _graph_input(graph, source: str) -> tuple[str, tuple[int, int, int], int | None]:
    """The one runtime input: (name, per-sample (C, H, W), the batch size if it is fixed)."""
    inits = {t.name for t in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise OnnxImportError(source, f"the graph has {len(inputs)} inputs "
                                      f"({', '.join(q(i.name) for i in inputs[:5])}); one "
                                      f"image input (N, C, H, W) is supported")
    x = inputs[0]
    tensor = x.type.tensor_type
    if not x.type.HasField("tensor_type") or tensor.elem_type != 1:  # TensorProto.FLOAT
        raise OnnxImportError(source, f"input {q(x.name)} is not a float32 tensor")
    dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    if len(dims) != 4 or not all(isinstance(d, int) and 1 <= d <= MAX_INPUT_DIM
                                 for d in dims[1:]):
        shown = ", ".join("?" if d is None else str(d) for d in dims)
        raise OnnxImportError(source, f"input {q(x.name)} has shape ({shown}); (N, C, H, W) "
                                      f"with fixed C, H and W is supported")
    return x.name, tuple(dims[1:]), (dims[0] or None)


def _infer_shapes(onnx, proto, input_name: str, source: str):
    """ONNX's shape inference on a copy whose batch dim is fixed (1 where it is symbolic):
    with a number there, inference can follow torch's Shape -> Gather -> Concat -> Reshape
    chains to a static shape. Per-sample dims never depend on the batch size in what we
    import (the rules refuse whatever mixes the batch with other axes)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    big = [t for t in probe.graph.initializer if math.prod(t.dims) > 64]
    for t in big:  # weights matter by their shape only: as typed inputs they are not copied
        probe.graph.input.append(onnx.helper.make_tensor_value_info(t.name, t.data_type, t.dims))
    names = {t.name for t in big}
    kept = [t for t in probe.graph.initializer if t.name not in names]
    del probe.graph.initializer[:]
    probe.graph.initializer.extend(kept)
    if probe.ir_version < 4:  # initializers must be inputs there; now they are, twice
        seen = set()
        unique = [vi for vi in probe.graph.input if not (vi.name in seen or seen.add(vi.name))]
        del probe.graph.input[:]
        probe.graph.input.extend(unique)
    for vi in probe.graph.input:
        if vi.name == input_name:
            dim = vi.type.tensor_type.shape.dim[0]
            if not dim.HasField("dim_value"):
                dim.dim_value = 1
    try:
        return onnx.shape_inference.infer_shapes(probe, strict_mode=False, data_prop=True)
    except Exception as e:  # onnx raises its own InferenceError, and RuntimeErrors from C++
        raise OnnxImportError(source, f"ONNX shape inference failed: {_first_line(e)}") from None


def _shapes(graph) -> dict[str, tuple | None]:
    """ONNX value -> its inferred shape (ints, None for symbolic or unknown dims)."""
    out = {}
    for vi in (*graph.input, *graph.value_info, *graph.output):
        t = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and t.HasField("shape"):
            out[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None
                                 for d in t.shape.dim)
    return out


def _node_names(graph) -> list[str]:
    """Unique, non-empty IR node names: the ONNX name where it is one, else op_index."""
    counts = Counter(n.name for n in graph.node)
    names, taken = [], set()
    for i, n in enumerate(graph.node):
        name = (n.name if n.name and counts[n.name] == 1 and len(n.name) <= MAX_NAME
                else f"{n.op_type[:MAX_NAME]}_{i}")
        while name in taken:
            name += "_"
        taken.add(name)
        names.append(name)
    return names


# ---- translating ---------------------------------------------------------------------------------


def _translate(onnx, graph, ctx: Context, version: int, output: str) -> list:
    """Walk the nodes in file order (ONNX requires topological order; the checker saw to it).
    Every node is checked against its rule; a node downstream of one that failed reports only
    what is wrong with itself (op, version, attributes), not its inputs."""
    read = Counter(name for n in graph.node for name in n.input)
    read[output] += 1
    problems, poisoned = [], set()
    for node, label in zip(graph.node, _node_names(graph), strict=True):
        ctx.current = label
        wrong = _static_problems(onnx, node, version, read)
        if wrong:
            problems.extend((label, node.op_type, w) for w in wrong)
        elif not any(i in poisoned for i in node.input):
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            ver = onnx.defs.get_schema(node.op_type, version).since_version
            try:
                RULES[node.op_type].translate(ctx, node, attrs, ver)
                continue
            except Unsupported as e:
                problems.append((label, node.op_type, str(e)))
            except (ValueError, TypeError, IndexError, ArithmeticError, KeyError) as e:
                problems.append((label, node.op_type, f"cannot translate it ({e})"))
        poisoned.update(node.output)
    return problems


def _static_problems(onnx, node, version: int, read: Counter) -> list[str]:
    """What is wrong with a node whatever its inputs: op, op version, attributes, outputs."""
    if node.domain not in ("", "ai.onnx"):
        return [f"op {printable(node.domain, 60)}.{printable(node.op_type, 60)} is not "
                f"supported (custom domain)"]
    rule = RULES.get(node.op_type)
    if rule is None:
        return [f"op {printable(node.op_type, 60)} is not supported"]
    try:
        since = onnx.defs.get_schema(node.op_type, version).since_version
    except Exception:
        return [f"op {node.op_type} does not exist in opset {version}"]
    if since not in rule.versions:
        return [f"{node.op_type}-{since} (opset {version}) is a version this importer does not "
                f"know (it knows {', '.join(map(str, rule.versions))})"]
    wrong = []
    unknown = sorted(a.name for a in node.attribute if a.name not in rule.attrs)
    if unknown:
        wrong.append(f"attribute(s) {', '.join(unknown)} not supported")
    for a in node.attribute:
        if a.name in rule.fixed and onnx.helper.get_attribute_value(a) != rule.fixed[a.name]:
            wrong.append(f"{a.name}={onnx.helper.get_attribute_value(a)} (only "
                         f"{rule.fixed[a.name]})")
    extra = [o for o in node.output[1:] if o and read[o]]
    if extra:
        wrong.append(f"output(s) {', '.join(map(q, extra))} "
                     f"({EXTRA_OUTPUTS.get(node.op_type, 'extra outputs')}) are used")
    return wrong


def _summary(problems: list) -> str:
    """One line: the problems grouped by (op, what), each with the nodes it concerns."""
    groups: dict[tuple, list[str]] = defaultdict(list)
    for label, op, what in problems:
        groups[(printable(op, 60), what)].append(label)
    parts = []
    for (op, what), labels in groups.items():
        shown = ", ".join(q(n) for n in labels[:_MAX_LISTED])
        more = f" and {len(labels) - _MAX_LISTED} more" if len(labels) > _MAX_LISTED else ""
        parts.append(f"{op}: {what} (node{'s' if len(labels) > 1 else ''} {shown}{more})")
    return (f"cannot import {len({p[0] for p in problems})} node(s): " + "; ".join(parts))


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    line = text[0] if text else type(e).__name__
    return line if len(line) <= 200 else line[:197] + "..."


__all__ = ["MAX_MODEL_BYTES", "OnnxImportError", "import_onnx"]
