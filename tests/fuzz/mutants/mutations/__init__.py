"""Mutations of a drawn model's file, and `mutate`, which applies drawn ones.

`MUTATIONS` is the one table (name, weight, what it edits, function); each family's entries
live with its functions: `tensor`, `metadata` (the JSON tree), `json_text` (the JSON bytes
and their coding), `container` (sections, versions, header and table fields, raw damage).
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass

from hypothesis import strategies as st

from tests.fuzz.mutants.draw import HypDraw, ModelCase, RandomDraw, draw_model
from tests.fuzz.mutants.mutations import container, json_text, metadata, tensor
from tests.fuzz.mutants.mutations.edits import Mutation, noop

MUTATIONS = (tensor.MUTATIONS + metadata.MUTATIONS + json_text.MUTATIONS + container.MUTATIONS
             + [Mutation("control", 2, "fields", noop)])
FIELD_MUTATIONS = [(m.weight, m) for m in MUTATIONS if m.edits == "fields"]
BYTE_MUTATIONS = [(m.weight, m) for m in MUTATIONS if m.edits == "bytes"]


@dataclass
class Mutant:
    blob: bytes
    ops: list           # mutation names applied, in order
    detail: str         # one line
    same: bool          # if it loads, the content must be the original's
    valid: bool         # valid by the spec: it must load

    @property
    def kind(self) -> str:
        if self.ops == ["control"]:
            return "control"
        return "raw" if any(o.startswith("raw") for o in self.ops) else "structured"


def mutate(d, case: ModelCase) -> Mutant:
    """One drawn mutant of `case`: usually one mutation, sometimes two or three stacked."""
    spec = copy.deepcopy(case.spec)
    ops, details, same, valid = [], [], True, True
    n_fields, n_bytes = d.weighted([(10, (1, 0)), (12, (0, 1)), (2, (2, 0)), (1, (3, 0)),
                                    (1, (1, 1))])
    for _ in range(n_fields):
        m = d.weighted(FIELD_MUTATIONS)
        backup = copy.deepcopy(spec)
        try:
            what, s, v = m.fn(d, spec, case)
            spec.to_bytes()  # still writable (a stacked edit may have made keys unsortable)
        except (AttributeError, KeyError, TypeError, IndexError, ValueError) as e:
            # an earlier stacked edit left nothing this one can edit (the metadata is no
            # longer an object, say): undo it
            spec = backup
            what, s, v = (f"{m.name} not applicable after the previous edit "
                          f"({type(e).__name__})", True, True)
        ops.append(m.name)
        details.append(what)
        same, valid = same and s, valid and v
    blob = bytearray(spec.to_bytes())
    for _ in range(n_bytes):
        m = d.weighted(BYTE_MUTATIONS)
        blob, what, s, v = m.fn(d, blob, case)
        ops.append(m.name)
        details.append(what)
        same, valid = same and s, valid and v
    if len(ops) > 1 and "control" in ops:
        ops = [o for o in ops if o != "control"] or ["control"]
    return Mutant(bytes(blob), ops, "; ".join(details), same, valid)


def make(seed: int, index: int) -> tuple[ModelCase, Mutant]:
    """Mutant `index` of `seed`: depends on nothing else (so any one can be replayed)."""
    d = RandomDraw(random.Random(f"{seed}:{index}"))
    case = draw_model(d)
    return case, mutate(d, case)


@st.composite
def mutant_cases(draw) -> tuple[ModelCase, Mutant]:
    """Hypothesis strategy: (model, mutant of it)."""
    d = HypDraw(draw)
    case = draw_model(d)
    return case, mutate(d, case)
