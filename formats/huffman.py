"""Canonical, length-limited Huffman coding of small-integer streams, stored as code lengths.

Bit order: codes are written most-significant bit first, packed MSB-first into bytes; the last
byte is padded with zero bits. A table is the code length of each symbol (0 = unused); codes are
assigned canonically (shorter codes first, ties by symbol), as in DEFLATE.

Decoding is vectorised (see `decode`): a table gives the length of the codeword starting at
every bit of the stream; lanes of the stream are parsed in lockstep with NumPy from every
offset the true parse may enter them at, each parse stopping where it joins another; a short
loop over lanes then stitches the true parse together. Exact for any code, and O(bits) even
for hostile streams whose parses never re-synchronise. Figures in docs/FORMAT.md
("Decode speed"); `decode_ref` is the bit-by-bit oracle the tests hold it against.
"""

from __future__ import annotations

import heapq
import math

import numpy as np

from formats.constants import MAX_CODE_LEN
from formats.errors import LayoutError, TruncatedError

LUT_BITS = 16  # codes up to this long decode through a direct table of at most 2**16 entries

# ---- building tables ---------------------------------------------------------------------------


def _huffman_depths(freqs: list[int]) -> list[int]:
    """Code lengths of an optimal (unlimited) prefix code for >= 2 positive frequencies."""
    n = len(freqs)
    heap = [(f, i) for i, f in enumerate(freqs)]  # (weight, node id): ties broken by id
    heapq.heapify(heap)
    parent = [0] * (2 * n - 1)
    nxt = n
    while len(heap) > 1:
        fa, a = heapq.heappop(heap)
        fb, b = heapq.heappop(heap)
        parent[a] = parent[b] = nxt
        heapq.heappush(heap, (fa + fb, nxt))
        nxt += 1
    depth = [0] * (2 * n - 1)
    for node in range(2 * n - 3, -1, -1):  # parents are created after their children
        depth[node] = depth[parent[node]] + 1
    return depth[:n]


def code_lengths(freqs: np.ndarray, max_len: int = MAX_CODE_LEN) -> np.ndarray:
    """uint8 code length per symbol (0 where the frequency is 0), no length above `max_len`.

    One used symbol gets length 1. Lengths are limited by halving the frequencies (never below
    1) until the optimal code fits: a valid prefix code, close to optimal for the skews we meet.
    """
    freqs = np.asarray(freqs)
    if freqs.ndim != 1 or (freqs.size and freqs.min() < 0):
        raise ValueError("freqs must be a 1-D array of non-negative counts")
    lengths = np.zeros(freqs.shape[0], dtype=np.uint8)
    used = np.flatnonzero(freqs)
    if used.size == 0:
        return lengths
    if used.size == 1:
        lengths[used] = 1
        return lengths
    if used.size > 1 << max_len:
        raise ValueError(f"{used.size} symbols do not fit codes of at most {max_len} bits")
    f = [int(v) for v in freqs[used]]
    while True:
        depths = _huffman_depths(f)
        if max(depths) <= max_len:
            break
        f = [max(v >> 1, 1) for v in f]
    lengths[used] = depths
    return lengths


def check_lengths(lengths: np.ndarray, max_len: int = MAX_CODE_LEN) -> None:
    """Raise LayoutError unless `lengths` (e.g. read from a file) is a usable prefix code:
    every length <= max_len and the Kraft sum at most 1 (an incomplete code is allowed; its
    unassigned codes are rejected when met in a stream)."""
    lengths = np.asarray(lengths)
    if lengths.size and int(lengths.max()) > max_len:
        raise LayoutError(f"Huffman code length {int(lengths.max())} exceeds {max_len}")
    used = lengths[lengths > 0].astype(np.int64)
    if used.size and int(np.sum(np.int64(1) << (max_len - used))) > 1 << max_len:
        raise LayoutError("Huffman code lengths are over-subscribed (Kraft sum > 1)")


