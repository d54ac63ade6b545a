"""The oracle: run the targets on a mutant and judge every outcome.

Allowed: an expected error (targets.EXPECTED), or a success whose content is what the file
says by the independent decoder (`spec_decode`) and whose output is what the ops' reference
functions compute. `FINDING_CLASSES` lists the rest; `check` returns them in a `Result`.
"""

from __future__ import annotations

import gc
import json
import re
import traceback
import tracemalloc
from dataclasses import dataclass, field

import engine
import formats
from tests.fuzz import targets
from tests.fuzz.mutants.draw import ModelCase
from tests.fuzz.mutants.measure import (
    HARD_TIMEOUT,
    MEM_LIMIT,
    RSS_LIMIT,
    TIME_LIMIT,
    MiB,
    Outcome,
    run_targets,
)
from tests.fuzz.mutants.mutations import Mutant
from tests.fuzz.mutants.reference import (
    batch_input,
    canon_json,
    content_diff,
    finite_weights,
    output_diff,
    reference_forward,
    tensors_diff,
)
from tests.fuzz.mutants.spec_decode import OracleSkip, SpecInvalid, spec_decode

# The four acceptance classes first, then the others (reported, and failures in the
# tests, except nonfinite-divergence: IEEE corner cases of NaN / inf weights).
ACCEPTANCE = ("crash", "hang", "over-memory", "silent-change")
FINDING_CLASSES = ACCEPTANCE + ("rss-over", "valid-rejected", "accepted-invalid",
                                "nonfinite-divergence", "nondeterministic", "harness-error")


@dataclass
class Result:
    index: int
    ops: list
    kind: str
    detail: str
    outcome: str = ""            # the engine's (first backend's) outcome class
    reader: str = ""             # targets.read_pnn's outcome class
    reasons: list = field(default_factory=list)     # reason classes of expected errors
    findings: list = field(default_factory=list)    # (class, one line, traceback)
    notes: list = field(default_factory=list)
    seconds: float = 0.0         # targets' wall time (traced run)
    untraced: float | None = None
    untraced_cpu: float | None = None
    peak: int = 0
    peak_target: str = ""
    rss: int = 0                 # RSS high-water mark of the targets over the RSS before
    rss_total: int = 0           # the same over the worker's post-warm-up baseline

    def find(self, cls: str, line: str, tb: str = "") -> None:
        self.findings.append((cls, line, tb))


def reason_class(e: BaseException, path: str = "") -> str:
    """'LayoutError: section N ...' with numbers, quoted names and the path taken out."""
    text = getattr(e, "reason", None) or str(e)
    if path:
        text = text.replace(path, "<file>")
    text = re.sub(r"<file>: ?", "", text)
    text = re.sub(r"'[^']*'|\"[^\"]*\"", "'_'", text)
    text = re.sub(r"\(\d[\d, ]*\)|\[\d[\d, ]*\]", "(N)", text)
    text = re.sub(r"-?\d+(\.\d+)?(e[-+]?\d+)?", "N", text)
    text = re.sub(r"\d+(\.\d+)? ?[KMG]iB", "N", text)
    return f"{type(e).__name__}: {text[:90]}"


def error_class(e: BaseException) -> str:
    if isinstance(e, formats.FormatError):
        return f"FormatError/{type(e).__name__}"
    return type(e).__name__


