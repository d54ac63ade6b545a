"""A pickle reader for files written by an attacker: nothing runs but our own functions.

    obj, end = load(data, start, source="m.pth:archive/data.pkl", globals_=ALLOWED,
                    persistent_load=fn)

Two passes over the same bytes:

1. `scan` walks the opcodes with `pickletools.genops` (which reads every length-prefixed
   argument through `read(n)`, so a declared length past the data is an error, never an
   allocation) and simulates the stack. Before anything is built it refuses: any opcode
   outside `_OPCODES` (INST, OBJ, NEWOBJ, EXT*, out-of-band buffers, sets...), any global not
   in `globals_` (also through STACK_GLOBAL, whose names must be string constants), memo
   indices a pickler would not write (the C unpickler grows its memo table to the index: one
   opcode could ask for gigabytes), tuples nested deeper than `MAX_TUPLE_DEPTH` (hashing a
   deep tuple recurses in C: 10^6 levels crash the interpreter), dictionary keys other than
   strings and small integers (crafted colliding hashes make inserts quadratic), more than
   `MAX_OPCODES` opcodes, and a pickle longer than `MAX_PICKLE_BYTES`.
2. `load` runs the C unpickler on exactly those bytes. `find_class` answers only from
   `globals_`, whose values are our own `Inert` objects (never the real torch or collections
   object); BUILD on any of them is refused, because pickle's BUILD calls `__setstate__` when
   an object has one and otherwise writes attributes. Whatever goes wrong is one
   CheckpointError naming `source`.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import warnings

from compress.importers.errors import CheckpointError, UnsafePickleError, printable

MAX_PICKLE_BYTES = 16 << 20   # data.pkl of MobileNetV2 (314 tensors): 47 KB
MAX_OPCODES = 1 << 21         # MobileNetV2's: 11,462 (36 a tensor); scanning: 0.5 s a million
MAX_TUPLE_DEPTH = 32          # a tensor's arguments nest 3 deep
MAX_KEY_INT = 1 << 31         # optimizer state is keyed by parameter number

# What a state dict (plus the usual checkpoint wrappers) is made of, and nothing else. (Not
# STRING: Python 2's quoted text, which torch never writes and which pickle decodes by
# evaluating escape sequences.)
_OPCODES = frozenset("""
    PROTO FRAME STOP MARK NONE NEWTRUE NEWFALSE INT BININT BININT1 BININT2 LONG LONG1 LONG4
    FLOAT BINFLOAT BINSTRING SHORT_BINSTRING UNICODE BINUNICODE SHORT_BINUNICODE
    BINUNICODE8 BINBYTES SHORT_BINBYTES BINBYTES8 EMPTY_DICT EMPTY_LIST EMPTY_TUPLE TUPLE
    TUPLE1 TUPLE2 TUPLE3 LIST DICT APPEND APPENDS SETITEM SETITEMS PUT BINPUT LONG_BINPUT
    MEMOIZE GET BINGET LONG_BINGET GLOBAL STACK_GLOBAL REDUCE BUILD BINPERSID
    """.split())
_TEXT = frozenset({"UNICODE", "BINUNICODE", "SHORT_BINUNICODE", "BINUNICODE8"})
_INTS = frozenset({"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4"})
_PUSH = frozenset({"NONE", "NEWTRUE", "NEWFALSE", "FLOAT", "BINFLOAT", "BINSTRING",
                   "SHORT_BINSTRING", "BINBYTES", "SHORT_BINBYTES", "BINBYTES8",
                   "EMPTY_DICT", "EMPTY_LIST"})
_PUT = frozenset({"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"})
_GET = frozenset({"GET", "BINGET", "LONG_BINGET"})


class Inert:
    """Base of every object our find_class / persistent_load hands the unpickler."""

    __slots__ = ()

    def __setstate__(self, state):
        raise UnsafePickleError(f"the pickle sets the state of {self!r} (BUILD)")


class Call(Inert):
    """An allowed global that the pickle may call (REDUCE): our function, under its name."""

    __slots__ = ("name", "fn")

    def __init__(self, name: str, fn):
        self.name, self.fn = name, fn

    def __repr__(self) -> str:
        return self.name

    def __call__(self, *args):
        try:
            return self.fn(*args)
        except TypeError:  # a wrong number of arguments: our functions check their types
            raise CheckpointError(f"{self.name} called with {len(args)} arguments of the "
                                  f"wrong kind") from None


class StateDict(dict):
    """collections.OrderedDict as torch pickles it; the `_metadata` attribute torch sets on a
    state dict (BUILD) is dropped, any other state refused."""

    __slots__ = ()

    def __setstate__(self, state):
        if not isinstance(state, dict) or set(state) - {"_metadata"}:
            raise UnsafePickleError("the pickle sets attributes of an OrderedDict other than "
                                    "_metadata (BUILD)")


def ordered_dict(*args) -> StateDict:
    """OrderedDict() or OrderedDict([[key, value], ...]) (protocols 0 and 1)."""
    d = StateDict()
    if len(args) > 1:
        raise CheckpointError(f"OrderedDict called with {len(args)} arguments")
    for pair in args[0] if args else ():
        if not isinstance(pair, (list, tuple)) or len(pair) != 2 or not _good_key(pair[0]):
            raise UnsafePickleError("OrderedDict built from something other than "
                                    "(string, value) pairs")
        d[pair[0]] = pair[1]
    return d


def _good_key(key) -> bool:
    return isinstance(key, str) or (type(key) is int and -MAX_KEY_INT <= key < MAX_KEY_INT)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, globals_: dict, persistent_load):
        super().__init__(file, encoding="utf-8")
        self._globals = globals_
        self._persistent = persistent_load

    def find_class(self, module, name):  # scan() has refused the rest: this is a second lock
        found = self._globals.get((module, name))
        if found is None:
            raise UnsafePickleError(f"the pickle asks for {printable(module)}.{printable(name)}"
                                    f", which a weights file does not need (refused)")
        return found

    def persistent_load(self, pid):
        if self._persistent is None:
            raise UnsafePickleError("unexpected persistent id")
        return self._persistent(pid)


_VALUE = (0, None, False)  # a simulated stack entry: (tuple depth, text constant, key-worthy)


class _Refusal(Exception):
    def __init__(self, what: str, unsafe: bool = False):
        super().__init__(what)
        self.unsafe = unsafe


class _Scan:
    """The stack and memo of a pickle, simulated one opcode at a time (`step`)."""

    def __init__(self, globals_: dict):
        self.globals = globals_
        self.stack: list[tuple] = []
        self.marks: list[int] = []
        self.memo: dict[int, tuple] = {}

    def pop(self, n: int) -> list:
        if len(self.stack) - (self.marks[-1] if self.marks else 0) < n:
            raise _Refusal("stack underflow")
        items = self.stack[len(self.stack) - n:]
        del self.stack[len(self.stack) - n:]
        return items

    def pop_mark(self) -> list:
        if not self.marks:
            raise _Refusal("no MARK before a pickle opcode that needs one")
        base = self.marks.pop()
        items = self.stack[base:]
        del self.stack[base:]
        return items

    def target(self) -> None:  # what APPEND, SETITEM(S), BUILD and PUT act on stays put
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise _Refusal("stack underflow")

    def keys(self, items: list, pairs: bool) -> None:
        """The keys of dict items (key, value, key, value...); list items pass."""
        if not pairs:
            return
        if len(items) % 2:
            raise _Refusal("odd number of items for a dict")
        if not all(k[2] for k in items[::2]):
            raise _Refusal("a dictionary key other than a string or a small integer", True)

    def global_(self, module, name) -> None:
        if module is None or name is None:
            raise _Refusal("STACK_GLOBAL with names that are not string constants", True)
        if (module, name) not in self.globals:
            raise _Refusal(f"global {printable(module)}.{printable(name)} refused (a weights "
                           f"file does not need it)", True)
        self.stack.append(_VALUE)

    def tuple_(self, items: list) -> None:
        depth = 1 + max((d for d, _, _ in items), default=0)
        if depth > MAX_TUPLE_DEPTH:
            raise _Refusal(f"tuples nested more than {MAX_TUPLE_DEPTH} deep", True)
        self.stack.append((depth, None, False))

    def step(self, name: str, arg) -> bool:
        """Simulate one opcode; True at STOP."""
        if name not in _OPCODES:
            raise _Refusal(f"opcode {name} refused (a weights file does not need it)", True)
        if name in _PUSH:
            self.stack.append(_VALUE)
        elif name in _TEXT:
            self.stack.append((0, arg, True))
        elif name in _INTS:
            self.stack.append((0, None, type(arg) is int and -MAX_KEY_INT <= arg < MAX_KEY_INT))
        elif name == "MARK":
            self.marks.append(len(self.stack))
        elif name == "EMPTY_TUPLE":
            self.tuple_([])
        elif name == "TUPLE":
            self.tuple_(self.pop_mark())
        elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
            self.tuple_(self.pop(int(name[-1])))
        elif name in ("LIST", "DICT"):
            self.keys(self.pop_mark(), pairs=name == "DICT")
            self.stack.append(_VALUE)
        elif name in ("APPEND", "SETITEM"):
            self.keys(self.pop(1 if name == "APPEND" else 2), pairs=name == "SETITEM")
            self.target()
        elif name in ("APPENDS", "SETITEMS"):
            self.keys(self.pop_mark(), pairs=name == "SETITEMS")
            self.target()
        elif name in _PUT:
            self.target()
            index = len(self.memo) if name == "MEMOIZE" else arg
            if index > len(self.memo):  # picklers number memo entries 0, 1, 2, ...
                raise _Refusal(f"memo index {printable(index)} out of sequence", True)
            self.memo[index] = self.stack[-1]
        elif name in _GET:
            if arg not in self.memo:
                raise _Refusal(f"memo index {printable(arg)} never stored")
            self.stack.append(self.memo[arg])
        elif name == "GLOBAL":
            module, _, attr = arg.partition(" ")
            self.global_(module, attr if " " not in attr else None)
        elif name == "STACK_GLOBAL":
            (_, module, _), (_, attr, _) = self.pop(2)
            self.global_(module, attr)
        elif name in ("REDUCE", "BINPERSID"):
            self.pop(2 if name == "REDUCE" else 1)
            self.stack.append(_VALUE)
        elif name == "BUILD":
            self.pop(1)
            self.target()
        elif name == "PROTO" and not 0 <= arg <= pickle.HIGHEST_PROTOCOL:
            raise _Refusal(f"pickle protocol {printable(arg)}")
        elif name == "STOP":
            if len(self.stack) != 1 or self.marks:
                raise _Refusal("pickle ends with a malformed stack")
            return True
        return False  # FRAME, PROTO: nothing to simulate


def scan(data, start: int, source: str, globals_: dict) -> int:
    """Check the pickle at data[start:] (see the module docstring); return where it ends."""
    f = io.BytesIO(data)
    f.seek(start)
    sim, pos = _Scan(globals_), start
    try:
        with warnings.catch_warnings():  # genops decodes STRING's escapes (warning about bad
            warnings.simplefilter("ignore", DeprecationWarning)  # ones) before we refuse it
            for count, (op, arg, pos) in enumerate(pickletools.genops(f), 1):
                if count > MAX_OPCODES:
                    raise _Refusal(f"more than {MAX_OPCODES:,} opcodes")
                if pos - start >= MAX_PICKLE_BYTES:
                    raise _Refusal(f"pickle longer than {MAX_PICKLE_BYTES:,} bytes")
                if sim.step(op.name, arg):
                    return pos + 1
    except _Refusal as e:
        cls = UnsafePickleError if e.unsafe else CheckpointError
        raise cls(f"{source}: {e} at byte {pos - start} of the pickle") from None
    except (ValueError, EOFError) as e:  # pickletools: truncated argument, unknown opcode
        raise CheckpointError(f"{source}: malformed pickle ({printable(str(e), 120)})") \
            from None
    raise CheckpointError(f"{source}: the pickle is truncated (no STOP opcode)")


def load(data, start: int, *, source: str, globals_: dict, persistent_load=None):
    """(object, end offset) of the pickle at data[start:], after `scan` accepted it."""
    end = scan(data, start, source, globals_)
    unpickler = _Unpickler(io.BytesIO(memoryview(data)[start:end]), globals_, persistent_load)
    try:
        return unpickler.load(), end
    except CheckpointError as e:
        raise type(e)(f"{source}: {e}") from None
    except MemoryError:
        raise
    except Exception as e:  # the C unpickler's own checks: still damage, not a bug of ours
        raise CheckpointError(f"{source}: malformed pickle ({type(e).__name__}: "
                              f"{printable(str(e), 120)})") from None