def canonical_codes(lengths: np.ndarray) -> np.ndarray:
    """uint32 canonical code of each symbol (meaningless where the length is 0)."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(lengths.shape[0], dtype=np.uint32)
    top = int(lengths.max()) if lengths.size else 0
    count = np.bincount(lengths, minlength=top + 1)
    count[0] = 0  # unused symbols take no codes
    code = 0
    for length in range(1, top + 1):  # DEFLATE's next_code recurrence
        code = (code + int(count[length - 1])) << 1
        syms = np.flatnonzero(lengths == length)  # ascending: ties by symbol
        codes[syms] = code + np.arange(syms.size, dtype=np.int64)
    return codes


def encoded_bits(freqs: np.ndarray, lengths: np.ndarray) -> int:
    """Size in bits of a stream with these symbol counts under these code lengths."""
    return int(np.dot(np.asarray(freqs, dtype=np.int64), np.asarray(lengths, dtype=np.int64)))


# ---- encoding ----------------------------------------------------------------------------------


def encode(symbols: np.ndarray, lengths: np.ndarray) -> bytes:
    """The packed code stream of `symbols` (MSB first, zero-padded to a whole byte)."""
    symbols = np.asarray(symbols).astype(np.int64, copy=False).ravel()
    lengths = np.asarray(lengths, dtype=np.int64)
    if symbols.size == 0:
        return b""
    if symbols.min() < 0 or symbols.max() >= lengths.shape[0]:
        raise ValueError(f"symbol out of range 0..{lengths.shape[0] - 1}")
    lens = lengths[symbols]
    if lens.min() == 0:
        raise ValueError("a symbol in the stream has no code (length 0)")
    codes = canonical_codes(lengths).astype(np.int64)[symbols]
    ends = np.cumsum(lens)
    starts = ends - lens
    bits = np.zeros(int(ends[-1]), dtype=np.uint8)
    for j in range(int(lens.max())):  # bit j of every code at least j+1 long
        m = lens > j
        bits[starts[m] + j] = (codes[m] >> (lens[m] - 1 - j)) & 1
    return np.packbits(bits).tobytes()


# ---- decoding ----------------------------------------------------------------------------------


MAX_LANE_BITS = 1 << 14  # lanes at most this wide, so that...
DEAD = 0x7FFF            # ...this step (at an unassigned code) takes any parse past its lane
LONG = -1                # direct-table entry that cannot decide: a longer code starts there


class _Table:
    """Canonical codewords sorted by their left-justified (MAX_CODE_LEN-bit) value, plus a
    direct table on the first `lut_bits` bits of a window that decides every codeword of at
    most that many bits and every unassigned run (the rest are LONG)."""

    def __init__(self, lengths: np.ndarray) -> None:
        lengths = np.asarray(lengths, dtype=np.int64)
        check_lengths(lengths)
        used = np.flatnonzero(lengths)
        if used.size == 0:
            raise LayoutError("Huffman table has no symbols but the stream has some")
        codes = canonical_codes(lengths).astype(np.int64)
        lens = lengths[used]
        lj = codes[used] << (MAX_CODE_LEN - lens)          # left-justified codeword
        order = np.argsort(lj, kind="stable")
        self.lj = lj[order]
        self.end = self.lj + (np.int64(1) << (MAX_CODE_LEN - lens[order]))  # exclusive
        self.sym = used[order]
        self.len = lens[order]                              # non-decreasing (canonical)
        self.gcd = int(np.gcd.reduce(lens))
        self.peek = int(lens.max())
        self.lut_bits = min(self.peek, LUT_BITS)
        span = 1 << (MAX_CODE_LEN - self.lut_bits)          # windows under one entry
        first = np.arange(1 << self.lut_bits, dtype=np.int64) * span
        row, ln = self.search(first)
        # decided: one codeword covers the whole entry, or no codeword touches it
        starts_inside = np.searchsorted(self.lj, first + span - 1, side="right") != \
            np.searchsorted(self.lj, first, side="right")
        whole = (ln > 0) & (ln <= self.lut_bits)
        self.lut_len = np.where(whole, ln, np.where((ln == 0) & ~starts_inside, DEAD, LONG))
        self.lut_len = self.lut_len.astype(np.int16)
        self.lut_sym = self.sym[row].astype(np.uint16 if lengths.size <= 1 << 16 else np.int64)
        # Canonical codes fill the code space in order of length, gaps only at the top: the
        # codes longer than lut_bits are one run, and a window's length within it follows
        # from where each length starts (at most 8 bounds, not the whole table).
        self.has_long = self.peek > self.lut_bits
        long = self.len > self.lut_bits
        first_of = np.flatnonzero(long & (np.diff(self.len, prepend=0) > 0))
        self.long_from = np.append(self.lj[first_of], self.end[-1])
        self.long_len = np.append(self.len[first_of], DEAD).astype(np.int16)

    def search(self, window: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row, code length or 0 where unassigned) of MAX_CODE_LEN-bit windows, by bisection."""
        i = np.searchsorted(self.lj, window, side="right") - 1
        i0 = np.maximum(i, 0)
        ok = (i >= 0) & (window < self.end[i0])
        return i0, np.where(ok, self.len[i0], 0)