def check(case: ModelCase, mutant: Mutant, path: str, backends: list[str], index: int = -1,
          trace: bool = True) -> Result:
    """Run the targets on the mutant (written to `path`) and judge every outcome."""
    r = Result(index, mutant.ops, mutant.kind, mutant.detail)
    with open(path, "wb") as f:
        f.write(mutant.blob)
    # A worker keeps tracemalloc running from start to end: in CPython 3.11 every stop (or
    # clear_traces) leaks the keys of its traceback table (cpython#121390, fixed for 3.12 and
    # 3.13 only), about 13 KB per mutant here. Alone (tests, replay), it traces this call.
    started = trace and not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        out = run_targets(path, backends, trace)
    finally:
        if started:
            tracemalloc.stop()
    r.seconds = sum(o.seconds for o in out.values())
    r.peak_target = max(out, key=lambda k: out[k].peak)
    r.peak = out[r.peak_target].peak
    r.rss, r.rss_total = out["read"].rss, out["read"].rss_total
    for name, o in out.items():
        if o.status == "crash":
            r.find("crash", f"{name}: {type(o.error).__name__}: {str(o.error)[:200]}", o.tb)
    _judge_time(r, out, path, backends, trace)
    _judge_memory(r, out, path)
    read = out["read"]
    r.reader = "ok" if read.status == "ok" else (
        error_class(read.error) if read.status == "expected" else read.status)
    if read.status == "expected":
        r.reasons.append(f"read: {reason_class(read.error, path)}")
    _engine_refusals(r, out, path, backends)

    loaded = [b for b in backends if out[b].status == "ok"]
    spec = _spec_decode(r, mutant, read.status == "ok" or bool(loaded), loaded)
    same = _judge_content(r, case, mutant, path, read, spec, loaded)
    if loaded:
        src = (spec.metadata, spec.tensors) if spec is not None else (
            (case.metadata, case.tensors) if mutant.same else None)
        if src is not None:
            _judge_outputs(r, out, path, loaded, *src)
    if mutant.valid:
        _judge_valid(r, out, spec)

    first = out[backends[0]] if backends else read
    if first.status == "ok":
        r.outcome = "loaded-equal" if same else (
            "loaded-changed-verified" if spec is not None else "loaded-unverified")
    elif first.status == "expected":
        r.outcome = error_class(first.error)
    else:
        r.outcome = first.status
    return r


def _judge_time(r: Result, out: dict, path: str, backends: list[str], trace: bool) -> None:
    """Hangs and slow runs. Under tracemalloc, allocation-heavy code runs 10-20x slower and
    each block carries a trace (RSS): a run over the time or RSS limit is measured again
    without it, and a wall-time overrun with under 1 s of CPU is other processes holding the
    cores: run once more, and only noted if it stays so."""
    if not trace:
        for name, o in out.items():
            if o.status == "hang":
                r.find("hang", f"{name}: still running after {HARD_TIMEOUT:.0f} s", o.tb)
        return
    if not (r.seconds > TIME_LIMIT or r.rss > RSS_LIMIT
            or any(o.status == "hang" for o in out.values())):
        return
    tracing = tracemalloc.is_tracing()
    if tracing:  # a worker's (see check): stopped for these rare re-runs only
        tracemalloc.stop()
    gc.collect()
    try:
        again = run_targets(path, backends, trace=False)
        r.untraced = sum(o.seconds for o in again.values())
        r.untraced_cpu = sum(o.cpu for o in again.values())
        if r.untraced > TIME_LIMIT and r.untraced_cpu <= TIME_LIMIT:
            third = run_targets(path, backends, trace=False)
            if sum(o.seconds for o in third.values()) < r.untraced:
                again = third
                r.untraced = sum(o.seconds for o in again.values())
                r.untraced_cpu = sum(o.cpu for o in again.values())
    finally:
        if tracing:
            tracemalloc.start()
    r.rss, r.rss_total = again["read"].rss, again["read"].rss_total
    if r.rss > RSS_LIMIT:
        r.find("rss-over", f"the targets raised RSS by {r.rss / MiB:.0f} MiB without "
               f"tracemalloc (ceiling {RSS_LIMIT / MiB:.0f} MiB)")
    for name, o in again.items():
        if o.status == "hang" or (o.status == "crash" and out[name].status == "hang"):
            r.find("hang", f"{name}: still running after {HARD_TIMEOUT:.0f} s without "
                   "tracemalloc", o.tb)
        elif out[name].status == "hang":
            out[name] = o  # the untraced run's answer stands in for the interrupted one
    if r.untraced > TIME_LIMIT and r.untraced_cpu <= TIME_LIMIT:
        r.notes.append(f"over {TIME_LIMIT} s of wall time only under CPU contention "
                       f"({r.untraced:.2f} s wall, {r.untraced_cpu:.2f} s CPU)")
    elif r.untraced > TIME_LIMIT and not any(f[0] == "hang" for f in r.findings):
        times = ", ".join(f"{k} {o.seconds:.2f}s/{o.cpu:.2f}s" for k, o in again.items())
        r.find("hang", f"{r.untraced:.2f} s ({r.untraced_cpu:.2f} s CPU) over the "
               f"{TIME_LIMIT} s limit without tracemalloc (wall/CPU: {times})")
    elif r.seconds > TIME_LIMIT:
        r.notes.append(f"slow only under tracemalloc: {r.seconds:.2f} s")


