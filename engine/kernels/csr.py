"""A compressed weight as the Numba kernels read it: the stored arrays, checked once.

Row o of the CSR is output channel o. The value of nonzero j of row o is
``book[o * book_step, codes[j]]``, times ``scale[o]`` when the tensor has a scale: a shared
codebook is a (1, K) view (book_step 0), a per-channel one (O, K) (book_step 1). The kernels
multiply each *output* by the scale once; they never build an (O, K) table from a shared
codebook, nor the dense float weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from formats import CodebookTensor, index_dtype

_NO_SCALE = np.zeros(0, dtype=np.float32)


@dataclass(frozen=True, eq=False)
class CsrCodebook:
    rows: int                 # O
    row_size: int             # C*KH*KW or I
    indptr: np.ndarray        # int64 (O+1,)
    cols: np.ndarray          # uint16 or int32 (nnz,), as stored
    codes: np.ndarray         # uint8 or uint16 (nnz,), as stored
    book: np.ndarray          # float32 (1, K) or (O, K)
    book_step: int            # 0: shared codebook, 1: per channel
    scale: np.ndarray         # float32 (O,), or (0,) for none

    def __post_init__(self):
        # The arrays' agreement, once: the object is frozen, so the kernels' per-call checks
        # need only look at their input (1.2 us a call saved, 3% of a LeNet-5 image).
        o = self.rows
        if (self.indptr.shape != (o + 1,) or self.indptr.dtype != np.int64
                or self.cols.ndim != 1 or self.codes.shape != self.cols.shape
                or int(self.indptr[-1]) != self.cols.shape[0] or self.book.ndim != 2
                or self.book_step not in (0, 1)
                or self.book.shape[0] != (o if self.book_step else 1)
                or self.scale.shape not in ((0,), (o,))):
            raise ValueError(f"inconsistent CsrCodebook arrays for {o} rows")

    @classmethod
    def of(cls, t: CodebookTensor) -> CsrCodebook:
        """The tensor's own arrays (no copies where dtypes already fit), range-checked once
        here (O(nnz)), so the kernels' per-call checks can stay O(1)."""
        t.validate()
        book = np.ascontiguousarray(t.codebook, dtype=np.float32)
        per_channel = book.ndim == 2
        return cls(
            rows=t.rows, row_size=t.row_size,
            indptr=np.ascontiguousarray(t.indptr, dtype=np.int64),
            cols=np.ascontiguousarray(t.indices, dtype=index_dtype(t.row_size)),
            codes=np.ascontiguousarray(t.codes),
            book=book if per_channel else book.reshape(1, -1),
            book_step=int(per_channel),
            scale=_NO_SCALE if t.scale is None else np.ascontiguousarray(t.scale, np.float32))

    @classmethod
    def of_dense(cls, weight: np.ndarray) -> CsrCodebook:
        """A dense float weight (O, ...) as every position listed, each its own code into a
        per-channel codebook holding its row's values: the kernels on codes then run a dense
        layer exactly (the depthwise kernel does; a small table, O*K floats, is the weight)."""
        w = np.ascontiguousarray(weight, dtype=np.float32)
        o = int(w.shape[0])
        k = w.size // o if o else 0
        if k > 1 << 16:
            raise ValueError(f"a dense row of {k} values does not fit 16-bit codes")
        taps = np.arange(k)
        return cls(rows=o, row_size=k, indptr=np.arange(o + 1, dtype=np.int64) * k,
                   cols=np.tile(taps.astype(index_dtype(k)), o),
                   codes=np.tile(taps.astype(np.uint8 if k <= 256 else np.uint16), o),
                   book=w.reshape(o, k), book_step=1, scale=_NO_SCALE)

    @property
    def nnz(self) -> int:
        return int(self.cols.shape[0])

    @property
    def nbytes(self) -> int:
        """Resident bytes of what the kernels read (the engine keeps nothing else per layer)."""
        return sum(a.nbytes for a in (self.indptr, self.cols, self.codes, self.book, self.scale))

    @property
    def nonzero_bytes(self) -> int:
        """Bytes each nonzero costs: its column index and its code."""
        return self.cols.itemsize + self.codes.itemsize

    @property
    def sparse_bytes(self) -> int:
        """Bytes of the sparse structure: row pointers, column indices and codes (what grows
        with the nonzeros and rows; the codebook and scale are a per-layer table besides)."""
        return self.indptr.nbytes + self.cols.nbytes + self.codes.nbytes

    def values(self) -> np.ndarray:
        """float32 (nnz,): each nonzero's value (for the SciPy path, which stores floats)."""
        rows = np.repeat(np.arange(self.rows), np.diff(self.indptr))
        vals = self.book[rows * self.book_step, self.codes.astype(np.intp)]
        if self.scale.shape[0]:
            vals = vals * self.scale[rows]
        return vals.astype(np.float32, copy=False)
