"""The .pnn container: spec in docs/FORMAT.md. Knows nothing of training or kernels."""

from formats.tensors import CodebookTensor, code_dtype, from_dense_codes

__all__ = ["CodebookTensor", "code_dtype", "from_dense_codes"]
