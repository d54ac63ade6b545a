"""Running the targets on one file under the limits: each call timed (wall and CPU), its
tracemalloc peak measured, the process's RSS high-water mark taken around all of them, and a
SIGALRM that turns a hang into a traceback."""

from __future__ import annotations

import os
import resource
import signal
import time
import traceback
import tracemalloc
from dataclasses import dataclass

from tests.fuzz import targets

MiB = 1 << 20
TIME_LIMIT = 1.0          # seconds per mutant, all targets together
MEM_LIMIT = 64 * MiB      # tracemalloc peak of any one target call (targets.LIMITS' max_memory)
RSS_LIMIT = 200 * MiB     # RSS rise during one mutant's targets
HARD_TIMEOUT = 30.0       # SIGALRM inside a target: a hang gets a traceback

_rss_base: int | None = None  # RSS after a worker's warm-up; None: RSS is not measured


def rss() -> int:
    """Resident bytes of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def max_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def start_rss_watch() -> int:
    """From now on run_targets measures RSS against the current RSS: the baseline, returned."""
    global _rss_base
    _rss_base = rss()
    return _rss_base


def _hwm() -> int:
    """The kernel's RSS high-water mark of this process (VmHWM), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_hwm() -> None:
    """Start a new RSS high-water mark at the current RSS (Linux: clear_refs 5)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


class Hang(BaseException):
    """Raised by SIGALRM inside a target that runs past HARD_TIMEOUT."""


def _alarm(signum, frame):
    raise Hang(f"still running after {HARD_TIMEOUT:.0f} s")


def arm_alarm() -> None:
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, HARD_TIMEOUT)


def disarm_alarm() -> None:
    signal.setitimer(signal.ITIMER_REAL, 0)


@dataclass
class Outcome:
    status: str                  # "ok" | "expected" | "crash" | "hang"
    value: object = None         # tensors / logits
    error: BaseException | None = None
    tb: str = ""
    seconds: float = 0.0
    cpu: float = 0.0             # process CPU time (all threads) of the call
    peak: int = 0                # tracemalloc peak over what was live before the call
    rss: int = 0                 # (on "read" only) RSS high-water mark of all the targets
                                 # over the RSS just before them
    rss_total: int = 0           # (on "read" only) the same over the worker's baseline


def _call(fn) -> Outcome:
    arm_alarm()
    try:
        return Outcome("ok", fn())
    except targets.EXPECTED as e:
        return Outcome("expected", error=e)
    except Hang as e:
        return Outcome("hang", error=e, tb=traceback.format_exc())
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # noqa: BLE001 - anything else escaping a target is a finding
        return Outcome("crash", error=e, tb=traceback.format_exc())
    finally:
        disarm_alarm()


def run_targets(path: str, backends: list[str], trace: bool = True) -> dict[str, Outcome]:
    """targets.read_pnn, then targets.load_and_run per backend; each timed and, with `trace`
    (tracemalloc running), its tracemalloc peak measured over what was live before it."""
    out = {}
    if _rss_base is not None:  # (no gc.collect here: 0.05-0.2 s a call with Numba loaded)
        _reset_hwm()
        rss_before = rss()
    calls = [("read", lambda: targets.read_pnn(path))] + \
        [(b, (lambda b=b: targets.load_and_run(path, b))) for b in backends]
    for name, fn in calls:
        before = 0
        if trace:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
        c0, t0 = time.process_time(), time.perf_counter()
        res = _call(fn)
        res.seconds = time.perf_counter() - t0
        res.cpu = time.process_time() - c0
        if trace:
            res.peak = max(0, tracemalloc.get_traced_memory()[1] - before)
        out[name] = res
    if _rss_base is not None:
        hwm = _hwm()
        out["read"].rss = hwm - rss_before
        out["read"].rss_total = hwm - _rss_base
    return out
