"""pocketnn's inference engine: load a .pnn file and run it.

    import engine
    m = engine.load("model.pnn")          # backend="auto" | "numba" | "numpy"
    logits = m.run(m.preprocess(images))  # images: uint8 HW / NHW / NCHW

The names below load lazily, so `import engine.ir` (used by compress and the trainer) does not
import the kernels or Numba.
"""

_EXPORTS = {
    "load": "engine.runtime", "Model": "engine.runtime",
    "ModelError": "engine.errors", "InputError": "engine.errors",
    "EngineError": "engine.errors", "SettingError": "engine.errors", "Limits": "engine.budget",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
