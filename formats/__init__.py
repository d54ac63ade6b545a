"""The .pnn container: spec in docs/FORMAT.md. Knows nothing of training or kernels.

    formats.write(path, metadata, tensors) -> size      # atomic, deterministic
    with formats.open(path) as f:                       # validates header, table, metadata
        f.metadata, f.tensor_names, f.info(name), f.tensor(name), f.tensors()
"""

from formats.constants import VERSION_MAJOR, VERSION_MINOR
from formats.errors import (
    BadMagicError,
    ChecksumError,
    FormatError,
    LayoutError,
    TruncatedError,
    UnsupportedVersionError,
)
from formats.reader import PnnFile, TensorInfo
from formats.reader import open_pnn as open  # formats.open(path), like builtins.open
from formats.tensors import CodebookTensor, code_dtype, from_dense_codes, index_dtype
from formats.writer import atomic_write, write

__all__ = [
    "BadMagicError",
    "ChecksumError",
    "CodebookTensor",
    "FormatError",
    "LayoutError",
    "PnnFile",
    "TensorInfo",
    "TruncatedError",
    "UnsupportedVersionError",
    "VERSION_MAJOR",
    "VERSION_MINOR",
    "atomic_write",
    "code_dtype",
    "from_dense_codes",
    "index_dtype",
    "open",
    "write",
]
