"""The one place that decides how kernels are compiled (stumpy's config.py habit).

`HAVE_NUMBA` is False when Numba is not installed or when the environment says
``POCKETNN_DISABLE_NUMBA=1``; then `njit` returns the plain Python function and `prange` is
`range`, so every kernel still runs (slowly) and the ops choose their NumPy/SciPy paths instead.

Kernels compiled here take only arrays and ints/floats: ``cache=True`` freezes module globals
into the on-disk cache, so nothing a kernel reads may come from a global.
"""

from __future__ import annotations

import os

_DISABLED = os.environ.get("POCKETNN_DISABLE_NUMBA", "").strip() not in ("", "0")

try:
    if _DISABLED:
        raise ImportError("disabled by POCKETNN_DISABLE_NUMBA")
    import numba
except ImportError:
    numba = None

HAVE_NUMBA = numba is not None
WHY_NO_NUMBA = ("POCKETNN_DISABLE_NUMBA is set" if _DISABLED
                else "numba is not installed (pip install numba)" if not HAVE_NUMBA else "")

prange = numba.prange if HAVE_NUMBA else range

_threads = 1  # what get_threads() reports without Numba


def njit(*args, **options):
    """``numba.njit(cache=True, nogil=True, **options)``, or the identity without Numba.

    Use as ``@njit`` or ``@njit(parallel=True)``.
    """
    def wrap(fn):
        if not HAVE_NUMBA:
            return fn
        return numba.njit(cache=True, nogil=True, **options)(fn)

    if len(args) == 1 and callable(args[0]) and not options:
        return wrap(args[0])
    if args:
        raise TypeError("njit takes keyword options only, e.g. @njit(parallel=True)")
    return wrap


def set_threads(n: int) -> None:
    """Threads used by the parallel (prange) kernels: 1..the number Numba started with.
    Without Numba any n >= 1 is accepted and has no effect (NumPy's BLAS has its own)."""
    global _threads
    from engine.errors import SettingError  # here: kernels import nothing else of the engine

    top = numba.config.NUMBA_NUM_THREADS if HAVE_NUMBA else 1 << 16
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= top:
        raise SettingError(f"threads must be in 1..{top}, got {n!r}")
    if HAVE_NUMBA:
        numba.set_num_threads(n)
    _threads = n


def get_threads() -> int:
    return int(numba.get_num_threads()) if HAVE_NUMBA else _threads

