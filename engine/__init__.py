"""pocketnn's inference engine: load a .pnn file and run it.

    import engine
    m = engine.load("model.pnn")                 # backend="auto" | "numba" | "numpy"
    engine.predict(m, ["cat.jpg", "dog.png"])    # per image: [Top(label, prob, index), ...]
    x = engine.preprocess(m, images)             # files, PIL images or arrays -> float32 NCHW
    logits = m.run(x)                            # (N, classes)
    m.labels                                     # the class names stored in the file

Errors are ValueErrors with a one-line message naming the file: engine.FormatError (a damaged
container), engine.ModelError (a graph that cannot run, or over the limits), engine.InputError
(an input that cannot be read or does not fit), engine.SettingError; engine.EngineError is the
base of the last three.

The names below load lazily, so `import engine.ir` (used by compress and the trainer) does not
import the kernels, Numba or Pillow.
"""

_EXPORTS = {
    "load": "engine.runtime", "Model": "engine.runtime",
    "predict": "engine.classify", "preprocess": "engine.classify", "Top": "engine.classify",
    "ModelError": "engine.errors", "InputError": "engine.errors",
    "EngineError": "engine.errors", "SettingError": "engine.errors", "Limits": "engine.budget",
    "FormatError": "formats", "DEMO_MODEL": "engine.cli", "DEMO_SAMPLES": "engine.cli",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
