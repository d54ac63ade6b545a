"""pocketnn as an ONNX backend (`onnx.backend.base.Backend`), run on onnx's own test cases.

prepare(model) decides whether a case is one we can run: every op has an import rule, the
first graph input is a float32 (N, C, H, W) image and there is one output; anything else is
skipped, saying why. run(inputs) turns the other graph inputs (weights some cases pass as
inputs) into initializers with the case's values, imports the model, writes it as a .pnn file
and runs it through engine.load on the chosen engine backend. onnx's runner
(`onnx.backend.test.BackendTest`) compares the output with the case's expected one.

Cases whose ops we support but that use what the graph IR cannot express are in REFUSED:
the importer must refuse them with that text (they are reported as skipped, with the
importer's message); one that starts importing fails, so the list stays honest. Cases the
engine refuses for now (ENGINE_REFUSES) are skipped with its message while it does, and run
as soon as it does not.

    python tests/onnx_backend.py                      # print the per-op table (docs/ONNX.md)
    python tests/onnx_backend.py --write docs/ONNX.md # and put it in place
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
import tempfile
import time
import unittest
import warnings
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.base import Backend, BackendRep

if __name__ == "__main__":  # run as a script from anywhere
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import engine  # noqa: E402
import formats  # noqa: E402
from compress.importers.onnx_import import OnnxImportError, import_onnx  # noqa: E402
from compress.importers.onnx_ops import RULES  # noqa: E402

# The categories of onnx's backend test data we run: 'Real' (ImageNet models whose weights are
# ConstantOfShape fills) and 'Simple' (sequences, strings) are left out.
CATEGORIES = ("Node", "PyTorchConverted", "PyTorchOperator")
ENGINE_BACKENDS = ("numba", "numpy")

# case -> text the importer's refusal must contain
REFUSED = {
    "test_averagepool_2d_dilations": "dilations",
    "test_flatten_axis0": "merges the batch",
    "test_flatten_axis2": "merges the batch",
    "test_flatten_axis3": "merges the batch",
    "test_flatten_negative_axis2": "merges the batch",
    "test_flatten_negative_axis1": "merges the batch",
    "test_flatten_negative_axis4": "merges the batch",
    "test_gather_0": "must be a constant",
    "test_gather_1": "must be a constant",
    "test_matmul_4d": "only (N, K) @ constant",
    "test_matmul_bcast": "only (N, K) @ constant",
    "test_matmul_4d_1d": "only (N, K) @ constant",
    "test_squeeze": "batch axis",
}


# case -> text of the engine's refusal (ModelError) for ONNX semantics the engine does not run
# (yet): skipped with the engine's message while it refuses, run and compared once it does not.
ENGINE_REFUSES = {
    "test_maxpool_2d_pads": "more than half the kernel",
    "test_averagepool_2d_pads": "more than half the kernel",
    "test_averagepool_2d_pads_count_include_pad": "more than half the kernel",
}


def applicable(model: onnx.ModelProto) -> str | None:
    """Why the engine cannot run this case at all (None: it is one we try)."""
    g = model.graph
    ops = sorted({n.op_type for n in g.node if n.domain in ("", "ai.onnx")} - set(RULES)
                 | {f"{n.domain}.{n.op_type}" for n in g.node if n.domain not in ("", "ai.onnx")})
    if ops:
        return f"op{'s' if len(ops) > 1 else ''} {', '.join(ops)} not supported"
    inits = {t.name for t in g.initializer}
    inputs = [i for i in g.input if i.name not in inits]
    if not inputs:
        return "no graph input"
    t = inputs[0].type.tensor_type
    if t.elem_type != onnx.TensorProto.FLOAT:
        return f"input is {onnx.TensorProto.DataType.Name(t.elem_type).lower()}, not float32"
    if len(t.shape.dim) != 4:
        return f"input is {len(t.shape.dim)}-d, not an (N, C, H, W) image"
    if len(g.output) != 1:
        return f"{len(g.output)} outputs"
    return None


def bake(model: onnx.ModelProto, inputs: list) -> tuple[onnx.ModelProto, np.ndarray]:
    """The model with every runtime input after the first made an initializer holding the
    case's value, and the first input's array."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    inits = {t.name for t in g.initializer}
    runtime = [i for i in g.input if i.name not in inits]
    for vi, value in zip(runtime[1:], inputs[1:], strict=True):
        g.initializer.append(numpy_helper.from_array(np.asarray(value), vi.name))
    keep = [runtime[0]] + [i for i in g.input if i.name in inits]
    del g.input[:]
    g.input.extend(keep)
    return model, np.asarray(inputs[0])


