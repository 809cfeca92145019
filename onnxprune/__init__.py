"""onnxprune: prune ONNX classifiers from MATLAB and PyTorch, verified in onnxruntime.

The Python API has the CLI's verbs::

    import onnxprune
    model = onnxprune.load("alexnet.onnx")
    result = onnxprune.prune(model, 0.9, scope="global")
    onnxprune.save(result, "alexnet_pruned.onnx")

The names below are imported on first use (PEP 562), so `import onnxprune` (and the CLI's
`--help` and error messages) do not wait for torch.
"""

from onnxprune.errors import OnnxpruneError

__all__ = ["Model", "OnnxpruneError", "PruneResult", "describe", "load", "prune", "save"]
__version__ = "0.1.0"

_LAZY = {
    "Model": "onnxprune.graph.model",
    "load": "onnxprune.graph.model",
    "describe": "onnxprune.graph.inspection",
    "PruneResult": "onnxprune.pruning.oneshot",
    "prune": "onnxprune.pruning.oneshot",
    "save": "onnxprune.pruning.oneshot",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'onnxprune' has no attribute '{name}'")
