"""What a .pnn model holds and costs, per node: the data behind `python -m engine info`.

Sizes on disk come from the file's tensor headers; the engine's figures (kernel, multiply-adds,
resident bytes of the prepared weights, peak memory) from the plan the engine would run. Nodes
are listed in execution order, whatever the graph's shape (a chain, or a DAG with residual adds
and concats): each row says which nodes' outputs it reads when that is not just the row above.
"""

from __future__ import annotations

import math

import formats
from engine.budget import human
from engine.classify import ends_in_softmax
from engine.runtime import load

_WIDEST = 28  # a name or list of names longer than this is cut in the table (not in --json)


def describe(path: str, backend: str = "auto", max_memory: int | None = None,
             max_macs: int | None = None) -> dict:
    """A JSON-able description of the model at `path` as the engine would run it."""
    model = load(path, backend=backend, max_memory=max_memory, max_macs=max_macs)
    with formats.open(path) as f:
        infos = {name: f.info(name) for name in f.tensor_names}
        file_size = f.file_size
    graph, plan = model.graph, model.plan
    writer = {graph.input_name: "input"}  # value -> the node that writes it
    nodes, layers = [], []
    for step in plan.steps:
        node, kernel = step.node, step.kernel
        row = {"name": node.name, "op": node.op, "kernel": kernel.name,
               "inputs": list(node.inputs), "reads": [writer.get(v, v) for v in node.inputs],
               "out_shape": list(step.out_shape), "macs": step.macs,
               "workspace_bytes": step.workspace, "resident_bytes": kernel.resident}
        writer[node.outputs[0]] = node.name
        if node.params:
            tinfo = [infos[name] for name in node.params.values()]
            weight = infos.get(node.params.get("weight", ""), tinfo[0])
            row.update({
                "weight_shape": list(weight.shape),
                "params": sum(math.prod(t.shape) for t in tinfo),
                "nonzeros": sum(t.nnz for t in tinfo), "bits": weight.bits,
                "encoding": weight.encoding, "bytes": sum(t.nbytes for t in tinfo),
                "weight_resident_bytes": kernel.info.get("resident_bytes"),
                "bytes_per_nonzero": kernel.info.get("bytes_per_nonzero")})
            layers.append(row)
        nodes.append(row)
    params = sum(r["params"] for r in layers)
    pre = graph.preprocess
    return {"model": path, "backend": model.backend, "file_bytes": file_size,
            "producer": graph.producer, "ir_version": graph.ir_version(),
            "input": {"name": graph.input_name, "shape": list(graph.input_shape)},
            "output": {"name": graph.output_name,
                       "shape": list(plan.shapes[graph.output_name]),
                       "softmax": "in the graph" if ends_in_softmax(graph) else "by the engine"},
            "labels": list(graph.labels),
            "preprocess": {"scale": pre.scale, "mean": list(pre.mean), "std": list(pre.std),
                           "resize": pre.resize, "raw_range": pre.raw_range and
                           list(pre.raw_range)},
            "params": params, "nonzeros": sum(r["nonzeros"] for r in layers),
            "tensor_bytes": sum(r["bytes"] for r in layers), "float32_bytes": 4 * params,
            "ratio": 4 * params / file_size if file_size else None,
            "macs": plan.macs, "weights_resident_bytes": plan.weights,
            "peak_bytes_per_image": plan.peak, "peak_node": plan.steps[plan.peak_step].node.name
            if plan.steps else None, "memory_batch_1": plan.memory(1),
            "max_memory": model.limits.max_memory, "max_batch": model.max_batch(),
            "layers": layers, "nodes": nodes}