class PocketnnRep(BackendRep):
    def __init__(self, model, engine_backend: str, refused: str | None = None,
                 engine_refuses: str | None = None):
        self.model, self.engine_backend = model, engine_backend
        self.refused, self.engine_refuses = refused, engine_refuses

    def run(self, inputs, **kwargs):
        model, x = bake(self.model, list(inputs))
        try:
            graph = import_onnx(model)
        except OnnxImportError as e:
            if self.refused and self.refused in str(e):
                raise unittest.SkipTest(f"refused: {str(e).split(': ', 1)[1]}") from None
            if self.engine_refuses and self.engine_refuses in str(e):  # import checks that too
                raise unittest.SkipTest(f"engine refuses: {str(e).split(': ', 2)[2]}") from None
            raise
        if self.refused:
            raise AssertionError(f"expected the importer to refuse it ({self.refused!r}), but "
                                 f"it imported: take it out of REFUSED")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "case.pnn"
            formats.write(path, graph.to_metadata(), graph.tensors)
            try:
                m = engine.load(path, backend=self.engine_backend)
            except engine.ModelError as e:
                if self.engine_refuses and self.engine_refuses in str(e):
                    raise unittest.SkipTest(f"engine refuses: {str(e).split(': ', 1)[1]}") \
                        from None
                raise
            return [m.run(x)]


def backend_class(engine_backend: str) -> type[Backend]:
    class PocketnnBackend(Backend):
        @classmethod
        def prepare(cls, model, device="CPU", refused=None, engine_refuses=None, **kwargs):
            super().prepare(model, device, **kwargs)  # onnx.checker
            why = applicable(model)
            if why:
                raise unittest.SkipTest(why)
            return PocketnnRep(model, engine_backend, refused, engine_refuses)

        @classmethod
        def supports_device(cls, device):
            return device == "CPU"

    PocketnnBackend.__name__ = f"Pocketnn{engine_backend.capitalize()}Backend"
    return PocketnnBackend


_TEST_KWARGS = {**{k: {"refused": v} for k, v in REFUSED.items()},
                **{k: {"engine_refuses": v} for k, v in ENGINE_REFUSES.items()}}
_LOADED: dict = {}  # load_model_tests' answers, per process: building the node cases takes 6 s


def _load_model_tests(data_dir=None, kind=None):
    from onnx.backend.test.loader import DATA_DIR, load_model_tests

    key = (data_dir or DATA_DIR, kind)
    if key not in _LOADED:
        with warnings.catch_warnings():  # the cases' own NumPy casts warn while building
            warnings.simplefilter("ignore", RuntimeWarning)
            _LOADED[key] = load_model_tests(data_dir or DATA_DIR, kind)
    return _LOADED[key]


@contextlib.contextmanager
def _cases_loaded_once():
    """onnx's runner builds every case per BackendTest; ours share one load."""
    import onnx.backend.test.runner as runner

    real = runner.load_model_tests
    runner.load_model_tests = _load_model_tests
    try:
        yield
    finally:
        runner.load_model_tests = real


def backend_test_classes(module: str, everything: bool = False) -> dict[str, type]:
    """unittest TestCase classes per engine backend and category, named e.g.
    NumbaOnnxBackendNodeModelTest, for a test module's globals(). Unless `everything`, only
    the cases the harness tries (see applicable) on the CPU device: the thousands of others
    would only be skipped (docs/ONNX.md counts them, from a run with everything=True)."""
    from onnx.backend.test import BackendTest

    keep = None if everything else {f"{case}_cpu" for case, model in _cases().items()
                                     if applicable(model) is None}
    out = {}
    with _cases_loaded_once():
        for eb in ENGINE_BACKENDS:
            suite = BackendTest(backend_class(eb), module, test_kwargs=_TEST_KWARGS)
            for name, case in suite.test_cases.items():
                category = re.sub(r"^OnnxBackend(\w+)ModelTest$", r"\1", name)
                if category not in CATEGORIES:
                    continue
                tests = {k: v for k, v in vars(case).items()
                         if k.startswith("test_") and (keep is None or k in keep)}
                if tests:
                    cls_name = f"{eb.capitalize()}{name}"
                    out[cls_name] = type(cls_name, (unittest.TestCase,),
                                         {"__module__": module, **tests})
    return out


def _cases() -> dict[str, onnx.ModelProto]:
    """Every case of our categories: name -> model."""
    models = {}
    for kind in ("node", "pytorch-converted", "pytorch-operator"):
        for case in _load_model_tests(kind=kind):
            models[case.name] = case.model or onnx.load(Path(case.model_dir) / "model.onnx")
    return models


# ---- the table in docs/ONNX.md -----------------------------------------------------------------


class _Recorder(unittest.TestResult):
    def __init__(self):
        super().__init__()
        self.outcome = {}  # (class, test) -> ("pass" | "skip" | "fail", detail)

    def _key(self, test):
        return type(test).__name__, test._testMethodName

    def addSuccess(self, test):
        self.outcome[self._key(test)] = ("pass", "")

    def addSkip(self, test, reason):
        self.outcome[self._key(test)] = ("skip", reason)

    def addFailure(self, test, err):
        self.outcome[self._key(test)] = ("fail", self._exc_info_to_string(err, test))

    addError = addFailure


def _case_ops() -> dict[str, set[str]]:
    """case name -> the ONNX ops in its graph (Constant only where it is the op tested)."""
    ops = {}
    for name, model in _cases().items():
        found = {n.op_type for n in model.graph.node}
        ops[name] = found - {"Constant"} or found
    return ops


