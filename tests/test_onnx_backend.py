"""onnx's own backend test cases (its node cases and the PyTorch-converted / -operator models)
through import_onnx, a .pnn file and engine.load, on the Numba and the NumPy backend: the
harness and the rules for what is run are in tests/onnx_backend.py, the per-op table in
docs/ONNX.md."""

import pytest

pytest.importorskip("onnx")

from tests.onnx_backend import backend_test_classes  # noqa: E402

globals().update(backend_test_classes(__name__))
