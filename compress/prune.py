"""Magnitude pruning (Han et al., "Learning both Weights and Connections", 2015).

A layer keeps the round(density * size) weights of largest magnitude. Pruning runs in steps
whose densities fall geometrically to the target, with retraining in between (the caller's
job), because one big cut loses accuracy that small cuts with retraining keep.
"""

from __future__ import annotations

import numpy as np


def magnitude_mask(weight: np.ndarray, density: float,
                   previous: np.ndarray | None = None) -> np.ndarray:
    """Boolean mask keeping the largest-|w| fraction `density` of `weight` (within `previous`)."""
    if not 0.0 <= density <= 1.0:
        raise ValueError(f"density must be in [0, 1], got {density}")
    flat = np.abs(weight).ravel()
    if previous is not None:  # once pruned, always pruned
        flat = np.where(previous.ravel(), flat, -1.0)
    keep = int(round(density * flat.size))
    mask = np.zeros(flat.size, dtype=bool)
    if keep:
        # stable sort: ties broken by position, so the same weights give the same mask
        order = np.argsort(-flat, kind="stable")[:keep]
        mask[order] = True
    if previous is not None:
        mask &= previous.ravel()
    return mask.reshape(weight.shape)


def geometric_schedule(target: float, steps: int) -> list[float]:
    """Densities for `steps` pruning steps ending at `target`: target**(1/steps), ..., target."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return [float(target ** ((i + 1) / steps)) for i in range(steps)]
