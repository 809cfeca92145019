"""ONNX -> torch through onnx2torch, and the map from torch parameters back to initializers.

`to_torch` returns a `TorchModel`: the fx.GraphModule onnx2torch builds, and a `ParamMap` that links
every prunable layer to the torch parameter holding its weight, with the transpose and scale in
between. The link is checked by exact equality at load, so a wrong mapping can never silently
write the wrong tensor back.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import types
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, NoReturn

import numpy as np
import torch
from onnx import numpy_helper
from torch import fx, nn
from torch.nn.utils import prune as torch_prune

from onnxprune.errors import ConversionError, stage
from onnxprune.graph.model import Model, PrunableLayer, conversion_copy, is_quantized
from onnxprune.graph.proto import attribute, is_stand_in
from onnxprune.graph.sanitise import check_convertible, register_known_revisions

if TYPE_CHECKING:
    import onnx

_LOG = logging.getLogger(__name__)


def import_onnx2torch() -> types.ModuleType:
    """Import onnx2torch, surviving a torchvision that does not match the installed torch.

    onnx2torch imports torchvision at import time, only for its NonMaxSuppression and RoiAlign
    converters. A torchvision built for another torch fails with "operator torchvision::nms does
    not exist"; classifiers need neither op, so a stand-in module is installed that raises a clear
    error if one of those two converters ever runs.
    """
    if "onnx2torch" in sys.modules:
        return sys.modules["onnx2torch"]
    try:
        import torchvision  # noqa: F401
    except Exception as exc:  # RuntimeError for a mismatch, ImportError when absent
        with _torchvision_stand_in(f"{type(exc).__name__}: {exc}"):
            import onnx2torch
    else:
        import onnx2torch

    from onnxprune.workbench.converters import install

    install()  # before the revisions copy onnx2torch's converters, so the copies have the fallbacks
    register_known_revisions()
    return onnx2torch


@contextlib.contextmanager
def _torchvision_stand_in(reason: str) -> Iterator[None]:
    """Put a stand-in `torchvision` in sys.modules while onnx2torch is imported, then remove it.

    onnx2torch keeps its references to the stand-in; everything else (torch.onnx's exporter looks
    torchvision up by name) sees the same environment as without onnxprune.
    """
    broken = {name: sys.modules.pop(name) for name in list(sys.modules) if name.split(".")[0] == "torchvision"}

    def unavailable(*_args: object, **_kwargs: object) -> NoReturn:
        raise ConversionError(
            f"this graph needs torchvision, which failed to import ({reason}); "
            "install the torchvision release that matches your torch"
        )

    stand_in = types.ModuleType("torchvision")
    ops = types.ModuleType("torchvision.ops")
    ops.nms = ops.box_convert = ops.roi_align = unavailable
    stand_in.ops = ops
    sys.modules["torchvision"], sys.modules["torchvision.ops"] = stand_in, ops
    _LOG.debug("torchvision unusable (%s); onnx2torch imported with a stand-in", reason)
    try:
        yield
    finally:
        del sys.modules["torchvision"], sys.modules["torchvision.ops"]
        del broken  # the half-imported modules are not put back: importing them again fails the same way


class BoundWeight(nn.Module):
    """Holds an initializer as a real parameter for an onnx2torch module that takes it as an input.

    onnx2torch turns `MatMul(x, W)` into a parameterless OnnxMatMul fed from a buffer, which neither
    an optimizer nor `torch.nn.utils.prune` can see. This wrapper owns `weight` (ONNX layout) and
    passes it to the wrapped module at its original argument position, so forward pre-hooks
    (pruning masks) apply on every call.
    """

    def __init__(self, inner: nn.Module, weight: torch.Tensor, position: int) -> None:
        super().__init__()
        self.inner = inner
        self.weight = nn.Parameter(weight.detach())
        self.position = position

    def forward(self, *args: torch.Tensor) -> torch.Tensor:  # noqa: D102 - same contract as the wrapped module
        args = list(args)
        args.insert(self.position, self.weight)
        return self.inner(*args)


def mask_parameter(module: nn.Module, name: str, keep: torch.Tensor, keep_masks: bool) -> None:
    """Zero `module.<name>` where `keep` is False: as a torch.nn.utils.prune mask, or in place.

    With `keep_masks` the zeros hold through fine-tuning (the mask multiplies on every forward);
    otherwise the values are overwritten, which costs no extra copy of the weights.
    """
    target = getattr(module, name)
    keep = keep.to(target.device)
    if keep_masks:
        torch_prune.custom_from_mask(module, name, keep)
    else:
        with torch.no_grad():
            target.masked_fill_(~keep, 0.0)


def current_value(module: nn.Module, name: str) -> torch.Tensor:
    """A tensor as the next forward will use it.

    Under torch.nn.utils.prune, `module.weight` is recomputed as `weight_orig * weight_mask` by
    a forward pre-hook, so after an optimizer step it is stale until the next forward; this
    computes it now.
    """
    if hasattr(module, f"{name}_orig") and hasattr(module, f"{name}_mask"):
        return getattr(module, f"{name}_orig") * getattr(module, f"{name}_mask")
    return getattr(module, name)


@dataclass
class ParamEntry:
    """How one prunable layer's weight lives in torch.

    torch_weight = scale * (onnx_weight.T if transpose else onnx_weight)
    """

    layer: PrunableLayer
    module: nn.Module
    transpose: bool = False
    scale: float = 1.0

    @property
    def parameter(self) -> torch.Tensor:
        """The weight as the module computes with it (masked, when a mask is applied)."""
        return current_value(self.module, "weight")

    def to_onnx(self) -> np.ndarray:
        """The current weight in ONNX layout, as float32 numpy."""
        weight = self.parameter.detach().to("cpu", torch.float32)
        if self.scale != 1.0:
            weight = weight / self.scale
        if self.transpose:
            weight = weight.T
        return weight.contiguous().numpy()

    @property
    def torch_out_axis(self) -> int:
        """The axis of the torch weight that indexes output channels / neurons."""
        # only 2-D weights are transposed, so the axis mirrors
        return len(self.layer.shape) - 1 - self.layer.out_axis if self.transpose else self.layer.out_axis

    def layout_to_torch(self, array: np.ndarray) -> torch.Tensor:
        """An ONNX-layout array (a mask, say) in the torch weight's layout, unscaled."""
        return torch.from_numpy(np.ascontiguousarray(array.T if self.transpose else array))

    def layout_to_onnx(self, array: np.ndarray) -> np.ndarray:
        """A torch-layout array (scores per weight, say) in the ONNX weight's layout."""
        return np.ascontiguousarray(array.T if self.transpose else array)

    def from_onnx(self, array: np.ndarray) -> torch.Tensor:
        """What the torch parameter holds for an ONNX-layout `array`."""
        weight = torch.from_numpy(np.array(array))
        if self.transpose:
            weight = weight.T
        if self.scale != 1.0:
            weight = weight * self.scale
        return weight


