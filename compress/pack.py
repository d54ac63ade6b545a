"""From trainer parameters to a .pnn file: shared weights become CodebookTensors, the rest
stays float32; formats does the Huffman coding of codes and relative indices."""

from __future__ import annotations

import math

import numpy as np

import formats
from compress.trainer import Shared
from engine.ir import Graph


def code_bits(k: int) -> int:
    """Smallest code width that indexes k centroids (k-means may leave fewer than 2**bits)."""
    return max(1, math.ceil(math.log2(max(k, 1))))


def compressed_graph(graph: Graph, params: dict) -> Graph:
    """A copy of `graph` whose tensors are the stored forms of `params`."""
    out = graph.copy()
    tensors = {}
    for name, p in params.items():
        if isinstance(p, Shared):
            tensors[name] = formats.from_dense_codes(p.codes, p.centroids,
                                                     code_bits(p.centroids.shape[-1]))
        else:
            tensors[name] = np.ascontiguousarray(p.weight(), dtype=np.float32)
    out.tensors = tensors
    return out


def pack(graph: Graph, params: dict, path: str) -> int:
    """Write the compressed model to `path` (atomically); returns the file size in bytes."""
    g = compressed_graph(graph, params)
    return formats.write(path, g.to_metadata(), g.tensors)
