"""What `onnxprune inspect` reports: producer, opset, inputs/outputs, prunable layers."""

from __future__ import annotations

import numpy as np

from onnxprune.graph.model import Model, is_quantized


def describe(model: Model) -> dict:
    """A JSON-ready description of a loaded model.

    Keys: file, producer, opset, ir_version, input {name, shape, layout, elem_type}, outputs,
    layers [{name, op_type, weight, shape, params, zeros, sparsity, macs}], and totals
    (prunable_params, prunable_zeros, all_params, all_zeros, macs).
    """
    layers = []
    for layer in model.layers:
        weight = model.weight_array(layer)
        zeros = int(weight.size - np.count_nonzero(weight))
        layers.append(
            {
                "name": layer.name,
                "op_type": layer.op_type,
                "weight": layer.weight,
                "shape": list(layer.shape),
                "groups": layer.groups,
                "params": layer.numel,
                "zeros": zeros,
                "sparsity": zeros / layer.numel if layer.numel else 0.0,
                "macs": layer.macs,
            }
        )
    all_params, all_zeros = model.parameter_counts()
    return {
        "file": str(model.path) if model.path else None,
        "producer": model.producer,
        "opset": model.opset,
        "ir_version": model.proto.ir_version,
        "input": {
            "name": model.input.name,
            "shape": list(model.input.shape),
            "layout": _shown_layout(model.input.shape, model.input.layout),
            "elem_type": model.input.elem_type,
        },
        "outputs": list(model.outputs),
        "form": {  # what an importer must support (MATLAB's reads neither int8 QDQ nor sparse initializers)
            "quantized": is_quantized(model.proto),
            "sparse_initializers": len(model.proto.graph.sparse_initializer),
            "external_data": bool(model.external_data),
        },
        "layers": layers,
        "totals": {
            "prunable_params": sum(layer["params"] for layer in layers),
            "prunable_zeros": sum(layer["zeros"] for layer in layers),
            "all_params": all_params,
            "all_zeros": all_zeros,
            "macs": sum(layer["macs"] for layer in layers),
        },
    }


def _shown_layout(shape: tuple, layout: str) -> str:
    """The layout as a person reads it: MATLAB's feature vectors [1, 1, 1, 784] are flat, not images."""
    if len(shape) == 4 and shape[1] == 1 and 1 in (shape[2], shape[3]):
        return "flat"
    return layout