def _judge_memory(r: Result, out: dict, path: str) -> None:
    """Each target's tracemalloc peak against MEM_LIMIT, less what load_and_run allocates
    itself once the model loaded: its input batch (2 x C x H x W float32), which the engine
    checks against its limit per call (a model of 64 MiB per image may refuse a batch of 2,
    after the target made it)."""
    for name, o in out.items():
        if o.peak <= MEM_LIMIT:
            continue
        own = 0
        if name != "read" and (o.status == "expected" or o.value is not None):
            try:  # loaded (a refusal of the run escapes load_and_run): a cache hit
                shape = engine.load(path, backend=name, **targets.LIMITS).input_shape
                own = int(batch_input(shape).nbytes)
            except targets.EXPECTED:
                pass
        if o.peak - own > MEM_LIMIT:
            r.find("over-memory", f"{name}: tracemalloc peak {o.peak / MiB:.1f} MiB "
                   f"({own / MiB:.0f} MiB of it the target's input) over the "
                   f"{MEM_LIMIT / MiB:.0f} MiB ceiling")


def _engine_refusals(r: Result, out: dict, path: str, backends: list[str]) -> None:
    """load_and_run swallows the engine's expected error (it returns None): load again to
    see which one it was."""
    for b in backends:
        o = out[b]
        if o.status == "ok" and o.value is None:
            try:
                engine.load(path, backend=b, **targets.LIMITS)
            except targets.EXPECTED as e:
                o.status, o.error = "expected", e
            except BaseException as e:  # noqa: BLE001 - anything else is a finding
                o.status, o.error, o.tb = "crash", e, traceback.format_exc()
                r.find("crash", f"{b} (second load): {type(e).__name__}: {str(e)[:200]}", o.tb)
            else:
                o.status = "nondeterministic"
                r.find("nondeterministic", f"{b}: load_and_run refused the file, a second "
                       "engine.load accepted it")
        if o.status == "expected" and b == backends[0]:
            r.reasons.append(f"engine: {reason_class(o.error, path)}")


def _spec_decode(r: Result, mutant: Mutant, accepted: bool, loaded: list[str]):
    """The independent decoding of a file some target accepted (None otherwise, or when it
    is refused or too big for the oracle)."""
    if not accepted:
        return None
    try:
        spec = spec_decode(mutant.blob)
    except SpecInvalid as e:
        who = loaded[0] if loaded and r.reader != "ok" else "read_pnn"
        r.find("accepted-invalid", f"{who} accepted a file the spec decoder refuses: {e}")
        return None
    except OracleSkip as e:
        r.notes.append(f"oracle skipped: {e}")
        return None
    except Exception as e:  # noqa: BLE001 - a bug of the oracle itself
        r.find("harness-error", f"spec_decode: {type(e).__name__}: {e}", traceback.format_exc())
        return None
    r.notes += [f"nonconforming: {n}" for n in spec.notes]
    return spec


