"""The engine's errors. File-level damage is formats.FormatError; these are the rest.

Every one is a ValueError whose message is one line naming the file (or node, or input) and the
problem, so the CLIs can print it as is.
"""


class ModelError(ValueError):
    """A .pnn file that decodes but does not describe a runnable model (unknown op or attribute,
    shape mismatch, missing tensor, over the memory or compute budget)."""


class InputError(ValueError):
    """An input file or array that cannot be read as images or labels, or does not fit the
    model."""
