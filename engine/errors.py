"""The engine's own error: a model whose graph cannot be run (unknown op, shape mismatch,
missing tensor). File-level damage is formats.FormatError; unreadable inputs are InputError."""


class ModelError(ValueError):
    """A .pnn file that decodes but does not describe a runnable model."""
