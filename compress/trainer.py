"""A NumPy trainer that interprets an engine.ir.Graph: forward, backward, SGD with momentum.

    params = params_from_graph(graph)                  # name -> Dense (or Dense/Shared mix)
    losses = train(graph, params, x_uint8, y, TrainConfig(epochs=20, lr=0.05))
    acc = evaluate(graph, weights_of(params), x_test, y_test)

`forward` is also the independent oracle the engine is tested against: it uses only
compress.layers (no engine.ops / engine.kernels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from compress.layers import get_op, softmax_cross_entropy
from compress.params import Dense, Shared
from engine.ir import Graph
from formats import CodebookTensor

__all__ = ["Dense", "Shared", "TrainConfig", "evaluate", "forward", "loss_and_grads",
           "params_from_graph", "prepare", "train", "weights_of"]


@dataclass
class TrainConfig:
    """SGD with momentum. Defaults are the reference run's (shared/notes/compression-reference.md):
    PyTorch torch.optim.SGD semantics, batch 128, cosine learning rate stepped per batch."""

    epochs: int = 1
    lr: float = 0.05            # reference: LeNet-300-100 0.05, LeNet-5 (no conv ReLU) 0.01
    momentum: float = 0.9       # reference / Deep Compression's Caffe solvers
    weight_decay: float = 5e-4  # reference; like PyTorch's default param group it applies to
                                # every trained tensor, biases and centroids included
    batch_size: int = 128       # reference
    schedule: str = "cosine"    # "cosine": lr * (1 + cos(pi * step / total)) / 2 per step
                                # (CosineAnnealingLR, eta_min 0); "constant"
    seed: int = 0               # shuffling order

    def lr_at(self, step: int, total: int) -> float:
        if self.schedule == "constant":
            return self.lr
        if self.schedule == "cosine":
            return 0.5 * self.lr * (1.0 + math.cos(math.pi * step / max(total, 1)))
        raise ValueError(f"unknown schedule {self.schedule!r}; use 'cosine' or 'constant'")


def _run(graph: Graph, weights: dict, x: np.ndarray, keep_cache: bool):
    values = {graph.input_name: x}
    caches = []
    for node in graph.nodes:
        op = get_op(node.op)
        if len(node.inputs) != 1 or len(node.outputs) != 1:
            raise ValueError(f"node {node.name!r}: the trainer supports one input and one "
                             f"output per node")
        try:
            p = {role: weights[name] for role, name in node.params.items()}
        except KeyError as e:
            raise ValueError(f"node {node.name!r}: no weights for tensor {e.args[0]!r}") from None
        y, cache = op.forward(values[node.inputs[0]], p, node.attrs)
        values[node.outputs[0]] = y
        if keep_cache:
            caches.append(cache)
    if graph.output_name not in values:
        raise ValueError(f"graph output {graph.output_name!r} is produced by no node")
    return values[graph.output_name], caches


def _dense_weights(graph: Graph, weights: dict | None) -> dict:
    """name -> dense array; CodebookTensors (in graph.tensors or in weights) decompressed."""
    if weights is None:
        return graph.dense_tensors()
    return {k: (v.to_dense() if isinstance(v, CodebookTensor) else v) for k, v in weights.items()}


def forward(graph: Graph, weights: dict[str, np.ndarray] | None, x: np.ndarray,
            batch_size: int = 1000) -> np.ndarray:
    """Logits for model input x (N, C, H, W) float (already preprocessed), in batches.
    weights: tensor name -> dense array; None takes graph.dense_tensors()."""
    weights = _dense_weights(graph, weights)
    x = np.asarray(x)
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    outs = [_run(graph, weights, x[i:i + batch_size], keep_cache=False)[0]
            for i in range(0, len(x), batch_size)]
    return np.concatenate(outs) if outs else np.zeros((0, 0), dtype=x.dtype)


def loss_and_grads(graph: Graph, weights: dict[str, np.ndarray], x: np.ndarray,
                   labels: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
    """Mean softmax cross-entropy of the graph's logits and its gradient per tensor name."""
    logits, caches = _run(graph, weights, x, keep_cache=True)
    loss, dlogits = softmax_cross_entropy(logits, labels)
    dvalues = {graph.output_name: dlogits}
    grads: dict[str, np.ndarray] = {}
    for node, cache in zip(reversed(graph.nodes), reversed(caches), strict=True):
        dy = dvalues.pop(node.outputs[0], None)
        if dy is None:  # output unused by the loss
            continue
        src = node.inputs[0]
        dx, dparams = get_op(node.op).backward(dy, cache, need_dx=src != graph.input_name)
        for role, g in dparams.items():
            name = node.params[role]
            grads[name] = grads[name] + g if name in grads else g
        if dx is not None:
            dvalues[src] = dvalues[src] + dx if src in dvalues else dx
    return loss, grads