class _Bits:
    """A byte string as MAX_CODE_LEN-bit windows at any bit position."""

    def __init__(self, data: bytes) -> None:
        b = np.frombuffer(bytes(data) + b"\0\0\0\0", dtype=np.uint8).astype(np.int64)
        n = len(data)
        # the big-endian 32-bit word starting at every byte (zero beyond the end)
        self.words = (b[:n + 1] << 24) | (b[1:n + 2] << 16) | (b[2:n + 3] << 8) | b[3:n + 4]

    def window(self, p: np.ndarray, nbits: int = MAX_CODE_LEN) -> np.ndarray:
        """The `nbits` bits starting at each bit position p, as integers (nbits <= 25)."""
        return ((self.words[p >> 3] << (p & 7)) & 0xFFFFFFFF) >> (32 - nbits)

    def steps(self, table: _Table) -> np.ndarray:
        """int16, one per bit: the length of the codeword starting there, DEAD if unassigned.
        A gather per bit offset over all bytes costs far less than a lookup per step of the
        parse loops."""
        w = self.words[:-1]
        out = np.empty(8 * w.size, dtype=np.int16)
        for k in range(8):
            window = ((w << k) & 0xFFFFFFFF) >> (32 - MAX_CODE_LEN)
            step = table.lut_len[window >> (MAX_CODE_LEN - table.lut_bits)]
            if table.has_long:
                long = step == LONG
                if long.any():
                    at = np.searchsorted(table.long_from, window[long], side="right") - 1
                    step[long] = table.long_len[at]
            out[k::8] = step
        return out


def _parse(start: np.ndarray, end: np.ndarray, m: np.ndarray, mark: np.ndarray,
           steps: np.ndarray, join: bool) -> tuple[np.ndarray, np.ndarray]:
    """Parse from every start in lockstep, marking the positions visited with its `m`, until
    a parse reaches its end (or jumps past it on a DEAD step) or, with `join`, a position that
    is already marked or that another parse claims in the same step.
    -> (where each parse stopped, the mark it joined there or 0)."""
    stop = np.empty_like(start)
    joined = np.zeros(start.size, dtype=np.int8)
    race = join and np.unique(m).size > 1  # then two parses may reach p at once
    i, p, end = np.arange(start.size), start.copy(), end.copy()
    while i.size:
        if join:
            seen = mark[p]
            if seen.any():
                met = seen != 0
                stop[i[met]], joined[i[met]] = p[met], seen[met]
                i, p, end, m = i[~met], p[~met], end[~met], m[~met]
        mark[p] = m
        if race:
            lost = mark[p] != m  # one of them owns p; the others join it there
            if lost.any():
                stop[i[lost]], joined[i[lost]] = p[lost], mark[p[lost]]
                i, p, end, m = i[~lost], p[~lost], end[~lost], m[~lost]
        p += steps[p]
        out = p >= end
        if out.any():
            stop[i[out]] = p[out]
            i, p, end, m = i[~out], p[~out], end[~out], m[~out]
    return stop, joined


