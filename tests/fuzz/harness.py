#!/usr/bin/env python3
"""Coverage-guided fuzzing of the targets in tests/fuzz/targets.py with atheris (libFuzzer).

    python -m tests.fuzz.harness TARGET [--seconds N] [--corpus DIR] [--backend B]
                                 [--no-skip-known] [--log FILE]
                                 [libFuzzer flags, extra corpus dirs, or input files ...]

run from the repository root. TARGET is `pnn` (the formats reader), `model` (engine.load +
run under targets.LIMITS, on NumPy and Numba: --backend both|numpy|numba, default both where
Numba imports) or `input` (the input readers; the first byte of a fuzz input picks the file's
suffix from SUFFIXES, the rest is the file). DIR (default tests/fuzz/corpus/TARGET) is the
seed and output corpus; further directories after it are read as seeds only.

Each input is written to a file in a private temp dir (on /dev/shm when there is one) and
handed to the target: returning, or raising one of targets.EXPECTED, is fine; anything else
escapes to libFuzzer as a finding, saved as tests/fuzz/crashes/TARGET-crash-<sha1>. So is a
run over `-timeout` (2 s by default: a hang, saved as ...-timeout-...) and one whose RSS goes
over the ceiling: the process's RSS after start-up and the Numba warm-up, plus 200 MiB
(`-rss_limit_mb`, checked by libFuzzer every second, and after every input against the peak
RSS, so a short spike between two of libFuzzer's checks is caught too: MemoryBudgetExceeded).

The command runs libFuzzer in a child process (so the temp dir is removed whatever libFuzzer
does on exit) and prints a summary line: executions, time, new corpus files, findings.
Defaults it adds unless given: -timeout=2 -max_len=65536 -rss_limit_mb=<measured>
-dict=tests/fuzz/{pnn,input}.dict -artifact_prefix=tests/fuzz/crashes/TARGET-
-print_final_stats=1 -max_total_time=N (only when fuzzing: not with -merge or -runs).
Inputs of a finding already reported (KNOWN_FINDINGS) are skipped unless --no-skip-known.
Minimise a corpus into a fresh directory with libFuzzer's merge, or replay some inputs:

    python -m tests.fuzz.harness pnn -merge=1 --corpus NEW_DIR OLD_DIR [...]
    python -m tests.fuzz.harness input tests/fuzz/crashes/input-crash-...

Replay without atheris: `run_one` (tests/test_fuzz_corpus.py does it for the whole corpus).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
if ROOT not in sys.path:  # libFuzzer's merge re-runs this file as a script
    sys.path.insert(0, ROOT)

from tests.fuzz.mutators import SUFFIXES  # noqa: E402

TARGETS = ("pnn", "model", "input")
CORPUS = os.path.join(HERE, "corpus")
CRASHES = os.path.join(HERE, "crashes")
MAX_LEN = 64 << 10
TIMEOUT = 2            # seconds per input
RSS_HEADROOM_MB = 200  # over the harness's own RSS after start-up and warm-up
ENV = "POCKETNN_FUZZ_"  # the parent passes its settings to the child (and libFuzzer's merge
                        # sub-processes) through POCKETNN_FUZZ_* variables


class MemoryBudgetExceeded(Exception):
    """An input drove the process's peak RSS over the ceiling (a finding)."""


class BackendMismatch(AssertionError):
    """The NumPy and Numba backends disagreed about the output's shape or dtype (a finding)."""


# Findings already reported, skipped (not run) so that fuzzing can go on past them without
# editing library code: id -> (what is wrong and where, predicate(target, path) -> bool, which
# may read the file with the library's own API). Remove an entry once the library is fixed;
# its reproducer in the corpus (finding-<id>*) then replays as a regression test.
# None is open. Both findings so far were fixed within the hour (tests/fuzz/README.md):
# "reader-rows" (formats/reader.py allocated 16 B per row of a codebook tensor whatever the
# bytes of its section) and "npy-bool-shape" (a .npy shape holding a bool escaped read_array as
# a TypeError; it was skipped with a predicate reading the header with NumPy's own
# read_array_header_1_0 / _2_0). Their reproducers: corpus/pnn/finding-reader-rows.pnn,
# corpus/input/finding-npy-bool-shape.
KNOWN_FINDINGS: dict[str, tuple[str, object]] = {}


def known_finding(target: str, path: str) -> str | None:
    """The KNOWN_FINDINGS id this input would only trigger again, or None."""
    for name, (_, applies) in KNOWN_FINDINGS.items():
        if applies(target, path):
            return name
    return None


