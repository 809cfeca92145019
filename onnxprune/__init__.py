"""onnxprune: prune ONNX classifiers from MATLAB and PyTorch, verified in onnxruntime.

The Python API has the CLI's verbs::

    import onnxprune
    model = onnxprune.load("alexnet.onnx")
    result = onnxprune.prune(model, 0.9, scope="global")
    onnxprune.save(result, "alexnet_pruned.onnx")
"""

from onnxprune.errors import OnnxpruneError
from onnxprune.inspection import describe
from onnxprune.model import Model, load
from onnxprune.pruning import PruneResult, prune, save

__all__ = ["Model", "OnnxpruneError", "PruneResult", "describe", "load", "prune", "save"]
__version__ = "0.1.0"