class ParamMap(dict):
    """Layer name -> `ParamEntry`, in graph order."""

    def check(self, model: Model) -> None:
        """Assert every torch weight equals its initializer exactly (raises ConversionError)."""
        for entry in self.values():
            expected = entry.from_onnx(model.weight_array(entry.layer)).to(entry.parameter.dtype)
            if tuple(expected.shape) != tuple(entry.parameter.shape) or not torch.equal(
                expected, entry.parameter.detach().cpu()
            ):
                raise ConversionError(
                    f"layer '{entry.layer.name}': the torch weight does not equal initializer "
                    f"'{entry.layer.weight}' after conversion; please report this model"
                )


@dataclass
class TorchModel:
    """A converted model: the GraphModule and the map back to the ONNX initializers.

    Attributes:
        module: the fx.GraphModule onnx2torch built.
        params: prunable layer name -> `ParamEntry`.
        node_modules: first output name of each ONNX node -> the torch module that computes it.
    """

    module: fx.GraphModule
    params: ParamMap
    node_modules: dict[str, nn.Module]

    def initializer_values(self, model: Model) -> dict[str, np.ndarray]:
        """Every initializer that torch can change, as it is now, in ONNX layout.

        Prunable weights, Conv and fully-connected biases, and BatchNormalization scale, shift
        and running statistics: what fine-tuning updates. Constants onnx2torch keeps as buffers
        (the mean image, Add biases of MatMul layers) are not trained and not listed.
        """
        values = {entry.layer.weight: entry.to_onnx() for entry in self.params.values()}
        for node in model.proto.graph.node:
            module = self.node_modules.get(node.output[0]) if node.output else None
            values.update(_trainable_inputs(node, module))
        return values


