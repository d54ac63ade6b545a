"""The command line: mutants spread over worker processes, a watchdog, findings on disk, and
the report (see tests/fuzz/MUTANTS.md)."""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import resource
import shutil
import tempfile
import time
import traceback
import tracemalloc

import numpy as np

import tests.fuzz.mutants as package
from engine.kernels import _jit
from formats.tensors import from_dense_codes
from tests.fuzz import targets
from tests.fuzz.mutants import measure
from tests.fuzz.mutants.draw import ModelCase, RandomDraw, draw_model
from tests.fuzz.mutants.measure import Hang, MiB
from tests.fuzz.mutants.mutations import Mutant, make
from tests.fuzz.mutants.oracle import ACCEPTANCE, Result, check
from tests.fuzz.mutants.report import (
    RSS_SAMPLE_EVERY,
    add_finding,
    add_result,
    new_stats,
    print_report,
    progress_line,
    signature,
    summary_line,
)

AS_LIMIT = 6 << 30        # address-space rlimit of a worker: a runaway allocation fails there
WATCHDOG = 200.0          # the parent kills a worker silent for this long
FINDINGS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                            "findings")
SAVED_PER_KIND = 3        # reproducers kept per finding signature and worker


def warm_numba() -> None:
    """Compile (or load from Numba's cache) every kernel signature a mutant can reach: codes
    uint8 / uint16, columns uint16 / int32, serial and parallel, gemm and conv, so no mutant
    pays for a compile inside its one second."""
    if not _jit.HAVE_NUMBA:
        return
    from engine.kernels.csr import CsrCodebook
    from engine.kernels.sparse import conv2d_nchw_csr_codebook, gemm_csr_codebook
    rng = np.random.default_rng(0)
    for bits in (4, 12):
        for row_size in (6, 70_000):
            codes = rng.integers(-1, 3, (2, row_size))
            t = from_dense_codes(codes, np.ones(3, np.float32), bits)
            w = CsrCodebook.of(t)
            for n in (1, 2_000_000 // max(1, t.nnz) + 1):
                gemm_csr_codebook(np.ones((n, row_size), np.float32), w, None)
        for c in (1, 2):
            codes = rng.integers(-1, 3, (2, c, 3, 2))
            w = CsrCodebook.of(from_dense_codes(codes, np.ones(3, np.float32), bits))
            for n in (1, 3, 2_000_000 // max(1, w.nnz * 16) + 1):
                conv2d_nchw_csr_codebook(np.ones((n, c, 6, 5), np.float32), w,
                                         np.ones(2, np.float32), 3, 2, (1, 1), (1, 0))
    # and a few whole models through the engine (the planner, the SciPy paths)
    tmp = tempfile.mkdtemp(prefix="pnn-warm-")
    for i in range(20):
        case = draw_model(RandomDraw(random.Random(f"warm:{i}")))
        p = os.path.join(tmp, "w.pnn")
        with open(p, "wb") as f:
            f.write(case.blob)
        for b in ("numpy", "numba"):
            targets.load_and_run(p, b)
    os.unlink(p)
    os.rmdir(tmp)


def save_finding(directory: str, seed: int, case: ModelCase | None, mutant: Mutant, cls: str,
                 line: str, tb: str, extra: str = "", backend: str = "both") -> str:
    os.makedirs(directory, exist_ok=True)
    base = os.path.join(directory, f"{cls}-s{seed}-i{extra}")
    with open(base + ".pnn", "wb") as f:
        f.write(mutant.blob)
    with open(base + ".txt", "w") as f:
        f.write(f"{cls}: {line}\n")
        f.write(f"mutation: {mutant.detail}\n")
        if case is not None:
            f.write(f"model: {case.summary}\n")
        f.write(f"replay: python -m tests.fuzz.mutants --seed {seed} --backend {backend} "
                f"--replay {extra}\n")
        if tb:
            f.write("\n" + tb)
    return base


def worker(wid: int, seed: int, start: int, stop: int, step: int, backends: list[str],
           findings_dir: str, queue, as_limit: int, workdir: str) -> None:
    """Run mutants start, start+step, ... < stop; report each to the parent through `queue`."""
    import warnings
    warnings.simplefilter("ignore")  # hostile files make NumPy warn all the time
    if as_limit:
        resource.setrlimit(resource.RLIMIT_AS, (as_limit, as_limit))
    if "numba" in backends:
        warm_numba()
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, "mutant.pnn")
    tracemalloc.start()  # for good: see oracle.check
    gc.collect()
    queue.put(("ready", wid, measure.start_rss_watch()))
    saved: dict[str, int] = {}
    parent = os.getppid()
    for n, i in enumerate(range(start, stop, step), 1):
        if os.getppid() != parent:  # the driver is gone: stop, do not run on as an orphan
            return
        queue.put(("begin", wid, i, time.time()))
        case = mutant = None
        try:
            measure.arm_alarm()
            try:
                case, mutant = make(seed, i)
            finally:
                measure.disarm_alarm()
            r = check(case, mutant, path, backends, i)
        except (Exception, Hang) as e:  # noqa: BLE001 - the harness itself failed: go on
            r = Result(i, ["?"], "?", "?", outcome="harness-error",
                       findings=[("harness-error", f"{type(e).__name__}: {e}",
                                  traceback.format_exc())])
        for cls, line, tb in r.findings:
            sig = signature(cls, line)
            saved[sig] = saved.get(sig, 0) + 1
            if saved[sig] <= SAVED_PER_KIND and mutant is not None:
                save_finding(findings_dir, seed, case, mutant, cls, line, tb, str(i),
                             "both" if len(backends) > 1 else backends[0])
        queue.put(("done", wid, i, {
            "outcome": r.outcome, "reader": r.reader, "reasons": r.reasons, "kind": r.kind,
            "ops": r.ops, "findings": [(c, ln) for c, ln, _ in r.findings], "notes": r.notes,
            "seconds": r.seconds, "untraced": r.untraced, "untraced_cpu": r.untraced_cpu,
            "peak": r.peak, "rss": r.rss, "rss_total": r.rss_total,
            "peak_target": r.peak_target, "detail": r.detail[:300]},
            measure.rss() if n % RSS_SAMPLE_EVERY == 0 else None))
    queue.put(("end", wid, measure.max_rss()))


def _save_lost(args, workdir: str, wid: int, i: int, began: float, cls: str, line: str) -> None:
    """A worker that never answered for mutant i: keep its file if it wrote one since it
    began, and say how to replay it (the driver does not re-make it: that may hang too)."""
    os.makedirs(args.findings, exist_ok=True)
    base = os.path.join(args.findings, f"{cls}-s{args.seed}-i{i}")
    src = os.path.join(workdir, str(wid), "mutant.pnn")
    wrote = os.path.exists(src) and os.path.getmtime(src) >= began - 1
    if wrote:
        shutil.copyfile(src, base + ".pnn")
    with open(base + ".txt", "w") as f:
        f.write(f"{cls}: {line}{'' if wrote else ' (while making the mutant: no file)'}\n")
        f.write(f"replay: python -m tests.fuzz.mutants --seed {args.seed} --backend "
                f"{args.backend} --replay {i}\n")


def drive(args) -> dict:
    """Run args.count mutants from args.start over args.jobs worker processes; worker w runs
    mutants start + w, start + w + jobs, ... and is restarted after the next one if it dies
    or falls silent for WATCHDOG seconds (that mutant is then a finding)."""
    import multiprocessing as mp

    backends = ["numpy", "numba"] if args.backend == "both" else [args.backend]
    if "numba" in backends and not _jit.HAVE_NUMBA:
        raise SystemExit("numba backend asked for, but Numba is not available")
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    stop = args.start + args.count
    procs, current, next_index, record = {}, {}, {}, {}
    stats, ended = new_stats(), set()
    workdir = tempfile.mkdtemp(prefix="pnn-mutants-")

    def spawn(wid: int, first: int) -> None:
        p = ctx.Process(target=worker, args=(wid, args.seed, first, stop, args.jobs, backends,
                                             args.findings, queue, args.as_limit,
                                             os.path.join(workdir, str(wid))), daemon=True)
        p.start()
        procs[wid], current[wid] = p, None
        key = str(wid) if wid not in record else f"{wid}.{len(stats['workers'])}"
        record[wid] = stats["workers"][key] = {"base": 0, "samples": [], "peak": 0,
                                               "mutants": 0}

    def lost(wid: int, i: int, began: float, cls: str, line: str) -> None:
        _save_lost(args, workdir, wid, i, began, cls, line)
        add_finding(stats, i, cls, line)
        stats["done"] += 1
        stats["outcomes"][cls] = stats["outcomes"].get(cls, 0) + 1
        if i + args.jobs < stop:
            spawn(wid, i + args.jobs)
        else:
            ended.add(wid)

    t0 = last_print = time.time()
    for w in range(args.jobs):
        spawn(w, args.start + w)
    while len(ended) < args.jobs:
        try:
            msg = queue.get(timeout=5)
        except Exception:  # noqa: BLE001 - queue.Empty
            msg = None
        now = time.time()
        if msg is not None:
            kind, wid = msg[0], msg[1]
            if kind == "ready":
                record[wid]["base"] = msg[2]
            elif kind == "begin":
                current[wid] = (msg[2], msg[3])
            elif kind == "done":
                i, r, rss = msg[2], msg[3], msg[4]
                current[wid], next_index[wid] = None, i + args.jobs
                add_result(stats, i, r)
                record[wid]["mutants"] += 1
                if rss is not None:
                    record[wid]["samples"].append((record[wid]["mutants"], rss))
            elif kind == "end":
                record[wid]["peak"] = msg[2]
                ended.add(wid)
        for wid, cur in list(current.items()):  # the watchdog
            if wid not in ended and cur is not None and now - cur[1] >= WATCHDOG:
                procs[wid].kill()
                procs[wid].join()
                lost(wid, cur[0], cur[1], "hang",
                     f"worker killed after {WATCHDOG:.0f} s without an answer")
        for wid, p in list(procs.items()):  # a worker that died (OOM killer, segfault)
            if wid not in ended and not p.is_alive() and p.exitcode not in (0, None):
                cur = current.get(wid)
                i = cur[0] if cur else next_index.get(wid, args.start + wid)
                lost(wid, i, cur[1] if cur else 0.0, "crash",
                     f"worker process died (exit code {p.exitcode})")
        if now - last_print >= args.progress:
            last_print = now
            stats["seconds"] = now - t0
            print(progress_line(stats, args.count, now - t0), flush=True)
            if args.json:  # a checkpoint: a run that dies still leaves its counts
                with open(args.json, "w") as f:
                    json.dump(stats, f, indent=1, default=str)
    for p in procs.values():
        p.join(timeout=10)
    shutil.rmtree(workdir, ignore_errors=True)
    stats["seconds"] = time.time() - t0
    return stats


def replay(args) -> None:
    import warnings
    warnings.simplefilter("ignore")
    backends = ["numpy", "numba"] if args.backend == "both" else [args.backend]
    case, mutant = make(args.seed, args.replay)
    print(f"model: {case.summary}\nmutation ({mutant.kind}, {'+'.join(mutant.ops)}): "
          f"{mutant.detail}\nsame={mutant.same} valid={mutant.valid} bytes={len(mutant.blob)}")
    path = args.out or os.path.join(tempfile.mkdtemp(), "mutant.pnn")
    if "numba" in backends:
        warm_numba()
    r = check(case, mutant, path, backends, args.replay)
    print(f"file: {path}\noutcome: {r.outcome}; reader: {r.reader}; {r.seconds:.3f} s "
          f"(untraced {r.untraced}); tracemalloc peak {r.peak / MiB:.2f} MiB in {r.peak_target}")
    for reason in r.reasons:
        print("  reason:", reason)
    for n in r.notes:
        print("  note:", n)
    for cls, line, tb in r.findings:
        print(f"FINDING {cls}: {line}\n{tb}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.fuzz.mutants", description=package.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--start", type=int, default=0, help="first mutant index")
    ap.add_argument("--backend", choices=["numpy", "numba", "both"], default="numpy")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--replay", type=int, default=None, help="run mutant I alone, verbosely")
    ap.add_argument("--out", default=None, help="with --replay: where to write the mutant")
    ap.add_argument("--findings", default=FINDINGS_DIR)
    ap.add_argument("--progress", type=float, default=60.0, help="seconds between progress lines")
    ap.add_argument("--as-limit", type=int, default=AS_LIMIT,
                    help="address-space rlimit per worker in bytes (0: none)")
    ap.add_argument("--json", default=None, help="also write the full statistics here")
    args = ap.parse_args(argv)
    if args.replay is not None:
        replay(args)
        return 0
    stats = drive(args)
    print_report(stats)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(stats, f, indent=1, default=str)
    print(summary_line(args, stats), flush=True)
    return 1 if any(stats["findings"].get(c, 0) for c in ACCEPTANCE) else 0
