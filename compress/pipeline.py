"""Deep Compression end to end: train -> prune (iteratively, retraining with masks held) ->
share weights (k-means, centroids fine-tuned) -> Huffman-code -> .pnn, with a table per stage."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from compress import pack as packing
from compress import prune, quantize, state
from compress.config import CompressionConfig
from compress.trainer import (
    Dense,
    Shared,
    TrainConfig,
    evaluate,
    params_from_graph,
    train,
    weights_of,
)
from engine.ir import Graph


@dataclass
class StageReport:
    stage: str
    accuracy: float          # on the evaluation set given to the pipeline
    params: int
    nonzeros: int
    bits: str                # codebook bits per weight tensor, or "32" for float
    bytes: int               # stored size: estimated before packing, the real file after
    exact: bool              # True when `bytes` is a real file size

    @property
    def ratio(self) -> float:
        return 4 * self.params / self.bytes if self.bytes else float("inf")


def format_table(rows: list[StageReport]) -> str:
    head = f"{'stage':<10} {'accuracy':>9} {'nonzeros':>10} {'density':>8} {'bits':<14} " \
           f"{'bytes':>10} {'ratio':>7}"
    lines = [head, "-" * len(head)]
    for r in rows:
        size = f"{r.bytes:,}" if r.exact else f"~{r.bytes:,}"
        lines.append(f"{r.stage:<10} {100 * r.accuracy:>8.2f}% {r.nonzeros:>10,} "
                     f"{r.nonzeros / r.params:>8.2%} {r.bits:<14} {size:>10} {r.ratio:>6.1f}x")
    return "\n".join(lines)


def storage_estimate(params: dict, index_bits: int = 8) -> int:
    """Bytes before Huffman coding: float32 or `bits`-wide values, an `index_bits` relative
    index per nonzero of a pruned tensor, float32 codebooks. Dense float tensors: 4 B each."""
    total = 0
    for p in params.values():
        if isinstance(p, Shared):
            nnz = int((p.codes >= 0).sum())
            bits = packing.code_bits(p.centroids.shape[-1])
            total += (nnz * (bits + index_bits) + 7) // 8 + 4 * p.centroids.size
        elif p.mask is not None:
            nnz = int(p.mask.sum())
            total += nnz * 4 + (nnz * index_bits + 7) // 8
        else:
            total += 4 * p.value.size
    return total


def summarize(stage, graph, params, data, exact_bytes=None, accuracy=None) -> StageReport:
    """One table row; `accuracy` None means: evaluate `params` with the trainer."""
    weights = weights_of(params)
    nnz = sum(int(np.count_nonzero(w)) for w in weights.values())
    bits = "/".join(str(packing.code_bits(p.centroids.shape[-1])) for p in params.values()
                    if isinstance(p, Shared)) or "32"
    acc = evaluate(graph, weights, data.x_test, data.y_test) if accuracy is None else accuracy
    size = exact_bytes if exact_bytes is not None else storage_estimate(params)
    return StageReport(stage, acc, sum(w.size for w in weights.values()), nnz, bits, size,
                       exact_bytes is not None)


def run(graph: Graph, data, config: CompressionConfig, out: str, *, params=None,
        seed: int = 0, progress: bool = True, log=print, keep: str | None = None,
        bias_dtype: str = "float16") -> list[StageReport]:
    """The whole pipeline. `params` (e.g. from --init) skips training from scratch; `keep`
    names a directory where each stage's weights are saved as <stage>.npz."""
    rows: list[StageReport] = []

    def report(row, stage_params=None):
        rows.append(row)
        if keep and stage_params is not None:
            os.makedirs(keep, exist_ok=True)
            state.save(os.path.join(keep, f"{row.stage}.npz"), stage_params)
        log(f"\n== {row.stage} ==\n{format_table(rows)}")

    if params is None:
        params = train_stage(graph, None, data, config, seed=seed, progress=progress)
    report(summarize("float", graph, params, data), params)

    params = prune_stage(graph, params, data, config, seed=seed, progress=progress)
    report(summarize("pruned", graph, params, data), params)

    params = quantize_stage(graph, params, data, config, seed=seed, progress=progress)
    report(summarize("shared", graph, params, data), params)

    size = packing.pack(graph, params, out, bias_dtype)
    # The last row is the written file run by the engine: what users get (biases as stored).
    acc = engine_accuracy(out, data.x_test, data.y_test)
    report(summarize("huffman", graph, params, data, exact_bytes=size, accuracy=acc))
    log(f"\nwrote {out} ({size:,} bytes, {rows[-1].ratio:.1f}x smaller than float32)")
    log(f"engine accuracy of {out} on {len(data.y_test):,} test images: {100 * acc:.2f}% "
        f"(float {100 * rows[0].accuracy:.2f}%, loss {100 * (rows[0].accuracy - acc):+.2f} "
        f"points)")
    return rows


def train_stage(graph, params, data, config: CompressionConfig, *, seed=0, progress=True):
    """Float training, from the graph's initial weights when `params` is None."""
    if params is None:
        params = params_from_graph(graph)
    train(graph, params, data.x_train, data.y_train,
          TrainConfig(epochs=config.train.epochs, lr=config.train.lr, seed=seed),
          progress=progress, desc="train")
    return params


def prune_stage(graph, params, data, config: CompressionConfig, *, seed=0, progress=True):
    """Geometric steps down to each layer's density, retraining with the masks held."""
    params = dict(params)
    schedules = {name: prune.geometric_schedule(d, config.prune_steps)
                 for name, d in config.densities.items()}
    for step in range(config.prune_steps):
        for name, sched in schedules.items():
            p = params[name]
            mask = prune.magnitude_mask(p.weight(), sched[step], getattr(p, "mask", None))
            params[name] = Dense(p.weight() * mask, mask)
        train(graph, params, data.x_train, data.y_train,
              TrainConfig(epochs=config.retrain.epochs, lr=config.retrain.lr,
                          seed=seed + 1 + step),
              progress=progress, desc=f"prune {step + 1}/{config.prune_steps}")
    return params


def quantize_stage(graph, params, data, config: CompressionConfig, *, seed=0, progress=True):
    """k-means per layer over the surviving weights, then centroid fine-tuning."""
    params = dict(params)
    for name, bits in config.bits.items():
        p = params[name]
        codes, centroids = quantize.cluster_weight(p.weight(), getattr(p, "mask", None), bits)
        params[name] = Shared(codes, centroids)
    if config.finetune.epochs:
        train(graph, params, data.x_train, data.y_train,
              TrainConfig(epochs=config.finetune.epochs, lr=config.finetune.lr,
                          seed=seed + 100),
              progress=progress, desc="centroids")
    return params


def engine_accuracy(path: str, x, y, backend: str = "auto", batch: int = 1000) -> float:
    """Accuracy of a .pnn file measured through the engine (what users get)."""
    import engine

    model = engine.load(os.fspath(path), backend=backend)
    correct = 0
    for start in range(0, len(x), batch):
        logits = model.run(model.preprocess(x[start:start + batch]))
        correct += int((logits.argmax(axis=1) == y[start:start + batch]).sum())
    return correct / len(x)