@stage("conversion to torch")
def to_torch(model: Model) -> TorchModel:
    """Convert a loaded model to torch, map its prunable weights, and check it computes what onnxruntime does.

    The check (`onnxprune.workbench.fidelity.check_conversion`) runs once per `Model` and is kept
    on it (`Model.conversion_check`).

    Raises:
        ConversionError: an op onnx2torch cannot convert (names the op and the node), or a
            weight that cannot be mapped back exactly.
        ConversionMismatch: the converted model's outputs differ from onnxruntime's on the input
            graph; it names the first node that differs and carries the torch model, for callers
            that need only its weights.
    """
    if is_quantized(model.proto):
        raise ConversionError(
            "this model is quantized (QuantizeLinear / DequantizeLinear): torch cannot train or prune it; "
            "prune the float model, then quantize the result"
        )
    onnx2torch = import_onnx2torch()
    copy = conversion_copy(model.proto)
    check_convertible(copy)
    try:
        with _values_from(model.proto):
            module = onnx2torch.convert(copy, attach_onnx_mapping=True)
    except ConversionError:
        raise
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConversionError(f"onnx2torch cannot convert this graph: {message}") from None
    del copy
    module.eval()
    params = _map_parameters(model, module)
    params.check(model)
    node_modules = {output: module.get_submodule(node.target) for output, node in _modules_by_output(module).items()}
    torch_model = TorchModel(module=module, params=params, node_modules=node_modules)
    _freeze_unwritten(torch_model, model)
    _check_fidelity(model, torch_model)
    return torch_model


def _check_fidelity(model: Model, torch_model: TorchModel) -> None:
    """Compare the conversion with onnxruntime once per model; raise `ConversionMismatch` where it differs."""
    from onnxprune.workbench.fidelity import ConversionMismatch, check_conversion, mismatch_message

    if model.conversion_check is None:
        model.conversion_check = check_conversion(model, torch_model.module)
    check = model.conversion_check
    if not check.usable:
        raise ConversionMismatch(mismatch_message(check), torch_model, check)


# the parameters of a converted module that `_trainable_inputs` writes back, by module type
_WRITTEN_ATTRIBUTES = ((nn.modules.batchnorm._BatchNorm, ("weight", "bias")), (nn.Module, ("bias",)))


def _freeze_unwritten(torch_model: TorchModel, model: Model) -> None:
    """Stop gradients to torch parameters that no initializer of the written model receives.

    A weight the conversion copy folded (a standardised Conv weight, a blur kernel held in a
    Constant) becomes a torch parameter, but the written model still computes it from the
    original graph: trained, it would make torch and the written file disagree.
    """
    written = {id(entry.module.weight) for entry in torch_model.params.values()}
    for node in model.proto.graph.node:
        module = torch_model.node_modules.get(node.output[0]) if node.output else None
        if module is None or not _trainable_inputs(node, module):
            continue
        if isinstance(module, nn.Sequential):
            module = next((child for child in module if isinstance(child, nn.modules.conv._ConvNd)), module)
        names = next(names for kind, names in _WRITTEN_ATTRIBUTES if isinstance(module, kind))
        parameters = [getattr(module, name, None) for name in names]
        written.update(id(p) for p in parameters if isinstance(p, nn.Parameter))
    for parameter in torch_model.module.parameters():
        if id(parameter) not in written:
            parameter.requires_grad_(False)


