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
    indices: np.ndarray       # int32 (nnz,): column within the row, ascending within each row
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

    def row_table(self) -> np.ndarray:
        """float32 (O, K): the codebook each row reads, scale folded in. O*K floats, not O*rest."""
        book = np.asarray(self.codebook, dtype=np.float32)
        table = np.broadcast_to(book, (self.rows, book.shape[-1])).astype(np.float32)
        if self.scale is not None:
            table = table * np.asarray(self.scale, dtype=np.float32)[:, None]
        return np.ascontiguousarray(table)

    def values(self) -> np.ndarray:
        """float32 (nnz,): the value of each nonzero (what a CSR matrix stores)."""
        rows = np.repeat(np.arange(self.rows), np.diff(self.indptr))
        return self.row_table()[rows, self.codes.astype(np.intp)]

    def to_dense(self) -> np.ndarray:
        """float32 array of `shape`. For tests, references and training only: the engine's
        fast paths compute on the codes directly."""
        dense = np.zeros((self.rows, self.row_size), dtype=np.float32)
        rows = np.repeat(np.arange(self.rows), np.diff(self.indptr))
        dense[rows, self.indices] = self.values()
        return dense.reshape(self.shape)

    def validate(self) -> None:
        """Raise ValueError if the arrays do not describe a well-formed tensor."""
        o, n = self.rows, self.row_size
        if len(self.shape) < 1 or min(self.shape) < 0:
            raise ValueError(f"bad shape {self.shape}")
        if not 1 <= self.bits <= 16:
            raise ValueError(f"codebook bits must be in 1..16, got {self.bits}")
        ip = self.indptr
        if ip.shape != (o + 1,) or ip[0] != 0 or np.any(np.diff(ip) < 0):
            raise ValueError("indptr must be (O+1,), start at 0 and never decrease")
        nnz = int(ip[-1])
        if self.indices.shape != (nnz,) or self.codes.shape != (nnz,):
            raise ValueError(f"indices and codes must hold {nnz} entries")
        if nnz and (self.indices.min() < 0 or self.indices.max() >= n):
            raise ValueError(f"column index out of range 0..{n - 1}")
        for r in range(o):  # strictly ascending columns within each row
            seg = self.indices[ip[r]:ip[r + 1]]
            if seg.size > 1 and np.any(np.diff(seg) <= 0):
                raise ValueError(f"row {r}: columns not strictly ascending")
        k = self.codebook.shape[-1]
        if self.codebook.ndim not in (1, 2) or k > 2**self.bits or k < 1:
            raise ValueError(f"codebook must be (K,) or (O, K) with 1 <= K <= 2**bits, "
                             f"got {self.codebook.shape}")
        if self.codebook.ndim == 2 and self.codebook.shape[0] != o:
            raise ValueError("a per-channel codebook needs one row per output channel")
        if self.scale is not None and (self.codebook.ndim != 1 or self.scale.shape != (o,)):
            raise ValueError("scale must be (O,) and goes with a shared (K,) codebook")
        if nnz and int(self.codes.max()) >= k:
            raise ValueError(f"code out of range 0..{k - 1}")


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
        indices=cols.astype(np.int32),
        codes=flat[keep].astype(code_dtype(bits)),
        codebook=np.asarray(codebook, dtype=np.float32),
        scale=None if scale is None else np.asarray(scale, dtype=np.float32),
        bits=int(bits),
    )