def _judge_content(r: Result, case: ModelCase, mutant: Mutant, path: str, read: Outcome, spec,
                   loaded: list[str]) -> bool:
    """The reader's decoding against the spec decoder's; for content-keeping mutants, the
    content against the original's. True when the loaded content is the original's."""
    if read.status == "ok":
        try:
            with formats.open(path) as f:
                reader_meta = f.metadata
        except Exception as e:  # noqa: BLE001 - read_pnn just opened it
            r.find("nondeterministic", f"formats.open failed after read_pnn succeeded: "
                   f"{type(e).__name__}: {e}", traceback.format_exc())
            reader_meta = None
        if spec is not None:
            why = tensors_diff(spec.tensors, read.value)
            if why is None and reader_meta is not None and \
                    canon_json(reader_meta) != canon_json(spec.metadata):
                why = "metadata differs from the file's JSON"
            if why:
                r.find("silent-change", f"read_pnn decodes something other than the file "
                       f"holds: {why}")
        tensors, meta = (spec.tensors, spec.metadata) if spec is not None else (
            read.value, reader_meta)
    elif loaded and spec is not None:
        tensors, meta = spec.tensors, spec.metadata
    else:
        return False
    why = content_diff(tensors, meta, case.tensors, case.metadata)
    if why and mutant.same:
        r.find("silent-change", f"a {mutant.kind} mutant loaded with changed content: {why}")
    return why is None


def _judge_outputs(r: Result, out: dict, path: str, loaded: list[str], meta: dict,
                   tensors: dict) -> None:
    """Each loaded backend's output against the reference forward pass of what the file
    holds, and the loaded model's input shape, labels and preprocessing against its JSON."""
    try:
        want, magnitude, finite = reference_forward(meta, tensors)
    except Exception as e:  # noqa: BLE001
        r.find("silent-change", f"the engine ran a model its ops' reference functions refuse: "
               f"{type(e).__name__}: {e}", traceback.format_exc())
        want = None
    for b in loaded:
        if want is not None:
            why, nonfinite = output_diff(out[b].value, want, magnitude)
            if why and finite:  # the model's true answer is finite and well defined
                r.find("silent-change", f"[{b}] {why}")
            elif why:  # NaN / inf in the weights or values: IEEE corner cases differ
                r.find("nonfinite-divergence", f"[{b}] {why}")
            elif nonfinite:
                r.notes.append(f"non-finite output [{b}], equal to the reference")
        try:
            why = _model_diff(path, b, meta)
        except Exception as e:  # noqa: BLE001
            why = f"{type(e).__name__}: {e}"
        if why:
            r.find("silent-change", f"[{b}] loaded model: {why}")


def _model_diff(path: str, backend: str, meta: dict) -> str | None:
    """What the loaded Model says against the file's metadata: input shape, labels,
    preprocessing (a cache hit: load_and_run just loaded it)."""
    m = engine.load(path, backend=backend, **targets.LIMITS)
    g = meta["graph"]
    if tuple(m.input_shape) != tuple(g["input"]["shape"]):
        return f"input shape {m.input_shape} vs the file's {g['input']['shape']}"
    if m.labels != meta.get("labels", []):
        return "labels differ from the file's"
    pre = meta.get("preprocess", {})
    for key, default in (("scale", 1.0), ("mean", [0.0]), ("std", [1.0]), ("resize", 0)):
        want = json.loads(json.dumps(pre.get(key, default)),
                          parse_int=None if key == "resize" else float)
        if canon_json(getattr(m.graph.preprocess, key)) != canon_json(want):
            return f"preprocess.{key} differs from the file's"
    return None


def _judge_valid(r: Result, out: dict, spec) -> None:
    """A file valid by docs/FORMAT.md must load; the engine may refuse only non-finite
    weights (planner.check_finite: a valid file, but not a runnable model)."""
    refused = [(k, o) for k, o in out.items() if o.status == "expected"]
    if spec is not None and not finite_weights(spec.tensors):
        refused = [(k, o) for k, o in refused
                   if k == "read" or not isinstance(o.error, engine.ModelError)]
    if refused:
        k, o = refused[0]
        r.find("valid-rejected", f"{k} refused a valid file: {type(o.error).__name__}: "
               f"{str(o.error)[:200]}")
