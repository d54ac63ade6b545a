"""The engine's errors. File-level damage is formats.FormatError; these are the rest.

Every one is a ValueError whose message is one line naming the file (or node, or input) and the
problem, so the CLIs print it as is. Anything else that escapes is a bug.
"""


class EngineError(ValueError):
    """Base of the engine's expected failures: bad models, bad inputs, impossible settings."""


class ModelError(EngineError):
    """A .pnn file that decodes but does not describe a runnable model (unknown op or attribute,
    shape mismatch, missing tensor, over the memory or compute budget)."""


class InputError(EngineError):
    """An input file or array that cannot be read as images or labels, or does not fit the
    model."""


class SettingError(EngineError):
    """A backend, thread count or limit asked for that this engine cannot honour."""