@contextlib.contextmanager
def _values_from(original: onnx.ModelProto) -> Iterator[None]:
    """While converting a skeleton, give onnx2torch each stand-in's value from the original proto.

    Every converter of onnx2torch reads initializer values through `OnnxTensor.to_torch`; routing
    that one method keeps a single copy of the weights (the torch one) besides the original.
    """
    from onnx2torch.onnx_tensor import OnnxTensor

    originals = {tensor.name: tensor for tensor in original.graph.initializer}
    own_to_torch = OnnxTensor.to_torch

    def to_torch(tensor: OnnxTensor) -> torch.Tensor:
        if is_stand_in(tensor.proto):
            return torch.from_numpy(np.array(numpy_helper.to_array(originals[tensor.name])))
        return own_to_torch(tensor)

    OnnxTensor.to_torch = to_torch
    try:
        yield
    finally:
        OnnxTensor.to_torch = own_to_torch


def _trainable_inputs(node: onnx.NodeProto, module: nn.Module | None) -> dict[str, np.ndarray]:
    """Initializer name -> value for the trainable tensors of one converted node besides its weight."""
    if module is None:
        return {}
    if isinstance(module, nn.Sequential):  # Sequential(pad, conv)
        module = next((child for child in module if isinstance(child, nn.modules.conv._ConvNd)), module)

    def numpy(tensor: torch.Tensor) -> np.ndarray:
        return tensor.detach().to("cpu", torch.float32).contiguous().numpy()

    if node.op_type == "Conv" and isinstance(module, nn.modules.conv._ConvNd) and module.bias is not None:
        return {node.input[2]: numpy(current_value(module, "bias"))} if len(node.input) > 2 and node.input[2] else {}
    if node.op_type == "Gemm" and isinstance(module, nn.Linear) and module.bias is not None and len(node.input) > 2:
        beta = attribute(node, "beta", 1.0)
        return {node.input[2]: numpy(current_value(module, "bias")) / beta}
    if node.op_type == "BatchNormalization" and isinstance(module, nn.modules.batchnorm._BatchNorm):
        scale, shift, mean, var = node.input[1:5]
        return {
            scale: numpy(current_value(module, "weight")),
            shift: numpy(current_value(module, "bias")),
            mean: numpy(module.running_mean),
            var: numpy(module.running_var),
        }
    return {}


def _modules_by_output(module: fx.GraphModule) -> dict[str, fx.Node]:
    by_output = {}
    for node in module.graph.nodes:
        if node.op == "call_module":
            mapping = getattr(module.get_submodule(node.target), "onnx_mapping", None)
            for output in getattr(mapping, "outputs", ()):
                by_output[output] = node
    return by_output


def _map_parameters(model: Model, module: fx.GraphModule) -> ParamMap:
    by_output = _modules_by_output(module)
    params = ParamMap()
    for layer in model.layers:
        fx_node = by_output.get(layer.output)
        if fx_node is None:
            raise ConversionError(f"layer '{layer.name}': no torch module produces '{layer.output}' after conversion")
        params[layer.name] = _entry_for(model, layer, module, fx_node)
    module.recompile()
    return params