def have_numba() -> bool:
    from engine.kernels import _jit

    return _jit.HAVE_NUMBA


def default_backends() -> tuple[str, ...]:
    return ("numpy", "numba") if have_numba() else ("numpy",)


def input_path(workdir: str, data: bytes) -> tuple[str, bytes]:
    """Where an `input` fuzz input is saved (suffix from its first byte), and the file bytes."""
    suffix = SUFFIXES[data[0] % len(SUFFIXES)] if data else SUFFIXES[0]
    return os.path.join(workdir, "input" + suffix), data[1:]


def run_one(target: str, data: bytes, workdir: str, backends=("numpy",),
            skip_known: bool = True) -> str | None:
    """One fuzz input through one target. Returns None, or the id of the known finding it was
    skipped for; raises what is a finding (anything but targets.EXPECTED)."""
    from tests.fuzz import targets

    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if target == "input":
        path, payload = input_path(workdir, data)
    else:
        path, payload = os.path.join(workdir, f"{target}.pnn"), data
    targets.write(path, payload)
    known = known_finding(target, path) if skip_known and KNOWN_FINDINGS else None
    if known:
        return known
    if target != "model":
        try:
            (targets.read_input if target == "input" else targets.read_pnn)(path)
        except targets.EXPECTED:
            pass
        return None
    outputs = {}
    for backend in backends:
        try:
            out = targets.load_and_run(path, backend)
        except targets.EXPECTED:
            out = None
        if out is not None:
            if not hasattr(out, "shape") or out.shape[:1] != (2,):
                raise BackendMismatch(f"{backend}: run on a batch of 2 gave "
                                      f"{getattr(out, 'shape', type(out).__name__)}")
            outputs[backend] = (out.shape, out.dtype)
    if len(set(outputs.values())) > 1:
        raise BackendMismatch(f"backends disagree on the output: {outputs}")
    return None


# ---- the child: atheris ------------------------------------------------------------------------


def _rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20, peak


# Library modules whose Python code parses what the input target's files hold: instrumented for
# that target too (they were imported before the hook by NumPy / SciPy / Numba, so function by
# function): without them the fuzzer is blind inside .npy headers, zip directories and gzip.
INPUT_LIBRARIES = ("zipfile", "gzip", "_compression", "numpy.lib.format",
                   "numpy.lib._format_impl")


def _instrument_loaded(atheris, modules) -> int:
    """atheris.instrument_all restricted to the functions of already loaded `modules`."""
    import gc
    import types

    count = 0
    for obj in gc.get_objects():
        if isinstance(obj, types.FunctionType) and obj.__module__ in modules:
            atheris.instrument_func(obj)
            count += 1
    return count


def _plug_trace_cmp_leak(atheris) -> bool:
    """Work around a reference leak of atheris 3.0.0: `_trace_cmp`, which replaces every
    comparison in instrumented code, returns PyObject_RichCompare's new reference through a
    pybind11 `py::handle`, whose caster adds one more; so each result is leaked. Harmless for
    True / False, but `a >= b` on NumPy arrays leaks the whole boolean array: RSS grew by
    ~100 MiB a minute on the pnn target, tripping -rss_limit_mb with no input to blame.
    Wrap the current `_trace_cmp` (atheris.Fuzz swaps in another, so call again once fuzzing
    runs) to drop that extra reference, only if the leak is really there. Returns True when
    wrapped."""
    import ctypes

    import numpy as np

    native = atheris._trace_cmp
    if getattr(native, "_pocketnn_plugged", False):
        return False
    probe = native(np.zeros(1), np.zeros(1), _CMP_EQ, 0, False)
    if sys.getrefcount(probe) <= 2:  # `probe` and getrefcount's argument: no leak
        return False
    decref = ctypes.pythonapi.Py_DecRef
    decref.argtypes, decref.restype = [ctypes.py_object], None
    decref(probe)

    def _trace_cmp(left, right, opid, idx, left_is_const):
        result = native(left, right, opid, idx, left_is_const)
        if result.__class__ is not bool:  # True / False: an extra reference costs nothing
            decref(result)
        return result

    _trace_cmp._pocketnn_plugged = True
    atheris._trace_cmp = _trace_cmp
    return True


# The opid atheris' bytecode passes for == (Py_EQ, shifted on 3.12+ like COMPARE_OP's arg)
_CMP_EQ = 2 << (4 if sys.version_info[:2] == (3, 12) else 5 if sys.version_info >= (3, 13)
                else 0)


