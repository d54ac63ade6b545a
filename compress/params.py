"""Trainable parameters: plain or pruned (Dense) and weight-shared (Shared).

The trainer sees every parameter through the same four calls:
    weight()              dense float array used by the forward pass
    trainable()           the array SGD updates in place (the value, or the centroids)
    project_grad(dw)      d loss / d weight  ->  d loss / d trainable
    after_step(velocity)  re-impose the constraint (mask) on value and momentum
"""

from __future__ import annotations

import numpy as np


class Dense:
    """A float tensor, optionally pruned: positions where mask is False stay exactly zero
    (value, gradient and momentum are all zeroed there)."""

    def __init__(self, value: np.ndarray, mask: np.ndarray | None = None):
        self.value = np.array(value, dtype=np.result_type(value, np.float32))
        self.mask = None
        if mask is not None:
            mask = np.asarray(mask, dtype=bool)
            if mask.shape != self.value.shape:
                raise ValueError(f"mask of shape {mask.shape} for a value of shape "
                                 f"{self.value.shape}")
            self.mask = mask
            self.value *= mask

    def weight(self) -> np.ndarray:
        return self.value

    def trainable(self) -> np.ndarray:
        return self.value

    def project_grad(self, dw: np.ndarray) -> np.ndarray:
        return dw if self.mask is None else dw * self.mask

    def after_step(self, velocity: np.ndarray) -> None:
        if self.mask is not None:
            self.value *= self.mask
            velocity *= self.mask

    def __repr__(self) -> str:
        dens = "" if self.mask is None else f", density={self.mask.mean():.3f}"
        return f"Dense(shape={self.value.shape}{dens})"


class Shared:
    """A weight shared through centroids: weight = centroids[codes], 0 where codes == -1.

    codes: int array of the weight's shape (O, ...), -1 at pruned positions.
    centroids: (K,) shared by the layer, or (O, K) one codebook per output channel.
    The gradient of a centroid is the sum of the weight gradients over the positions assigned
    to it (Deep Compression, section 3.1: centroid fine-tuning).
    """

    def __init__(self, codes: np.ndarray, centroids: np.ndarray):
        self.codes = np.asarray(codes).astype(np.int64)
        self.centroids = np.array(centroids, dtype=np.result_type(centroids, np.float32))
        if self.centroids.ndim not in (1, 2):
            raise ValueError(f"centroids must be (K,) or (O, K), got {self.centroids.shape}")
        k = self.centroids.shape[-1]
        if self.centroids.ndim == 2 and self.centroids.shape[0] != self.codes.shape[0]:
            raise ValueError(f"per-channel centroids {self.centroids.shape} for "
                             f"{self.codes.shape[0]} output channels")
        if self.codes.size and (self.codes.min() < -1 or self.codes.max() >= k):
            raise ValueError(f"codes out of range -1..{k - 1}")
        self.keep = self.codes >= 0
        o = self.codes.shape[0]
        # Flat index into centroids.ravel() for every position (pruned ones point at 0).
        flat = np.where(self.keep, self.codes, 0)
        if self.centroids.ndim == 2:
            flat = flat + (np.arange(o) * k).reshape((o,) + (1,) * (self.codes.ndim - 1))
        self._flat = flat

    def weight(self) -> np.ndarray:
        return self.centroids.ravel()[self._flat] * self.keep

    def trainable(self) -> np.ndarray:
        return self.centroids

    def project_grad(self, dw: np.ndarray) -> np.ndarray:
        g = np.bincount(self._flat[self.keep], weights=dw[self.keep],
                        minlength=self.centroids.size)
        return g.reshape(self.centroids.shape).astype(self.centroids.dtype)

    def after_step(self, velocity: np.ndarray) -> None:
        pass

    def __repr__(self) -> str:
        return f"Shared(shape={self.codes.shape}, centroids={self.centroids.shape})"
