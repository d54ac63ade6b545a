"""pocketnn's inference engine: load a .pnn file and run it.

    import engine
    m = engine.load("model.pnn")          # backend="auto" | "numba" | "numpy"
    logits = m.run(m.preprocess(images))  # images: uint8 HW / NHW / NCHW
"""

from engine.errors import ModelError
from engine.inputs import InputError
from engine.runtime import Model, load

__all__ = ["InputError", "Model", "ModelError", "load"]