def _warm_up(target: str, backends, workdir: str) -> float:
    """Run every seed once and compile every Numba kernel signature a fuzz input can reach
    (serial and parallel, uint16 / int32 columns, uint8 / uint16 codes), so that nothing
    compiles inside the timed loop. Returns the seconds it took."""
    t0 = time.perf_counter()
    from tests.fuzz import seeds

    files = seeds.all_seeds()[target]
    for data in files.values():
        try:
            run_one(target, data, workdir, backends)
        except Exception as e:  # noqa: BLE001 - the fuzzer will find it again and report it
            print(f"warm-up: a seed fails: {type(e).__name__}: {e}", file=sys.stderr)
    if target == "model" and "numba" in backends:
        try:
            _warm_up_kernels()
        except Exception as e:  # noqa: BLE001 - a changed kernel API only costs the warm-up
            print(f"warm-up of the Numba kernels failed ({type(e).__name__}: {e}); a first "
                  f"compile inside the loop may show as a timeout", file=sys.stderr)
    return time.perf_counter() - t0


def _warm_up_kernels() -> None:
    import numpy as np

    from engine.kernels import sparse
    from engine.kernels.csr import CsrCodebook

    saved = sparse.PARALLEL_MIN_MACS
    try:
        for parallel in (False, True):
            sparse.PARALLEL_MIN_MACS = 0 if parallel else 1 << 62
            for cols_dtype in (np.uint16, np.int32):
                for code_dtype in (np.uint8, np.uint16):
                    for book_rows in (1, 3):
                        w = CsrCodebook(
                            rows=3, row_size=8, indptr=np.array([0, 2, 3, 5], np.int64),
                            cols=np.array([0, 5, 7, 1, 2], cols_dtype),
                            codes=np.array([0, 1, 1, 0, 1], code_dtype),
                            book=np.ones((book_rows, 2), np.float32),
                            book_step=int(book_rows > 1),
                            scale=np.ones(3, np.float32) if book_rows == 1 else
                            np.zeros(0, np.float32))
                        sparse.gemm_csr_codebook(np.ones((2, 8), np.float32), w)
                        sparse.conv2d_nchw_csr_codebook(np.ones((2, 2, 5, 5), np.float32), w,
                                                        None, 2, 2, (1, 1), (1, 1))
    finally:
        sparse.PARALLEL_MIN_MACS = saved


def _save_finding(prefix: str, data: bytes, report: str) -> None:
    """Save a finding's input (and its traceback beside it) before libFuzzer's own handling,
    which does not always get to write its artifact (a process killed during exit)."""
    import hashlib

    path = f"{prefix}crash-{hashlib.sha1(data).hexdigest()}"
    try:
        with open(path, "wb") as f:
            f.write(data)
        with open(path + ".txt", "w") as f:
            f.write(report)
        print(f"harness: finding saved to {path} (traceback in {path}.txt)", file=sys.stderr,
              flush=True)
    except OSError as e:
        print(f"harness: could not save the finding to {path}: {e}", file=sys.stderr, flush=True)