def survey() -> tuple[str, dict]:
    """Run every case on both engine backends; the markdown table and the raw outcomes."""
    classes = backend_test_classes(__name__, everything=True)
    suite = unittest.TestSuite(unittest.defaultTestLoader.loadTestsFromTestCase(c)
                               for c in classes.values())
    result = _Recorder()
    start = time.perf_counter()
    suite.run(result)
    seconds = time.perf_counter() - start
    per_case = defaultdict(dict)  # case -> engine backend -> (outcome, detail)
    for (cls, test), outcome in result.outcome.items():
        case = re.sub(r"_cpu$", "", test)
        if test.endswith("_cuda"):
            continue
        per_case[case][cls.split("Onnx")[0].lower()] = outcome
    return _markdown(per_case, _case_ops(), seconds), per_case


def _verdict(outcomes: dict) -> tuple[str, str]:
    kinds = {k for k, _ in outcomes.values()}
    if "fail" in kinds:
        bad = [eb for eb, (k, _) in outcomes.items() if k == "fail"]
        return "fail", f"failed on {', '.join(bad)}"
    if kinds == {"pass"} and len(outcomes) == len(ENGINE_BACKENDS):
        return "pass", ""
    reasons = sorted({d for k, d in outcomes.values() if k == "skip"})
    return "skip", reasons[0] if reasons else "not run"


def _markdown(per_case: dict, case_ops: dict, seconds: float) -> str:
    rows = defaultdict(lambda: {"cases": 0, "other": 0, "applicable": 0, "passed": 0,
                                "failed": 0, "skipped": Counter()})
    refused = defaultdict(list)  # "refused" | "engine refuses" -> [(case, message)]
    failed = []
    for case, outcomes in sorted(per_case.items()):
        verdict, detail = _verdict(outcomes)
        kind = next((k for k in ("refused", "engine refuses") if detail.startswith(k)), None)
        tried = verdict != "skip" or kind is not None
        if kind:
            refused[kind].append((case, detail.removeprefix(kind + ": ")))
        if verdict == "fail":
            failed.append((case, detail))
        for op in case_ops.get(case, ()):
            if op not in RULES:
                continue
            row = rows[op]
            row["cases"] += 1
            row["applicable"] += tried
            row["passed"] += verdict == "pass"
            row["failed"] += verdict == "fail"
            if verdict == "skip" and re.match(r"ops? .*not supported$", detail):
                row["other"] += 1
            elif verdict == "skip":
                row["skipped"][_short_reason(detail)] += 1
    lines = ["| ONNX op | cases with it | ... and an op we lack | applicable | passed (numba and "
             "numpy) | the rest: why not (cases) |",
             "|---|---:|---:|---:|---:|---|"]
    for op in sorted(RULES):
        row = rows.get(op)
        if row is None:
            lines.append(f"| {op} | 0 | 0 | 0 | 0 | no case in onnx's test data |")
            continue
        why = "; ".join(f"{r} ({n})" for r, n in row["skipped"].most_common())
        passed = f"{row['passed']}" + (f" ({row['failed']} FAILED)" if row["failed"] else "")
        lines.append(f"| {op} | {row['cases']} | {row['other']} | {row['applicable']} | "
                     f"{passed} | {why} |")
    total = Counter(_verdict(o)[0] for o in per_case.values())
    lines += ["", f"{len(per_case)} cases in the categories {', '.join(CATEGORIES)}: "
                  f"{total['pass']} passed on both engine backends, {total['fail']} failed, "
                  f"{total['skip']} skipped ({seconds:.0f} s for both backends)."]
    for kind, title in (("refused", "Applicable cases the importer refuses (the graph IR "
                                    "cannot express them)"),
                        ("engine refuses", "Applicable cases the engine refuses (for now)")):
        if refused[kind]:
            lines += ["", f"{title}:", ""]
            lines += [f"- `{case}`: {message}" for case, message in refused[kind]]
    if failed:
        lines += ["", "FAILED:", ""] + [f"- `{c}`: {d}" for c, d in failed]
    return "\n".join(lines) + "\n"


def _short_reason(detail: str) -> str:
    if detail.startswith("refused"):
        return "refused by the importer (below)"
    if detail.startswith("engine refuses"):
        return "refused by the engine (below)"
    detail = re.sub(r"^input is (\d)-d, not an \(N, C, H, W\) image$", r"input \1-d", detail)
    return re.sub(r"^input is \w+, not float32$", "input not float32", detail)


def write_block(path: str | Path, name: str, text: str) -> None:
    """Replace what is between <!-- NAME:begin --> and <!-- NAME:end --> in a markdown file."""
    path = Path(path)
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    doc = path.read_text()
    if begin not in doc or end not in doc:
        raise SystemExit(f"{path}: no {begin} ... {end} markers")
    head, rest = doc.split(begin, 1)
    path.write_text(head + begin + "\n" + text.rstrip("\n") + "\n" + end + rest.split(end, 1)[1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", metavar="MD", help="put the table between the markers there")
    args = p.parse_args(argv)
    table, per_case = survey()
    print(table)
    if args.write:
        write_block(args.write, "backend-table", table)
    return 1 if any(_verdict(o)[0] == "fail" for o in per_case.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