def decode(data: bytes, lengths: np.ndarray, count: int) -> np.ndarray:
    """The first `count` symbols of a stream written by `encode` (uint16, or int64 if the
    alphabet is larger than 2**16).

    Raises TruncatedError if the stream runs out, LayoutError on an unassigned code, a bad
    table, or bytes left over after the last codeword.

    How: the stream is cut into lanes of W bits, and each lane is parsed in lockstep with
    NumPy from its first bit (its main parse, mark 1). The true parse enters lane c at one of
    the `peek / gcd` offsets just after the lane's start, so every other offset is parsed too,
    all lanes' at once (probes, marks 2, 3, ...), each until it reaches a position another
    parse of its lane has visited: from there on it would repeat that parse, so it stops and
    records the join. A loop over lanes then follows the true entry through probes and joins
    (a few Python steps per lane whatever the stream). Every bit position is visited by at most
    one parse, so the work is O(bits) even for a stream whose parses never fall into step
    (Huffman codes usually self-synchronise within a few codewords; natural streams' probes
    stop that soon, so they cost little).
    """
    lengths = np.asarray(lengths)
    out_dtype = np.uint16 if lengths.shape[0] <= 1 << 16 else np.int64
    if count < 0:
        raise LayoutError("negative symbol count")
    if count == 0:
        if len(data):
            raise LayoutError(f"{len(data)} bytes of stream for zero symbols")
        return np.zeros(0, dtype=out_dtype)
    if count > 8 * len(data):  # every codeword costs at least one bit
        raise TruncatedError(f"{len(data)}-byte stream cannot hold {count} symbols")
    table = _Table(lengths)
    if len(data) > -(-count * table.peek // 8):  # count codewords never fill that many bytes
        raise LayoutError(f"stray bytes: {len(data)} bytes for {count} symbols of at most "
                          f"{table.peek} bits")
    nbits = 8 * len(data)
    bits = _Bits(data)
    steps = bits.steps(table)

    # lanes of W bits: an odd multiple of the gcd of the code lengths (so phases can match;
    # odd, so that the lanes' positions in `mark` do not all fall into the same cache sets)
    avg = max(nbits / count, 1.0)
    w = min(max(int(math.sqrt(nbits * avg)), 64), MAX_LANE_BITS) // table.gcd | 1
    w *= table.gcd
    starts = np.arange(0, nbits, w, dtype=np.int64)
    ends = np.minimum(starts + w, nbits)
    mark = np.zeros(nbits, dtype=np.int8)  # which parse of its lane visited each position

    # main parses (mark 1): one per lane, from its first bit
    exits = _parse(starts, ends, np.ones(starts.size, np.int8), mark, steps, join=False)[0]
    # probes (mark 1 + j): from offset j * gcd, j = 1..nprobe, of every lane but the first,
    # each until it joins a parse
    nprobe = (table.peek - 1) // table.gcd
    probe_stop = np.zeros((starts.size, nprobe), dtype=np.int64)
    joined = np.zeros((starts.size, nprobe), dtype=np.int8)
    lane = np.repeat(np.arange(1, starts.size), nprobe)
    j = np.tile(np.arange(1, nprobe + 1), starts.size - 1)
    first = starts[lane] + j * table.gcd
    probe_stop[lane, j - 1] = first  # a probe starting past its lane's end leaves there
    live = first < ends[lane]
    lane, j = lane[live], j[live]
    probe_stop[lane, j - 1], joined[lane, j - 1] = _parse(
        first[live], ends[lane], (1 + j).astype(np.int8), mark, steps, join=True)

    # follow the true parse: in lane c it enters at `entry` on parse m, which it follows
    # until m joins another parse, and so on; `want` is the mark true positions carry
    cuts, want = [0], [1]  # lane 0's main parse is the true one
    entry = int(exits[0])
    exits_l, stop_l, to_l = exits.tolist(), probe_stop.tolist(), joined.tolist()
    for c in range(1, starts.size):
        s = c * w
        cuts.append(s)
        want.append(-1)  # nothing true between the lane's start and the entry
        if entry >= s + table.peek:  # the true parse met an unassigned code earlier
            break
        m, at = 1 + (entry - s) // table.gcd, entry
        while True:
            cuts.append(at)
            want.append(m)
            if m == 1:
                entry = exits_l[c]
                break
            m, at = to_l[c][m - 2], stop_l[c][m - 2]
            if not m:  # probe left the lane without joining: that is where the true parse goes
                entry = at
                break
    cuts = np.minimum(np.array(cuts + [nbits], dtype=np.int64), nbits)
    true = mark == np.repeat(np.array(want, dtype=np.int8), np.diff(cuts))
    pos = np.flatnonzero(true)[:count]

    ln = steps[pos]
    if ln.max() == DEAD:
        bad = int(pos[np.argmax(ln)])
        raise LayoutError(f"unassigned Huffman code at bit {bad} of the stream")
    if pos.size < count:
        raise TruncatedError(f"stream ends after {pos.size} of {count} symbols")
    stop = int(pos[-1]) + int(ln[-1])
    if stop > nbits:
        raise TruncatedError(f"stream ends inside symbol {count - 1}")
    if (stop + 7) // 8 != len(data):
        raise LayoutError(f"{len(data) - (stop + 7) // 8} stray bytes after the last symbol")
    sym = np.empty(count, dtype=table.lut_sym.dtype)
    for a in range(0, count, 1 << 20):  # in slices: the int64 temporaries stay small
        sym[a:a + (1 << 20)] = table.lut_sym[bits.window(pos[a:a + (1 << 20)], table.lut_bits)]
    if table.has_long:
        long = np.flatnonzero(ln > table.lut_bits)
        sym[long] = table.sym[table.search(bits.window(pos[long]))[0]]
    return sym


def decode_ref(data: bytes, lengths: np.ndarray, count: int) -> np.ndarray:
    """The plain bit-by-bit decoder: the oracle `decode` is tested against."""
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = canonical_codes(lengths)
    book = {(int(lengths[s]), int(codes[s])): s for s in np.flatnonzero(lengths)}
    bits = np.unpackbits(np.frombuffer(bytes(data), dtype=np.uint8)).tolist()
    out, pos = [], 0
    for _ in range(count):
        code, length = 0, 0
        while True:
            if pos >= len(bits):
                raise TruncatedError("stream runs out")
            code, length, pos = (code << 1) | bits[pos], length + 1, pos + 1
            if (length, code) in book:
                out.append(book[(length, code)])
                break
            if length >= MAX_CODE_LEN:
                raise LayoutError("unassigned Huffman code")
    return np.array(out, dtype=np.int64)