def child() -> None:
    target = os.environ[ENV + "TARGET"]
    workdir = os.environ[ENV + "WORKDIR"]
    backends = tuple(b for b in os.environ.get(ENV + "BACKENDS", "numpy").split(",") if b)
    if target != "model":
        backends = ()
    t_start = time.perf_counter()
    # Hostile inputs make NumPy warn (overflow, NaN, Python 2 .npy headers) all the time, and
    # the mutators' warnings.catch_warnings resets the once-per-place registry: keep the log
    # for libFuzzer's lines. A warning is not a finding.
    import warnings

    warnings.simplefilter("ignore")
    # Libraries first, so that the hook below instruments only this project's code.
    import gzip  # noqa: F401
    import json  # noqa: F401
    import zipfile  # noqa: F401

    import numpy  # noqa: F401
    import scipy.sparse  # noqa: F401
    try:
        import numba  # noqa: F401
    except ImportError:
        pass
    import atheris

    # The Numba kernels stay uninstrumented: Numba compiles a function from its bytecode and
    # cannot compile atheris' coverage calls. Everything else of formats and engine is.
    with atheris.instrument_imports(include=["formats", "engine", "tests.fuzz.targets"],
                                    exclude=["engine.kernels.sparse"]):
        import engine.cli  # noqa: F401 - (and through it runtime, planner, ops, kernels)
        import engine.inputs  # noqa: F401
        import engine.ops  # noqa: F401
        import engine.runtime  # noqa: F401
        import formats  # noqa: F401
        from tests.fuzz import targets  # noqa: F401
    if target == "input":  # the parsing the input readers hand to the standard library
        _instrument_loaded(atheris, INPUT_LIBRARIES)
    from tests.fuzz import mutators

    _plug_trace_cmp_leak(atheris)  # the warm-up runs instrumented code too
    t_import = time.perf_counter() - t_start
    warm = _warm_up(target, backends, workdir)
    rss, peak = _rss_mb()
    args = [os.environ[ENV + "ARGV0"], *sys.argv[2:]]
    artifacts = ([a.split("=", 1)[1] for a in args if a.startswith("-artifact_prefix=")]
                 or [os.path.join(CRASHES, f"{target}-")])[-1]
    given = [a for a in args if a.startswith("-rss_limit_mb=")]
    if given:
        limit = int(given[-1].split("=", 1)[1])
    else:
        limit = int(max(rss, peak) + RSS_HEADROOM_MB + 1)
        args.insert(1, f"-rss_limit_mb={limit}")
    if os.environ.get(ENV + "QUIET") != "1":
        print(f"harness: target {target}, backends {','.join(backends) or '-'}; imports "
              f"{t_import:.2f} s, warm-up {warm:.2f} s; RSS {rss:.0f} MiB (peak {peak:.0f}); "
              f"ceiling {limit} MiB", file=sys.stderr, flush=True)
        os.environ[ENV + "QUIET"] = "1"  # merge sub-processes: say it once

    import resource

    skip_known = os.environ.get(ENV + "SKIP_KNOWN", "1") == "1"
    skipped: dict[str, int] = {}

    plugged = []

    def one_input(data: bytes) -> None:
        if not plugged:  # the first input runs after atheris.Fuzz swapped _trace_cmp
            plugged.append(_plug_trace_cmp_leak(atheris))
            if plugged[0]:
                print("harness: plugged atheris' _trace_cmp reference leak", file=sys.stderr,
                      flush=True)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
            known = run_one(target, data, workdir, backends, skip_known)
            if known:
                skipped[known] = skipped.get(known, 0) + 1
                if skipped[known] in (1, 10, 100, 1000, 10000):
                    print(f"harness: input skipped for known finding {known} "
                          f"({skipped[known]} so far)", file=sys.stderr, flush=True)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            if limit and peak > limit * 1024:
                where = ("before this input ran: in the harness' mutator or libFuzzer, not "
                         "the target" if before > limit * 1024 else
                         f"while this input ran (peak before it {before / 1024:.0f} MiB)")
                raise MemoryBudgetExceeded(f"peak RSS {peak / 1024:.0f} MiB over the ceiling "
                                           f"of {limit} MiB, {where}")
        except BaseException:
            _save_finding(artifacts, data, traceback.format_exc())
            raise

    mutate = mutators.mutate_input if target == "input" else mutators.mutate_pnn
    mutators.scratch_dir = workdir

    failed = []

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        try:
            return mutate(data, max_size, seed, atheris.Mutate)
        except Exception:  # a bug of the mutator, not of the target: say so once, go on
            if not failed:
                failed.append(1)
                traceback.print_exc()
                print("harness: the custom mutator failed (above); falling back to "
                      "libFuzzer's mutations for that input", file=sys.stderr, flush=True)
            return atheris.Mutate(data, max_size)

    atheris.Setup(args, one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


# ---- the parent: settings, temp dir, summary -------------------------------------------------


def _stats(log: str) -> dict:
    out = {}
    m = re.findall(r"stat::number_of_executed_units: (\d+)", log)
    if m:
        out["execs"] = int(m[-1])
    m = re.findall(r"Done (\d+) runs in (\d+) second", log)
    if m:
        out["execs"], out["seconds"] = int(m[-1][0]), int(m[-1][1])
    m = re.findall(r"#(\d+)\s+(?:DONE|INITED)\s+cov: (\d+) ft: (\d+) corp: (\d+)/(\S+)", log)
    if m:
        out["cov"], out["ft"], out["corp"], out["corp_size"] = (int(m[-1][1]), int(m[-1][2]),
                                                               int(m[-1][3]), m[-1][4])
    m = re.findall(r"MERGE-OUTER: (\d+) new files with (\d+) new features", log)
    if m:
        out["merged_files"] = int(m[-1][0])
    out["crashes"] = len(set(re.findall(r"Test unit written to (\S*crash-\w+)", log))
                         | set(re.findall(r"harness: finding saved to (\S+)", log)))
    out["timeouts"] = len(re.findall(r"Test unit written to \S*timeout-", log))
    out["ooms"] = len(re.findall(r"Test unit written to \S*oom-", log))
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        description="Fuzz a tests/fuzz/targets.py target with atheris (libFuzzer).",
        epilog="Other arguments go to libFuzzer (flags -name=value; directories are read as "
               "extra seed corpora, or merged with -merge=1).")
    ap.add_argument("target", choices=TARGETS)
    ap.add_argument("--seconds", type=int, default=None,
                    help="fuzz this long (-max_total_time; default 60 when fuzzing)")
    ap.add_argument("--corpus", default=None,
                    help="seed and output corpus (default tests/fuzz/corpus/TARGET)")
    ap.add_argument("--backend", choices=("both", "numpy", "numba"), default="both",
                    help="model target: backends each input runs on (both: numpy and numba, "
                         "numpy alone where Numba is missing)")
    ap.add_argument("--no-skip-known", action="store_true",
                    help="run inputs of the KNOWN_FINDINGS classes too (default: skip them)")
    ap.add_argument("--log", default=None, help="also write libFuzzer's output to this file")
    args, rest = ap.parse_known_args(argv)
    corpus = os.path.abspath(args.corpus or os.path.join(CORPUS, args.target))
    os.makedirs(corpus, exist_ok=True)
    os.makedirs(CRASHES, exist_ok=True)

    if args.target != "model":
        backends = ()
    elif args.backend == "both":
        backends = default_backends()
    else:
        backends = (args.backend,)
        if args.backend == "numba" and not have_numba():
            ap.error("--backend numba: Numba is not available")
    flags = [a for a in rest if a.startswith("-")]
    dirs = [os.path.abspath(a) for a in rest if not a.startswith("-")]
    given = {a.split("=", 1)[0] for a in flags}
    defaults = {"-timeout": TIMEOUT, "-max_len": MAX_LEN,
                "-artifact_prefix": os.path.join(CRASHES, f"{args.target}-"),
                "-print_final_stats": 1}
    dict_path = os.path.join(HERE, "input.dict" if args.target == "input" else "pnn.dict")
    if os.path.exists(dict_path):
        defaults["-dict"] = dict_path
    if not given & {"-merge", "-runs", "-minimize_crash", "-max_total_time"} and not any(
            os.path.isfile(d) for d in dirs):
        defaults["-max_total_time"] = args.seconds or 60
    elif args.seconds:
        defaults["-max_total_time"] = args.seconds
    flags = [f"{k}={v}" for k, v in defaults.items() if k not in given] + flags

    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    workdir = tempfile.mkdtemp(prefix=f"pocketnn-fuzz-{args.target}-", dir=shm)
    try:
        # libFuzzer re-runs argv[0] for -merge: a script that runs this file in the child mode
        argv0 = os.path.join(workdir, f"fuzz-{args.target}")
        with open(argv0, "w") as f:
            f.write(f"#!/bin/sh\nexec '{sys.executable}' '{os.path.abspath(__file__)}' "
                    f"--child \"$@\"\n")
        os.chmod(argv0, 0o755)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [ROOT, *filter(None, [os.environ.get("PYTHONPATH")])]))
        env.update({ENV + "TARGET": args.target, ENV + "WORKDIR": workdir,
                    ENV + "BACKENDS": ",".join(backends), ENV + "ARGV0": argv0})
        env.pop(ENV + "QUIET", None)
        env[ENV + "SKIP_KNOWN"] = "0" if args.no_skip_known else "1"
        replay = bool(dirs) and all(os.path.isfile(d) for d in dirs)  # run these inputs only
        cmd = [argv0, *flags, *([] if replay else [corpus]), *dirs]
        print("harness: " + " ".join(cmd[1:]), file=sys.stderr, flush=True)
        t0 = time.time()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", cwd=ROOT)
        lines = []
        log = open(args.log, "a") if args.log else None
        try:
            for line in proc.stdout:
                sys.stderr.write(line)
                lines.append(line)
                if log:
                    log.write(line)
                    log.flush()
            rc = proc.wait()
        finally:
            if log:
                log.close()
        stats = _stats("".join(lines))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    wall = time.time() - t0
    files = len(os.listdir(corpus))
    size = sum(os.path.getsize(os.path.join(corpus, f)) for f in os.listdir(corpus))
    print(f"harness summary: target={args.target} backends={','.join(backends) or '-'} "
          f"rc={rc} "
          f"wall={wall:.0f}s execs={stats.get('execs', '?')} cov={stats.get('cov', '?')} "
          f"ft={stats.get('ft', '?')} crashes={stats['crashes']} timeouts={stats['timeouts']} "
          f"ooms={stats['ooms']} corpus={corpus} ({files} files, {size:,} bytes)",
          file=sys.stderr, flush=True)
    return rc


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child()
    else:
        sys.exit(main())
