"""Errors of the weight-file readers (PyTorch checkpoints, .npz): one line naming the file."""

from __future__ import annotations


class CheckpointError(ValueError):
    """A weights file that cannot be read safely: damaged, truncated, over a limit, or holding
    something other than tensors. The message names the file (and entry) and the problem."""


class UnsafePickleError(CheckpointError):
    """A pickle that asks for a global, an opcode or a structure the reader does not allow.
    Raised before the pickle runs anything."""


def printable(value: object, limit: int = 80) -> str:
    """Attacker-chosen data (a global's name, a key, a number) as a short one-line text."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        text = f"an integer of {value.bit_length()} bits"  # str() refuses 4,300+ digits
    elif isinstance(value, (int, float, bytes)) or value is None:
        text = repr(value[:limit + 1] if isinstance(value, bytes) else value)
    else:
        text = f"a {type(value).__name__}"
    text = "".join(c if c.isprintable() else "?" for c in text[:limit + 1])
    return text if len(text) <= limit else text[:limit - 3] + "..."
