"""Replay the fuzzers' corpus (tests/fuzz/corpus/TARGET/*) through the targets, without atheris.

Every file must return or raise one of tests.fuzz.targets.EXPECTED, as it did when the fuzzer
kept it: anything else is a regression. The time bound here (10 s a file) is a safety net
against hangs only; when last measured every file took well under 1 s (tests/fuzz/README.md).
The peak of traced allocations (tracemalloc: Python objects and NumPy buffers) must stay under
the memory headroom the fuzzers allow (harness.RSS_HEADROOM_MB). Files of a finding still open
(harness.KNOWN_FINDINGS) are skipped with its description: remove the entry once it is fixed.
"""

import os
import time
import tracemalloc

import pytest

from tests.fuzz import harness, mutators

CORPUS = harness.CORPUS
SAFETY_SECONDS = 10.0
PEAK_BYTES = harness.RSS_HEADROOM_MB << 20


def _files():
    out = []
    for target in harness.TARGETS:
        d = os.path.join(CORPUS, target)
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else ():
            out.append(pytest.param(target, os.path.join(d, name), id=f"{target}/{name}"))
    return out


FILES = _files()


@pytest.fixture(scope="module")
def backends():
    return harness.default_backends()


def test_corpus_is_there():
    for target in harness.TARGETS:
        assert any(p.values[0] == target for p in FILES), f"no corpus files for {target}"


def _measured(target, data, workdir, backends):
    """(known finding or None, seconds, peak traced bytes) of one replay."""
    tracemalloc.start()
    t0 = time.perf_counter()
    try:
        known = harness.run_one(target, data, workdir, backends if target == "model" else ())
        return known, time.perf_counter() - t0, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


# Hostile weights and headers make NumPy warn (overflow, NaN, Python 2 .npy headers): expected.
@pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore::UserWarning")
@pytest.mark.parametrize(("target", "path"), FILES)
def test_replay(target, path, tmp_path, backends):
    with open(path, "rb") as f:
        data = f.read()
    known, seconds, peak = _measured(target, data, str(tmp_path), backends)
    if known:
        pytest.skip(f"known finding {known}: {harness.KNOWN_FINDINGS[known][0]}")
    if seconds >= SAFETY_SECONDS or peak >= PEAK_BYTES:
        # The first call of a Numba kernel signature in a process compiles it (or loads it from
        # Numba's cache): seconds and a lot of Python objects. Only a second slow run counts.
        known, seconds, peak = _measured(target, data, str(tmp_path), backends)
    assert seconds < SAFETY_SECONDS, f"{seconds:.1f} s"
    assert peak < PEAK_BYTES, f"peak of traced allocations {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("target", harness.TARGETS)
def test_mutators_keep_within_max_size(target):
    """The CI fuzzing relies on the structure-aware mutators; a smoke test of them on the corpus
    with a stand-in for libFuzzer's byte mutation."""
    mutate = mutators.mutate_input if target == "input" else mutators.mutate_pnn
    files = [p.values[1] for p in FILES if p.values[0] == target][:20]

    def flip(data: bytes, max_size: int) -> bytes:
        b = bytearray(data[:max_size])
        if b:
            b[len(b) // 2] ^= 0x5A
        return bytes(b)

    for i, path in enumerate(files * 10):
        with open(path, "rb") as f:
            data = f.read()
        out = mutate(data, harness.MAX_LEN, i, flip)
        assert isinstance(out, bytes) and len(out) <= harness.MAX_LEN


MODEL_FILES = [p for p in FILES if p.values[0] in ("pnn", "model")]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_engine_infer_on_every_corpus_model(capsys):
    """`python -m engine infer FILE` (in process, NumPy backend, the fuzzers' limits) on every
    .pnn of the corpus: it runs (exit 0: a valid model on the demo samples) or prints one line
    naming the file (exit 1; the model, or the bundled samples when a valid model takes
    another input shape). Never a traceback, never an internal error (exit 2)."""
    import engine.cli

    outcomes = {0: 0, 1: 0}
    for param in MODEL_FILES:
        path = param.values[1]
        code = engine.cli.main(["infer", path, "--backend", "numpy", "--max-memory", "64M",
                                "--max-macs", "1e8", "--json"])
        err = capsys.readouterr().err
        assert code in (0, 1), (path, err)
        if code == 1:
            lines = err.strip().splitlines()
            assert len(lines) == 1 and lines[0].startswith(
                (f"error: {path}: ", f"error: {engine.cli.DEMO_SAMPLES}: ")), (path, err)
        outcomes[code] += 1
    assert outcomes[1] > outcomes[0] > 0  # mostly hostile, some valid models


def test_engine_infer_as_a_process_on_the_findings():
    """The fuzzers' findings as a user meets them: a fresh process, exit 1, one line."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for param in MODEL_FILES:
        path = param.values[1]
        if not os.path.basename(path).startswith("finding-"):
            continue
        p = subprocess.run([sys.executable, "-m", "engine", "infer", path], cwd=root,
                           capture_output=True, text=True, timeout=120,
                           env=dict(os.environ, PYTHONPATH=root))
        assert p.returncode == 1 and "Traceback" not in p.stderr, p.stderr
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"error: {path}: "), p.stderr
