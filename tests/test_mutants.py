"""Structure-aware mutants of .pnn files (tests/fuzz/mutants/) in the default test run.

The property test draws a valid model and one mutation of it through hypothesis and asserts the
oracle: every target either raises an expected error or succeeds, and a success decodes to
exactly what the file says (an independent decoder) and runs to what the ops' reference
functions compute, within 1 s and 64 MiB (non-finite divergences, IEEE corner cases of NaN / inf
weights or overflowing activations, are reported by the CLI but are not failures here).
`test_the_oracle_reports_a_planted_fault` keeps the oracle honest: a target with a planted
fault must be reported in its class. The named tests below pin what the mutant runs found
(tests/fuzz/MUTANTS.md), each fixed since.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
import tracemalloc
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `pytest` without `python -m`: make `tests.fuzz` importable
    sys.path.insert(0, str(ROOT))

import engine  # noqa: E402
import formats  # noqa: E402
from engine.ir import Graph, Node  # noqa: E402
from engine.kernels import _jit  # noqa: E402
from formats import constants as C  # noqa: E402
from formats.writer import assemble  # noqa: E402
from tests.fuzz import targets  # noqa: E402
from tests.fuzz.mutants.draw import RandomDraw, draw_model  # noqa: E402
from tests.fuzz.mutants.driver import warm_numba  # noqa: E402
from tests.fuzz.mutants.measure import MEM_LIMIT, TIME_LIMIT, MiB  # noqa: E402
from tests.fuzz.mutants.mutations import Mutant, make, mutant_cases  # noqa: E402
from tests.fuzz.mutants.oracle import FINDING_CLASSES, check  # noqa: E402
from tests.fuzz.mutants.reference import reference_forward  # noqa: E402

BACKENDS = ["numpy"] + (["numba"] if _jit.HAVE_NUMBA else [])
# every finding class fails a test but IEEE corner cases of NaN / inf weights or activations
FAILURES = tuple(c for c in FINDING_CLASSES if c != "nonfinite-divergence")


@pytest.fixture(scope="module")
def warm():
    """Numba kernels compiled (or loaded from the cache) before any timed mutant."""
    warm_numba()


# ---- the property test ----------------------------------------------------------------------


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.function_scoped_fixture])
@given(case=mutant_cases())
def test_mutants_are_refused_or_verified(case, tmp_path_factory, warm):
    model, mutant = case
    path = str(tmp_path_factory.mktemp("mutant") / "m.pnn")
    r = check(model, mutant, path, BACKENDS)
    bad = [(cls, line) for cls, line, _ in r.findings if cls in FAILURES]
    assert not bad, (f"{bad}\nmutation: {mutant.detail}\nmodel: {model.summary}\n"
                         + "\n".join(tb for _, _, tb in r.findings if tb))


def test_valid_models_load_and_match_the_reference(tmp_path, warm):
    """The generator's models (no mutation) load, decode exactly, and run to the reference."""
    path = str(tmp_path / "m.pnn")
    for i in range(60):
        case = draw_model(RandomDraw(random.Random(f"valid:{i}")))
        control = Mutant(case.blob, ["control"], "none", True, True)
        r = check(case, control, path, BACKENDS, i)
        assert r.outcome == "loaded-equal" and not r.findings, (i, r.findings, case.summary)


def test_cli_mutants_are_reproducible_and_clean(tmp_path, warm):
    """The CLI's driver path: mutant i of a seed is the same every time, and a short run of
    them meets the oracle."""
    a, b = make(3, 17)[1], make(3, 17)[1]
    assert a.blob == b.blob and a.detail == b.detail
    path = str(tmp_path / "m.pnn")
    outcomes = set()
    for i in range(80):
        case, mutant = make(3, i)
        r = check(case, mutant, path, BACKENDS, i)
        outcomes.add(r.outcome)
        bad = [(c, ln) for c, ln, _ in r.findings if c in FAILURES]
        assert not bad, (i, bad, mutant.detail)
    assert {"loaded-equal", "FormatError/LayoutError"} <= outcomes


def _wrong_code(tensors: dict) -> dict:
    """The first codebook tensor with a nonzero, its first code (or codebook entry) changed."""
    name, t = next((k, v) for k, v in tensors.items()
                   if isinstance(v, formats.CodebookTensor) and v.nnz)
    codes, book = t.codes.copy(), t.codebook.copy()
    if t.codebook.shape[-1] > 1:
        codes[0] = (int(codes[0]) + 1) % t.codebook.shape[-1]
    else:
        book.reshape(-1)[0] += 1
    wrong = dict(tensors)
    wrong[name] = formats.CodebookTensor(t.shape, t.indptr, t.indices, codes, book, t.scale,
                                         t.bits)
    return wrong


