"""Saving and loading trainer parameters between stages as a plain .npz.

Keys: `<tensor>` the float weight; `mask/<tensor>` where pruned; `codes/<tensor>` (-1 =
pruned) and `centroids/<tensor>` where weights are shared. Anyone can open it with np.load.
"""

from __future__ import annotations

import io
import zipfile

import numpy as np

import formats
from compress.trainer import Dense, Shared


class StateError(ValueError):
    """A weights file that does not fit the model."""


def save(path: str, params: dict) -> None:
    arrays = {}
    for name, p in params.items():
        arrays[name] = p.weight()
        if isinstance(p, Shared):
            arrays[f"codes/{name}"] = p.codes
            arrays[f"centroids/{name}"] = p.centroids
        elif p.mask is not None:
            arrays[f"mask/{name}"] = p.mask
    save_npz(path, arrays)


def save_npz(path: str, arrays: dict, compressed: bool = False) -> None:
    """np.savez, written atomically (never a half-written file at `path`)."""
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    formats.atomic_write(path, buffer.getvalue())


def load(path: str, graph) -> dict:
    """Parameters for `graph` from a .npz written by `save` (or any name -> array .npz), or
    from a .pnn file (its codebooks become shared weights, so it can be fine-tuned again)."""
    if str(path).endswith(".pnn"):
        return _from_pnn(path, graph)
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            raise ValueError("one array, not named weights")
        with loaded:
            arrays = {k: loaded[k] for k in loaded.files}
    except FileNotFoundError:
        raise StateError(f"{path}: no such file") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        reason = "not an .npz archive" if "pickle" in str(e) else str(e)
        raise StateError(f"{path}: not a weights .npz ({reason})") from None
    return _params(arrays, graph, path)


def _from_pnn(path: str, graph) -> dict:
    arrays = {}
    with formats.open(path) as f:
        for name in f.tensor_names:
            t = f.tensor(name)
            if isinstance(t, formats.CodebookTensor):
                codes = np.full((t.rows, t.row_size), -1, np.int32)
                codes[np.repeat(np.arange(t.rows), np.diff(t.indptr)), t.indices] = t.codes
                arrays[f"codes/{name}"] = codes.reshape(t.shape)
                arrays[f"centroids/{name}"] = _centroids(t)
                arrays[name] = t.to_dense()
            else:
                arrays[name] = np.asarray(t, np.float32)
    return _params(arrays, graph, path)


def _centroids(t: formats.CodebookTensor) -> np.ndarray:
    """The trainer's Shared form: one codebook for the layer, or one per row (a scaled
    codebook becomes scale[o] x codebook for each row o: training tunes each row's own)."""
    if t.scale is None:
        return t.codebook
    return np.asarray(t.scale, np.float32)[:, None] * np.asarray(t.codebook, np.float32)[None, :]


def _params(arrays: dict, graph, path: str) -> dict:
    params = {}
    for name, ref in graph.tensors.items():
        if name not in arrays:
            raise StateError(f"{path}: no array {name!r} (the model needs "
                             f"{', '.join(graph.tensors)})")
        value = arrays[name]
        if value.shape != np.shape(ref):
            raise StateError(f"{path}: {name!r} has shape {value.shape}, the model expects "
                             f"{np.shape(ref)}")
        if f"codes/{name}" in arrays:
            params[name] = Shared(arrays[f"codes/{name}"].astype(np.int32),
                                  arrays[f"centroids/{name}"].astype(np.float32))
        else:
            mask = arrays.get(f"mask/{name}")
            params[name] = Dense(value.astype(np.float32),
                                 None if mask is None else mask.astype(bool))
    return params
