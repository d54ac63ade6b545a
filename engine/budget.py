"""The engine's resource model (docs/SECURITY.md): what a model may cost, and the one error
that says it costs too much.

A model file is untrusted, so nothing it declares is allocated or run before its cost is
known and under a limit. The planner computes, per sample, the bytes of every value and each
kernel's workspace (padded copies, im2col columns) and, from the values' lifetimes, the peak a
run reaches; the prepared weights add a fixed amount. memory(batch) = weights + batch x peak.
Compute is the multiply-adds (or element operations) per image. Both are checked at load for
one image and at every run for the batch given, before anything is allocated.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import SettingError

# A phone: 1 GiB for one model's weights, live activations and workspaces at the batch run.
DEFAULT_MAX_MEMORY = 1 << 30
# MobileNetV2 is 0.3 G multiply-adds per image, ResNet-18 1.8 G, VGG-16 15.5 G: 20 G admits
# every classic CNN and still refuses a file that would keep a phone busy for minutes per image.
DEFAULT_MAX_MACS = 20 * 10**9


@dataclass(frozen=True)
class Limits:
    max_memory: int = DEFAULT_MAX_MEMORY   # bytes
    max_macs: int = DEFAULT_MAX_MACS       # multiply-adds (or element operations) per image

    @classmethod
    def of(cls, max_memory: int | None = None, max_macs: int | None = None) -> Limits:
        """Limits with the defaults where None; non-positive or non-integer values refused."""
        out = {}
        for name, value, default in (("max_memory", max_memory, DEFAULT_MAX_MEMORY),
                                     ("max_macs", max_macs, DEFAULT_MAX_MACS)):
            value = default if value is None else value
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SettingError(f"{name} must be a positive integer, got {value!r}")
            out[name] = value
        return cls(**out)


def human(n: float) -> str:
    """Bytes for a person: 1.5 GiB, 800 KiB, 12 B."""
    if n >= 1 << 60:  # a hostile figure: exact ints of any size print, floats may not
        return f"about 2**{int(n).bit_length() - 1} B"
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} B"


def count(n: float) -> str:
    """A large count for a person: 2.1e+12 stays readable, 12,345 gets commas."""
    return f"{n:,.0f}" if n < 1e15 else f"about 2**{int(n).bit_length() - 1}"