def prepare(graph: Graph, raw: np.ndarray) -> np.ndarray:
    """Raw images (N, H, W) or (N, C, H, W), e.g. uint8 -> float32 model input via
    graph.preprocess."""
    x = np.asarray(raw).reshape((-1,) + tuple(graph.input_shape))
    return graph.preprocess.apply(x)


def evaluate(graph: Graph, weights: dict[str, np.ndarray] | None, x: np.ndarray,
             y: np.ndarray, batch_size: int = 1000, preprocess: bool = True) -> float:
    """Top-1 accuracy in [0, 1]. With preprocess=True x holds raw images (uint8 (N, 28, 28));
    with False it is the model input already."""
    weights = _dense_weights(graph, weights)
    y = np.asarray(y)
    correct = 0
    for i in range(0, len(x), batch_size):
        xb = prepare(graph, x[i:i + batch_size]) if preprocess else x[i:i + batch_size]
        logits = _run(graph, weights, np.asarray(xb), keep_cache=False)[0]
        correct += int((logits.argmax(axis=1) == y[i:i + batch_size]).sum())
    return correct / max(len(x), 1)


def params_from_graph(graph: Graph) -> dict[str, Dense]:
    """Every tensor of the graph as a Dense parameter (a copy, float32)."""
    return {name: Dense(t) for name, t in graph.dense_tensors().items()}


def weights_of(params: dict[str, Dense | Shared]) -> dict[str, np.ndarray]:
    """Dense float weights of every parameter (copies)."""
    return {name: np.array(p.weight()) for name, p in params.items()}


def train(graph: Graph, params: dict[str, Dense | Shared], x_train: np.ndarray,
          y_train: np.ndarray, config: TrainConfig, progress: bool = True,
          desc: str = "train") -> list[float]:
    """Train params in place with SGD + momentum on raw images; returns per-epoch mean loss.

    Tensors of the graph that are not in params stay frozen at their graph values.
    Deterministic for a given config.seed (shuffling by np.random.default_rng(seed)).
    Weight decay and momentum follow torch.optim.SGD: g += wd * p; v = mu * v + g; p -= lr * v.
    """
    frozen = {k: v for k, v in graph.dense_tensors().items() if k not in params}
    n = len(x_train)
    if n == 0:
        raise ValueError("train: no training images")
    if len(y_train) != n:
        raise ValueError(f"train: {len(y_train)} labels for {n} images")
    y_train = np.asarray(y_train, dtype=np.int64)
    rng = np.random.default_rng(config.seed)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total = steps_per_epoch * config.epochs
    velocity = {name: np.zeros_like(p.trainable()) for name, p in params.items()}
    losses: list[float] = []
    step = 0
    with tqdm(total=total, desc=desc, unit="batch", disable=not progress,
              dynamic_ncols=True) as bar:
        for epoch in range(config.epochs):
            order = rng.permutation(n)
            loss_sum = 0.0
            for b in range(steps_per_epoch):
                idx = order[b * config.batch_size:(b + 1) * config.batch_size]
                xb = prepare(graph, x_train[idx])
                weights = {name: p.weight() for name, p in params.items()}
                weights.update(frozen)
                loss, grads = loss_and_grads(graph, weights, xb, y_train[idx])
                lr = config.lr_at(step, total)
                for name, p in params.items():
                    if name not in grads:
                        continue
                    w = p.trainable()
                    g = p.project_grad(grads[name])
                    if config.weight_decay:
                        g = g + config.weight_decay * w
                    v = velocity[name]
                    v *= config.momentum
                    v += g
                    w -= lr * v
                    p.after_step(v)
                loss_sum += loss * len(idx)
                step += 1
                bar.update(1)
                if b % 20 == 0:
                    bar.set_postfix(epoch=epoch + 1, loss=f"{loss:.4f}", lr=f"{lr:.4g}")
            losses.append(loss_sum / n)
            bar.set_postfix(epoch=epoch + 1, loss=f"{losses[-1]:.4f}")
    return losses