def _int32_indices(tensors: dict) -> dict:
    """The same values with int32 column indices where formats.index_dtype says uint16."""
    return {k: formats.CodebookTensor(v.shape, v.indptr, v.indices.astype(np.int32), v.codes,
                                      v.codebook, v.scale, v.bits)
            if isinstance(v, formats.CodebookTensor) else v for k, v in tensors.items()}


def _busy(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def _planted_read(fault: str, read):
    def faulty(path):
        if fault == "wrong-code":
            return _wrong_code(read(path))
        if fault == "index-dtype":
            return _int32_indices(read(path))
        if fault == "refuse":
            raise formats.LayoutError("planted refusal", path=path)
        if fault == "allocate":
            big = np.ones(80 * MiB // 8)  # 80 MiB live at once: over the 64 MiB ceiling
            return read(path) if big.size else None
        if fault == "spin":
            _busy(TIME_LIMIT + 0.1)
        if fault == "ignore-damage":
            return {}
        return read(path)
    return faulty


def _planted_run(fault: str, run):
    def faulty(path, backend="numpy"):
        y = run(path, backend)
        if fault == "off-output":
            return y + np.float32(0.1)
        if fault == "index-error":
            raise IndexError("planted")
        return y
    return faulty


@pytest.fixture(scope="module")
def control_case(tmp_path_factory):
    """A generated model that runs and holds a codebook tensor with nonzeros."""
    path = str(tmp_path_factory.mktemp("control") / "m.pnn")
    for i in range(100):
        case = draw_model(RandomDraw(random.Random(f"planted:{i}")))
        if any(isinstance(t, formats.CodebookTensor) and t.nnz for t in case.tensors.values()):
            targets.write(path, case.blob)
            y = targets.load_and_run(path)
            # small activations: the output tolerance (proportional to them) stays tight
            if y is not None and reference_forward(case.metadata, case.tensors)[1] < 100:
                return case
    raise AssertionError("no runnable generated model with a codebook tensor")


@pytest.mark.parametrize("fault, finding", [
    ("wrong-code", "silent-change"), ("index-dtype", "silent-change"),
    ("off-output", "silent-change"), ("index-error", "crash"), ("allocate", "over-memory"),
    ("refuse", "valid-rejected"), ("spin", "hang"), ("ignore-damage", "accepted-invalid")])
def test_the_oracle_reports_a_planted_fault(tmp_path, monkeypatch, control_case, warm,
                                            fault, finding):
    """The oracle is not blind: a target with a planted fault is reported in its class (and
    the unfaulted control is clean). `ignore-damage` reads a file whose header CRC is broken."""
    blob = control_case.blob
    if fault == "ignore-damage":
        blob = blob[:36] + bytes([blob[36] ^ 1]) + blob[37:]
    mutant = Mutant(blob, ["control"], "planted", fault != "ignore-damage",
                    fault != "ignore-damage")
    path = str(tmp_path / "m.pnn")
    if fault != "ignore-damage":
        assert not check(control_case, mutant, path, ["numpy"]).findings
    monkeypatch.setattr(targets, "read_pnn", _planted_read(fault, targets.read_pnn))
    monkeypatch.setattr(targets, "load_and_run", _planted_run(fault, targets.load_and_run))
    r = check(control_case, mutant, path, ["numpy"])
    assert finding in {cls for cls, _, _ in r.findings}, r.findings


# ---- what the 100,000-mutant run found ------------------------------------------------------


def _file(tmp_path, sections, metadata: dict | None = None) -> str:
    """A .pnn of `sections` (name -> tensor section bytes) with a tensor list for them."""
    doc = {"metadata": metadata or {}, "tensors": [
        {"name": n, "section": i + 1} for i, n in enumerate(sections)]}
    meta = zlib.compress(json.dumps(doc, separators=(",", ":")).encode(), 9)
    blob = assemble([(C.SECTION_METADATA_ZLIB, meta)]
                    + [(C.SECTION_TENSOR, b) for b in sections.values()])
    path = tmp_path / "finding.pnn"
    path.write_bytes(blob)
    return str(path)


def _empty_codebook_section(name: str, rows: int) -> bytes:
    """A codebook tensor of shape (rows,) with no nonzeros: 70 bytes whatever `rows` is."""
    raw = name.encode()
    return (C.TENSOR_NAME_LEN.pack(len(raw)) + raw
            + C.TENSOR_HEAD.pack(C.ENCODING_CODEBOOK, 1, 0) + C.DIM.pack(rows)
            + C.CODEBOOK_HEAD.pack(1, C.MODE_SHARED, 1, 0, 1, 0, 0, 0, 0)
            + np.float32(1).tobytes() + bytes([0]) + bytes([0, 0]))


def _peak(fn) -> tuple[int, object]:
    tracemalloc.start()
    try:
        try:
            out = fn()
        except (formats.FormatError, engine.EngineError, MemoryError) as e:
            out = e
        return tracemalloc.get_traced_memory()[1], out
    finally:
        tracemalloc.stop()


def test_reader_memory_does_not_grow_with_the_rows_of_a_codebook_tensor(tmp_path):
    """Found by the mutants: formats/reader.py allocated indptr (rows + 1 int64) and a bincount
    of `rows` for any codebook tensor, so a 230-byte file of shape (2**31 - 1,) asked for 32
    GiB (MemoryError) and a 1-D weight mutated to dims[0] = 2**24 cost 256 MiB. Since the
    reader's rows bound (constants.ROWS_PER_BYTE) it is refused, cheaply."""
    for rows in (1 << 23, (1 << 31) - 1):
        path = _file(tmp_path, {"t": _empty_codebook_section("t", rows)})
        size = os.path.getsize(path)
        assert size < 300

        def decode(path=path):
            with formats.open(path) as f:
                return f.tensor("t")
        peak, out = _peak(decode)
        assert isinstance(out, formats.FormatError), out
        assert peak < MEM_LIMIT, f"{peak / MiB:.0f} MiB to decode a {size}-byte file"
        peak, out = _peak(lambda path=path: engine.load(path, backend="numpy",
                                                        **targets.LIMITS))
        assert isinstance(out, (formats.FormatError, engine.ModelError)), out
        assert peak < MiB


def _metadata_file(tmp_path, producer_json: bytes) -> str:
    doc = (b'{"metadata":{"graph":{"input":{"name":"x","shape":[1,1,1]},"nodes":[],'
           b'"output":"x"},"producer":' + producer_json + b'},"tensors":[]}')
    assert len(doc) <= C.MAX_METADATA_BYTES
    path = tmp_path / "meta.pnn"
    path.write_bytes(assemble([(C.SECTION_METADATA_ZLIB, zlib.compress(doc, 9))]))
    return str(path)


def test_metadata_json_cost_is_bounded(tmp_path):
    """Found by the mutants: the reader parsed up to 16 MiB of metadata JSON with json.loads and
    nothing bounded what that built: the 14 KB file of a 16 MiB '[[],[],...]' took 378 MiB
    (tracemalloc), 0.4-0.8 GiB RSS and 2-5 s to open. Since formats/metadata.py (values and
    depth counted on the text first) it is a LayoutError, cheaply."""
    for n in (1_000_000, (C.MAX_METADATA_BYTES - 200) // 3):
        path = _metadata_file(tmp_path, b"[" + b"[]," * n + b"[]]")
        size = os.path.getsize(path)
        t0 = time.perf_counter()
        peak, out = _peak(lambda path=path: formats.open(path))
        assert isinstance(out, formats.FormatError), out
        assert peak < MEM_LIMIT, f"{peak / MiB:.0f} MiB to open a {size}-byte file"
        assert time.perf_counter() - t0 < TIME_LIMIT


def _at_depth(n: int, fn):
    return fn() if n == 0 else _at_depth(n - 1, fn)


def _depth() -> int:
    f, n = sys._getframe(), 0
    while f is not None:
        f, n = f.f_back, n + 1
    return n


@pytest.mark.parametrize("margin", [40, 200, 600])
def test_metadata_acceptance_does_not_depend_on_the_callers_stack(tmp_path, margin):
    """Found by the mutants: the reader had no nesting limit of its own and turned json.loads'
    RecursionError into a LayoutError, so metadata nested ~950 deep opened when formats.open
    was called from a shallow stack and was refused from a deeper one (load_and_run refused a
    mutant that a direct engine.load accepted). The verdict must not depend on the stack."""
    depth = max(1, sys.getrecursionlimit() - _depth() - margin)
    path = _metadata_file(tmp_path, b"[" * depth + b"]" * depth)

    def outcome():
        try:
            formats.open(path)
            return "opened"
        except formats.FormatError as e:
            return type(e).__name__
    assert _at_depth(0, outcome) == _at_depth(100, outcome)


def _scaled_linear_file(tmp_path, scale) -> tuple[str, np.ndarray]:
    """flatten -> linear whose weight is a scaled codebook (2, 3); row 1 has no nonzeros."""
    w = formats.CodebookTensor(
        shape=(2, 3), indptr=np.array([0, 2, 2], np.int64), indices=np.array([0, 2], np.int32),
        codes=np.array([0, 1], np.uint8), codebook=np.array([1.0, 2.0], np.float32),
        scale=np.array(scale, np.float32), bits=1)
    bias = np.array([0.5, 0.25], np.float32)
    graph = Graph(nodes=[Node("flatten", "f", ["x"], ["h"]),
                         Node("linear", "fc", ["h"], ["y"], {}, {"weight": "w", "bias": "b"})],
                  input_name="x", input_shape=(3, 1, 1), output_name="y",
                  tensors={"w": w, "b": bias})
    path = tmp_path / "scaled.pnn"
    formats.write(path, graph.to_metadata(), graph.tensors)
    y, _, _ = reference_forward(json.loads(json.dumps(graph.to_metadata())), graph.tensors)
    return str(path), y


@pytest.mark.parametrize("scale", [[1.0, math.inf], [1.0, math.nan], [3e38, 1.0]])
def test_backends_agree_on_a_non_finite_scale(tmp_path, scale):
    """Found by the mutants: the numba kernels multiply each output by its scale after the sum,
    so an output channel with no nonzeros and an inf / NaN scale gave NaN on numba where its
    weight row is exactly zero and numpy gave the bias. Since planner.check_finite such a
    weight is a ModelError on every backend; whatever the policy, the backends must agree."""
    path, want = _scaled_linear_file(tmp_path, scale)
    got = {b: targets.load_and_run(path, b) for b in BACKENDS}
    assert all(v is None for v in got.values()) or all(
        v is not None and np.array_equal(v, want, equal_nan=True) for v in got.values()), got


def _overflow_file(tmp_path, where: str, value) -> str:
    g = Graph(nodes=[Node("relu", "r", ["x"], ["y"])], input_name="x", input_shape=(1, 1, 1),
              output_name="y", tensors={})
    meta = g.to_metadata()
    if where == "shape":
        meta["graph"]["input"]["shape"] = [1, value, 1]
    else:
        meta["preprocess"][where] = value
    path = tmp_path / f"{where}.pnn"
    formats.write(path, meta, {})  # a valid file: JSON integers have no range
    return str(path)


@pytest.mark.parametrize("where, value", [("scale", 2**1024), ("mean", [2**1024]),
                                          ("std", [-(2**1024)]), ("shape", 10**400)])
def test_huge_integers_in_the_metadata_are_model_errors(tmp_path, where, value):
    """Found by the mutants (a 4300-digit literal): engine/ir.py _number called math.isfinite()
    on an integer >= 2**1024 (OverflowError), and an input shape of 10**400 reached
    engine/budget.py human(), which divided it as a float (OverflowError) while formatting the
    ModelError. Both escaped engine.load; they must be ModelErrors."""
    path = _overflow_file(tmp_path, where, value)
    with pytest.raises(engine.ModelError):
        engine.load(path, backend="numpy")


def test_the_targets_own_input_batch_is_not_an_engine_allocation(tmp_path):
    """A harness false positive of the first runs: a model of 64 MiB per image (no nodes,
    input shape (1, 2**24, 1)) loads, and load_and_run then makes its batch of 2 (128 MiB)
    before the engine refuses to run it (over max_memory). The ceiling counts the engine."""
    g = Graph(nodes=[], input_name="x", input_shape=(1, 1 << 24, 1), output_name="x",
              tensors={})
    path = tmp_path / "big-input.pnn"
    formats.write(path, g.to_metadata(), {})
    case = draw_model(RandomDraw(random.Random("big-input")))
    mutant = Mutant(path.read_bytes(), ["m.input_shape"], "input (1, 2**24, 1)", False, False)
    r = check(case, mutant, str(tmp_path / "m.pnn"), ["numpy"])
    assert r.outcome == "InputError" and r.peak > 2 * MEM_LIMIT, (r.outcome, r.peak)
    assert not r.findings, r.findings
