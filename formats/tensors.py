"""The in-memory form of a compressed weight, shared by compress (builds it), formats (stores it)
and engine (computes on it). Dense weights are plain float32 / float16 NumPy arrays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class CodebookTensor:
    """A weight stored as codebook indices at sparse positions (Deep Compression's form).

    Rows are output channels: a weight of shape (O, *rest) is an O x prod(rest) matrix in CSR.
    The value of nonzero j in row o is ``scale[o] * codebook[o or 0][codes[j]]``:
      - codebook (K,)   with scale None:  one codebook for the layer (the paper's method);
      - codebook (O, K) with scale None:  one codebook per output channel;
      - codebook (K,)   with scale (O,):  a per-channel scale times a shared codebook
        (what MobileNet-class nets need once BatchNorm is folded).
    Positions not listed are exactly zero. A dense-but-quantized weight is the same thing with
    every position listed.
    """

    shape: tuple[int, ...]    # (O, *rest)
    indptr: np.ndarray        # int64 (O + 1,): row o owns nonzeros indptr[o]:indptr[o+1]
    indices: np.ndarray       # uint16 or int32 (nnz,): column within the row, ascending
                              # within each row (index_dtype(row_size))
    codes: np.ndarray         # uint8 (bits <= 8) or uint16 (nnz,): index into the codebook
    codebook: np.ndarray      # float32 (K,) or (O, K)
    scale: np.ndarray | None  # float32 (O,) or None
    bits: int                 # width of a code; K <= 2**bits

    @property
    def rows(self) -> int:
        return int(self.shape[0])

    @property
    def row_size(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64))

    @property
    def size(self) -> int:
        return self.rows * self.row_size

    @property
    def nnz(self) -> int:
        return int(self.codes.shape[0])

    @property
    def density(self) -> float:
        return self.nnz / self.size if self.size else 0.0

    def values(self) -> np.ndarray:
        """float32 (nnz,): the value of each nonzero, ``scale[o] * codebook[o or 0][code]``
        (what a SciPy CSR matrix stores). O(nnz): never an (O, K) table."""
        rows = np.repeat(np.arange(self.rows), np.diff(self.indptr))
        codes = self.codes.astype(np.intp)
        book = np.asarray(self.codebook, dtype=np.float32)
        vals = book[rows, codes] if book.ndim == 2 else book[codes]
        if self.scale is not None:
            vals = vals * np.asarray(self.scale, dtype=np.float32)[rows]
        return vals.astype(np.float32, copy=False)

    def to_dense(self) -> np.ndarray:
        """float32 array of `shape`. For tests, references and training only: the engine's
        fast paths compute on the codes directly."""
        dense = np.zeros((self.rows, self.row_size), dtype=np.float32)
        rows = np.repeat(np.arange(self.rows), np.diff(self.indptr))
        dense[rows, self.indices] = self.values()
        return dense.reshape(self.shape)

    def validate(self) -> None:
        """Raise ValueError if the arrays do not describe a well-formed tensor. Vectorised:
        O(nnz + rows) NumPy work, no Python loop over rows."""
        if len(self.shape) < 1 or min(self.shape) < 0:
            raise ValueError(f"bad shape {self.shape}")
        o, n = self.rows, self.row_size
        if not 1 <= self.bits <= 16:
            raise ValueError(f"codebook bits must be in 1..16, got {self.bits}")
        ip = np.asarray(self.indptr)
        if ip.shape != (o + 1,) or ip.dtype.kind not in "iu" or ip[0] != 0 \
                or np.any(ip[1:] < ip[:-1]):
            raise ValueError("indptr must be (O+1,) integers, start at 0 and never decrease")
        nnz = int(ip[-1])
        if self.indices.shape != (nnz,) or self.codes.shape != (nnz,):
            raise ValueError(f"indices and codes must hold {nnz} entries")
        if self.indices.dtype.kind not in "iu" or self.codes.dtype not in (np.uint8, np.uint16):
            raise ValueError("indices must be integers and codes uint8 or uint16")
        if nnz and (int(self.indices.min()) < 0 or int(self.indices.max()) >= n):
            raise ValueError(f"column index out of range 0..{n - 1}")
        if nnz > 1:  # strictly ascending columns within each row: look at steps inside rows only
            inside = np.ones(nnz - 1, dtype=bool)
            starts = ip[1:-1]
            inside[starts[(starts > 0) & (starts < nnz)] - 1] = False
            steps = np.diff(self.indices.astype(np.int64))
            if np.any(steps[inside] <= 0):
                raise ValueError("columns not strictly ascending within a row")
        k = self.codebook.shape[-1] if self.codebook.ndim else 0
        if self.codebook.ndim not in (1, 2) or k > 2**self.bits or k < 1:
            raise ValueError(f"codebook must be (K,) or (O, K) with 1 <= K <= 2**bits, "
                             f"got {self.codebook.shape}")
        if self.codebook.ndim == 2 and self.codebook.shape[0] != o:
            raise ValueError("a per-channel codebook needs one row per output channel")
        if self.scale is not None and (self.codebook.ndim != 1 or self.scale.shape != (o,)):
            raise ValueError("scale must be (O,) and goes with a shared (K,) codebook")
        if nnz and int(self.codes.max()) >= k:
            raise ValueError(f"code out of range 0..{k - 1}")


def index_dtype(row_size: int) -> np.dtype:
    """The narrowest dtype for column indices within a row: uint16 where a row has at most
    65,536 columns (every conv and fc layer we know), else int32. The engine's kernels read
    these arrays as stored, so this is also their resident size."""
    return np.dtype(np.uint16 if row_size <= 1 << 16 else np.int32)


def code_dtype(bits: int) -> np.dtype:
    """The smallest unsigned dtype that holds a `bits`-wide code."""
    return np.dtype(np.uint8 if bits <= 8 else np.uint16)


def from_dense_codes(codes: np.ndarray, codebook: np.ndarray, bits: int,
                     scale: np.ndarray | None = None) -> CodebookTensor:
    """Build a CodebookTensor from a dense array of codes where -1 marks a pruned position."""
    codes = np.asarray(codes)
    o = codes.shape[0]
    flat = codes.reshape(o, int(np.prod(codes.shape[1:], dtype=np.int64)))  # -1 fails on size 0
    keep = flat >= 0
    indptr = np.zeros(o + 1, dtype=np.int64)
    np.cumsum(keep.sum(axis=1), out=indptr[1:])
    _, cols = np.nonzero(keep)  # row-major order: rows ascending, columns ascending within
    return CodebookTensor(
        shape=tuple(int(s) for s in codes.shape),
        indptr=indptr,
        indices=cols.astype(index_dtype(flat.shape[1])),
        codes=flat[keep].astype(code_dtype(bits)),
        codebook=np.asarray(codebook, dtype=np.float32),
        scale=None if scale is None else np.asarray(scale, dtype=np.float32),
        bits=int(bits),
    )