def _entry_for(model: Model, layer: PrunableLayer, module: fx.GraphModule, fx_node: fx.Node) -> ParamEntry:
    submodule = module.get_submodule(fx_node.target)
    if isinstance(submodule, nn.Sequential):
        # asymmetric padding: onnx2torch writes Sequential(OnnxPadStatic, ConvNd)
        convolutions = [child for child in submodule if isinstance(child, nn.modules.conv._ConvNd)]
        if len(convolutions) == 1:
            submodule = convolutions[0]
    if isinstance(submodule, nn.modules.conv._ConvNd):
        return ParamEntry(layer, submodule)
    if isinstance(submodule, nn.Linear):
        node = _onnx_node(model, layer)
        trans_b = bool(attribute(node, "transB", 0))
        return ParamEntry(layer, submodule, transpose=not trans_b, scale=attribute(node, "alpha", 1.0))
    return ParamEntry(layer, _bind_weight(model, layer, module, fx_node))


def _onnx_node(model: Model, layer: PrunableLayer) -> onnx.NodeProto:
    return next(node for node in model.proto.graph.node if node.output and node.output[0] == layer.output)


def _bind_weight(model: Model, layer: PrunableLayer, module: fx.GraphModule, fx_node: fx.Node) -> BoundWeight:
    """Replace a module fed with the weight buffer by a `BoundWeight` that owns it."""
    expected = torch.from_numpy(np.array(model.weight_array(layer)))
    for position, arg in enumerate(fx_node.args):
        if isinstance(arg, fx.Node) and arg.op == "get_attr":
            owner_name, buffer_name = arg.target.rsplit(".", 1)
            owner = module.get_submodule(owner_name)
            buffer = owner.get_buffer(buffer_name)
            if tuple(buffer.shape) == tuple(expected.shape) and torch.equal(buffer, expected.to(buffer.dtype)):
                fx_node.args = fx_node.args[:position] + fx_node.args[position + 1 :]
                shared = bool(arg.users)  # a weight tied to another node keeps its buffer
                bound = BoundWeight(
                    module.get_submodule(fx_node.target), buffer.clone() if shared else buffer, position
                )
                bound.onnx_mapping = getattr(bound.inner, "onnx_mapping", None)
                module.add_submodule(fx_node.target, bound)
                if not shared:
                    module.graph.erase_node(arg)
                    del owner._buffers[buffer_name]
                return bound
    raise ConversionError(
        f"layer '{layer.name}' ({layer.op_type}): its weight '{layer.weight}' is not an input of the "
        "converted module; please report this model"
    )


def conversion_report(model: Model) -> dict:
    """`onnxprune inspect --check`: the conversion check and every node value compared, for a bug report.

    Returns a dict: converts (onnx2torch built a model), exact, summary (one line), max_abs_diff,
    nondeterministic, first (the first differing node, or None), nodes (every node value both
    engines compute, in topological order: node, op, revision, value, shapes, max_abs_diff,
    agrees), graph_nodes, and on a failed conversion error (its message).
    """
    from onnxprune.workbench.fidelity import ConversionMismatch, compare_nodes

    try:
        torch_model = to_torch(model)
    except ConversionMismatch as error:
        torch_model = error.torch_model
    except ConversionError as error:
        return {"converts": False, "exact": False, "summary": f"conversion fails: {error}", "error": str(error),
                "graph_nodes": len(model.proto.graph.node), "nodes": [], "first": None}  # fmt: skip
    check = model.conversion_check
    if check.unchecked:
        return {"converts": True, "exact": False, "summary": check.summary(), "error": check.unchecked,
                "graph_nodes": len(model.proto.graph.node), "nodes": [], "first": None}  # fmt: skip
    from onnxprune.graph.verify import random_batch

    nodes = compare_nodes(model.proto, torch_model.module, random_batch(model.input, 2, seed=0))
    return {
        "converts": True, "exact": check.exact, "summary": check.summary(), "max_abs_diff": check.max_abs_diff,
        "nondeterministic": check.nondeterministic, "first": asdict(check.first) if check.first else None,
        "nodes": [asdict(node) for node in nodes], "graph_nodes": len(model.proto.graph.node),
    }  # fmt: skip