def render(d: dict) -> str:
    """The text `info` prints: the model's interface, one row per node, totals, memory."""
    lines = _interface(d)
    rows = [["node", "op", "reads", "output", "weight", "params", "nonzeros", "density", "bits",
             "bytes", "MACs", "resident", "B/nnz"]]
    previous = "input"
    for r in d["nodes"]:
        reads = "" if r["reads"] == [previous] else ", ".join(r["reads"])
        previous = r["name"]
        row = [_cut(r["name"]), _cut(r["op"]), _cut(reads), _shape(r["out_shape"])]
        if "params" in r:
            per = r["bytes_per_nonzero"]
            row += [_shape(r["weight_shape"]), f"{r['params']:,}", f"{r['nonzeros']:,}",
                    f"{r['nonzeros'] / max(r['params'], 1):.2%}",
                    r["encoding"] if r["bits"] is None else str(r["bits"]), f"{r['bytes']:,}",
                    f"{r['macs']:,}", f"{r['resident_bytes']:,}",
                    "-" if per is None else f"{per:.2f}"]
        else:
            row += ["", "", "", "", "", "", f"{r['macs']:,}", "", ""]
        rows.append(row)
    rows.append(["total", "", "", "", "", f"{d['params']:,}", f"{d['nonzeros']:,}",
                 f"{d['nonzeros'] / max(d['params'], 1):.2%}", "", f"{d['tensor_bytes']:,}",
                 f"{d['macs']:,}", f"{d['weights_resident_bytes']:,}", ""])
    note = "output: per image"
    if any(row[2] for row in rows[1:]):
        note = "reads: the nodes whose outputs a node reads, when not just the row above; " + note
    else:  # a chain: every node reads the row above
        rows = [row[:2] + row[3:] for row in rows]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    left = rows[0].index("weight") + 1  # names and shapes left-aligned, figures right-aligned

    def line(row):
        return " ".join(v.ljust(w) if i < left else v.rjust(w)
                        for i, (v, w) in enumerate(zip(row, widths, strict=True))).rstrip()

    rule = "-" * len(line(rows[0]))
    lines += ["", line(rows[0]), rule, *map(line, rows[1:-1]), rule, line(rows[-1])]
    lines.append(note)
    ratio = f"{d['ratio']:.1f}x" if d["ratio"] else "-"
    lines.append(f"file: {d['file_bytes']:,} bytes; float32 weights: {d['float32_bytes']:,} "
                 f"bytes; compression ratio {ratio}")
    lines.append(f"engine ({d['backend']}): weights {human(d['weights_resident_bytes'])} "
                 f"resident; peak {human(d['peak_bytes_per_image'])} per image of live values "
                 f"and workspace (at {d['peak_node']}); batch 1 needs "
                 f"{human(d['memory_batch_1'])}; up to {d['max_batch']:,} images per run fit "
                 f"max_memory {human(d['max_memory'])}")
    return "\n".join(lines)


def _interface(d: dict) -> list[str]:
    """model / input / output / labels lines."""
    c, h, w = d["input"]["shape"]
    pre = d["preprocess"]
    scale = (f"x / {pre['raw_range'][1]:g}" if pre["raw_range"] else
             "x" if pre["scale"] == 1 else f"x * {pre['scale']:g}")
    raw = (f"raw values 0..{pre['raw_range'][1]:g}" if pre["raw_range"] else
           "values as they are (no raw range declared)")
    fit = (f"image files resized to {pre['resize']} on the shorter side, centre-cropped to "
           f"{w}x{h}" if pre["resize"] else f"image files must be {w}x{h}")
    labels = d["labels"]
    shown = ", ".join(labels[:6]) + (f", ... ({len(labels)} in all)" if len(labels) > 6 else "")
    out = d["output"]
    return [
        f"model: {d['model']} ({d['file_bytes']:,} bytes, graph IR {d['ir_version']}, "
        f"{len(d['nodes'])} nodes; producer {d['producer'] or '-'})",
        f"input: {d['input']['name']} (N, {c}, {h}, {w}) float32 <- {raw}: ({scale} - mean) / "
        f"std, mean {_numbers(pre['mean'])}, std {_numbers(pre['std'])}; {fit}",
        f"output: {out['name']} (N, {', '.join(map(str, out['shape']))}); softmax "
        f"{out['softmax']}",
        f"labels: {shown}" if labels else "labels: none stored (classes are shown by index)",
    ]


def _numbers(values: list[float]) -> str:
    return "/".join(f"{v:.4g}" for v in values)


def _shape(shape: list[int]) -> str:
    return "x".join(map(str, shape))


def _cut(text: str) -> str:
    return text if len(text) <= _WIDEST else text[:_WIDEST - 3] + "..."
