"""What a .pnn model holds and costs, per node: the data behind `python -m engine info`.

Sizes on disk come from the file's tensor headers; the engine's figures (kernel, multiply-adds,
resident bytes of the prepared weights, peak memory) from the plan the engine would run.
"""

from __future__ import annotations

import math

import formats
from engine.budget import human
from engine.runtime import load


def describe(path: str, backend: str = "auto", max_memory: int | None = None,
             max_macs: int | None = None) -> dict:
    """A JSON-able description of the model at `path` as the engine would run it."""
    model = load(path, backend=backend, max_memory=max_memory, max_macs=max_macs)
    with formats.open(path) as f:
        infos = {name: f.info(name) for name in f.tensor_names}
        file_size = f.file_size
    plan = model.plan
    nodes, layers = [], []
    for step in plan.steps:
        node, kernel = step.node, step.kernel
        row = {"name": node.name, "op": node.op, "kernel": kernel.name,
               "out_shape": list(step.out_shape), "macs": step.macs,
               "workspace_bytes": step.workspace, "resident_bytes": kernel.resident}
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
    return {"model": path, "backend": model.backend, "file_bytes": file_size,
            "params": params, "nonzeros": sum(r["nonzeros"] for r in layers),
            "tensor_bytes": sum(r["bytes"] for r in layers), "float32_bytes": 4 * params,
            "ratio": 4 * params / file_size if file_size else None,
            "macs": plan.macs, "weights_resident_bytes": plan.weights,
            "peak_bytes_per_image": plan.peak, "peak_node": plan.steps[plan.peak_step].node.name
            if plan.steps else None, "memory_batch_1": plan.memory(1),
            "max_memory": model.limits.max_memory, "max_batch": model.max_batch(),
            "layers": layers, "nodes": nodes}


def render(d: dict) -> str:
    """The text table `info` prints."""
    head = (f"{'node':<10} {'op':<9} {'weight shape':<14} {'params':>9} {'nonzeros':>9} "
            f"{'density':>8} {'bits':>4} {'bytes':>8} {'MACs':>11} {'resident':>9} {'B/nnz':>6}")
    lines = [head, "-" * len(head)]
    for r in d["nodes"]:
        if "params" in r:
            shape = "x".join(map(str, r["weight_shape"]))
            bits = "-" if r["bits"] is None else str(r["bits"])
            per = r["bytes_per_nonzero"]
            lines.append(
                f"{r['name']:<10} {r['op']:<9} {shape:<14} {r['params']:>9,} {r['nonzeros']:>9,} "
                f"{r['nonzeros'] / max(r['params'], 1):>8.2%} {bits:>4} {r['bytes']:>8,} "
                f"{r['macs']:>11,} {r['resident_bytes']:>9,} "
                f"{'-' if per is None else f'{per:.2f}':>6}")
        else:
            lines.append(f"{r['name']:<10} {r['op']:<9} {'':<14} {'':>9} {'':>9} {'':>8} "
                         f"{'':>4} {'':>8} {r['macs']:>11,} {'':>9} {'':>6}")
    lines.append("-" * len(head))
    lines.append(f"{'total':<34} {d['params']:>9,} {d['nonzeros']:>9,} "
                 f"{d['nonzeros'] / max(d['params'], 1):>8.2%} {'':>4} {d['tensor_bytes']:>8,} "
                 f"{d['macs']:>11,} {d['weights_resident_bytes']:>9,}")
    lines.append(f"file: {d['file_bytes']:,} bytes; float32 weights: {d['float32_bytes']:,} "
                 f"bytes; compression ratio {d['ratio']:.1f}x")
    lines.append(f"engine ({d['backend']}): weights {human(d['weights_resident_bytes'])} "
                 f"resident; peak {human(d['peak_bytes_per_image'])} per image of live values "
                 f"and workspace (at {d['peak_node']}); batch 1 needs "
                 f"{human(d['memory_batch_1'])}; up to {d['max_batch']:,} images per run fit "
                 f"max_memory {human(d['max_memory'])}")
    return "\n".join(lines)
