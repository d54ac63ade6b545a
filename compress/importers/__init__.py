"""Importers: trained models from other frameworks as our graph IR (engine/ir.py).

    compress.importers.onnx_import.import_onnx(path)   # needs pip install 'pocketnn[onnx]'
    compress.importers.torch_checkpoint.read_torch_checkpoint(path) -> {name: ndarray}
    compress.importers.npz.read_npz(path) -> {name: ndarray}

The weight readers need neither torch nor anything beyond NumPy; their arrays become a graph
through compress/imagenet_zoo.py (`build(arch, tensors)`). Every file is untrusted: failures
are one CheckpointError (compress/importers/errors.py) naming the file.
"""
