"""Models built here for the tests: MATLAB-style, MatMul MLPs, tf2onnx-style NHWC, torch exports.

Every builder is deterministic (seeded) and small, so a test can build it in milliseconds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

MATLAB_PRODUCER = "MATLAB Deep Learning Toolbox Converter for ONNX Model Format"


def _init(rng, name, shape, scale=None):
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else shape[0]
    scale = scale if scale is not None else 1.0 / np.sqrt(max(fan_in, 1))
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def matlab_alexnet(
    opset: int = 8, size: int = 35, classes: int = 5, seed: int = 0, full: bool = False
) -> onnx.ModelProto:
    """An AlexNet-shaped graph as exportONNXNetwork writes it.

    Mean-image Sub, Conv + Relu + LRN + MaxPool, grouped convolutions (group=2), Flatten,
    Gemm(transB=1) fully-connected layers with Dropout between them, Softmax output; opset 8
    (Flatten v1, Dropout v7, Gemm v7) or 13. `full=True` gives the real AlexNet's shapes
    (227x227 input, 61M parameters, 1000 classes) for benchmarks; the default is a small one.
    """
    if full:
        size, classes = 227, 1000
        conv1_kernel, conv1_stride, conv2_kernel = 11, 4, 5
        widths, fc_widths, pool3 = (96, 256, 384, 384, 256), (4096, 4096), True
    else:
        conv1_kernel, conv1_stride, conv2_kernel = 5, 2, 3
        widths, fc_widths, pool3 = (16, 24, 32, 32, 16), (64, 64), False
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.random((1, 3, size, size)) * 128).astype(np.float32), "data_Mean")]
    nodes = [helper.make_node("Sub", ["data", "data_Mean"], ["data_Sub"], name="data_Sub")]

    def conv(name, source, cin, cout, k, stride=1, pad=0, group=1):
        inits.append(_init(rng, f"{name}_W", (cout, cin // group, k, k)))
        inits.append(_init(rng, f"{name}_B", (cout,), 0.1))
        attributes = {"kernel_shape": [k, k], "strides": [stride, stride], "pads": [pad] * 4, "group": group}
        nodes.append(helper.make_node("Conv", [source, f"{name}_W", f"{name}_B"], [name], name=name, **attributes))
        nodes.append(helper.make_node("Relu", [name], [f"relu_{name}"], name=f"relu_{name}"))
        return f"relu_{name}"

    def lrn(name, source):
        nodes.append(helper.make_node("LRN", [source], [name], name=name, size=5, alpha=1e-4, beta=0.75, bias=1.0))
        return name

    def pool(name, source):
        nodes.append(helper.make_node("MaxPool", [source], [name], name=name, kernel_shape=[3, 3], strides=[2, 2]))
        return name

    side = (size - conv1_kernel) // conv1_stride + 1
    x = pool("pool1", lrn("norm1", conv("conv1", "data_Sub", 3, widths[0], conv1_kernel, stride=conv1_stride)))
    side = (side - 3) // 2 + 1
    x = conv("conv2", x, widths[0], widths[1], conv2_kernel, pad=conv2_kernel // 2, group=2)
    x = pool("pool2", lrn("norm2", x))
    side = (side - 3) // 2 + 1
    x = conv("conv3", x, widths[1], widths[2], 3, pad=1)
    x = conv("conv4", x, widths[2], widths[3], 3, pad=1, group=2)
    x = conv("conv5", x, widths[3], widths[4], 3, pad=1, group=2)
    if pool3:
        x = pool("pool5", x)
        side = (side - 3) // 2 + 1
    nodes.append(helper.make_node("Flatten", [x], ["flat"], name="fc6_Flatten", axis=1))
    features = widths[4] * side * side
    source = "flat"
    for index, (name, width) in enumerate(zip(("fc6", "fc7", "fc8"), (*fc_widths, classes), strict=True)):
        inits.append(_init(rng, f"{name}_W", (width, features)))
        inits.append(_init(rng, f"{name}_B", (width,), 0.1))
        nodes.append(helper.make_node("Gemm", [source, f"{name}_W", f"{name}_B"], [name], name=name, transB=1))
        source, features = name, width
        if index < 2:
            nodes.append(helper.make_node("Relu", [source], [f"relu{name}"], name=f"relu{name}"))
            dropout_attrs = {"ratio": 0.5} if opset < 12 else {}
            nodes.append(
                helper.make_node("Dropout", [f"relu{name}"], [f"drop{name}"], name=f"drop{name}", **dropout_attrs)
            )
            source = f"drop{name}"
    nodes.append(helper.make_node("Softmax", [source], ["prob"], name="prob", axis=1))
    graph = helper.make_graph(
        nodes,
        "matlab_alexnet",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name=MATLAB_PRODUCER)
    model.producer_version = "23.2.0"
    model.ir_version = 4 if opset <= 8 else 7
    onnx.checker.check_model(model)
    return model


def matmul_mlp(seed: int = 1, opset: int = 13) -> onnx.ModelProto:
    """A fully-connected network stored as MatMul (W [in, out]) + Add, symbolic batch (MATLAB's cora style)."""
    rng = np.random.default_rng(seed)
    widths = [20, 32, 16, 4]
    inits, nodes, source = [], [], "input"
    for index, (fan_in, fan_out) in enumerate(zip(widths[:-1], widths[1:], strict=True), 1):
        inits.append(_init(rng, f"fc_{index}_MatMul_W", (fan_in, fan_out), 1.0 / np.sqrt(fan_in)))
        inits.append(_init(rng, f"fc_{index}_Add_B", (fan_out,), 0.1))
        nodes.append(
            helper.make_node(
                "MatMul", [source, f"fc_{index}_MatMul_W"], [f"fc_{index}_MatMul"], name=f"fc_{index}_MatMul"
            )
        )
        nodes.append(
            helper.make_node(
                "Add", [f"fc_{index}_MatMul", f"fc_{index}_Add_B"], [f"fc_{index}_Add"], name=f"fc_{index}_Add"
            )
        )
        source = f"fc_{index}_Add"
        if index < len(widths) - 1:
            nodes.append(helper.make_node("Relu", [source], [f"relu_{index}"], name=f"relu_{index}"))
            source = f"relu_{index}"
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["BatchSize", widths[0]])],
        [helper.make_tensor_value_info(source, TensorProto.FLOAT, ["BatchSize", widths[-1]])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name=MATLAB_PRODUCER)
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def tf2onnx_nhwc(seed: int = 2) -> onnx.ModelProto:
    """A tf2onnx-style graph: NHWC input, Transpose to NCHW, Conv, pooling, Reshape, MatMul + Add, Softmax."""
    rng = np.random.default_rng(seed)
    inits = [
        _init(rng, "conv2d/kernel", (8, 3, 3, 3)),
        _init(rng, "conv2d/bias", (8,), 0.1),
        _init(rng, "dense/kernel", (8, 6)),
        _init(rng, "dense/bias", (6,), 0.1),
        numpy_helper.from_array(np.array([-1, 8], dtype=np.int64), "flatten/shape"),
    ]
    nodes = [
        helper.make_node("Transpose", ["input_1"], ["nchw"], name="transpose_to_nchw", perm=[0, 3, 1, 2]),
        helper.make_node("Conv", ["nchw", "conv2d/kernel", "conv2d/bias"], ["conv"], name="conv2d", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv"], ["relu"], name="conv2d/Relu"),
        helper.make_node("GlobalAveragePool", ["relu"], ["gap"], name="global_average_pooling2d"),
        helper.make_node("Reshape", ["gap", "flatten/shape"], ["flat"], name="flatten/Reshape"),
        helper.make_node("MatMul", ["flat", "dense/kernel"], ["dense_mm"], name="dense/MatMul"),
        helper.make_node("Add", ["dense_mm", "dense/bias"], ["logits"], name="dense/BiasAdd"),
        helper.make_node("Softmax", ["logits"], ["dense"], name="dense/Softmax", axis=1),
    ]
    graph = helper.make_graph(
        nodes,
        "tf2onnx",
        [helper.make_tensor_value_info("input_1", TensorProto.FLOAT, ["unk__6", 12, 12, 3])],
        [helper.make_tensor_value_info("dense", TensorProto.FLOAT, ["unk__7", 6])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="tf2onnx")
    model.producer_version = "1.16.1"
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def vgg_bn_module(seed: int = 3):
    """A small VGG with BatchNorm (torch), with non-trivial BatchNorm statistics."""
    import torch
    from torch import nn

    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1),
        nn.BatchNorm2d(16),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * 4 * 4, 32),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(32, 10),
    )
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.1, 0.1)
    return model.eval()


def export_vgg(path: Path, dynamo: bool) -> Path:
    """Export `vgg_bn_module` with torch.onnx.export, BatchNorm kept, symbolic batch.

    dynamo=True: the default exporter of recent torch (opset 18+, Reshape(allowzero=1)), with its
    graph optimiser off so BatchNormalization stays a node. dynamo=False: the TorchScript exporter
    at opset 13 in PRESERVE mode (in EVAL mode it folds BatchNorm into the Conv).
    """
    import torch

    model = vgg_bn_module()
    example = torch.randn(2, 3, 16, 16)
    common = {"input_names": ["images"], "output_names": ["logits"]}
    if dynamo:
        batch = torch.export.Dim("batch", min=1, max=1024)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            optimize=False,
            verbose=False,
            dynamic_shapes=({0: batch},),
            **common,
        )
    else:
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=13,
            training=torch.onnx.TrainingMode.PRESERVE,
            do_constant_folding=False,
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}},
            **common,
        )
    return path


def save(model: onnx.ModelProto, path: Path) -> Path:
    """Write a fixture to disk and return its path."""
    onnx.save_model(model, str(path))
    return path


def image_folder(root: Path, classes=("cat", "dog", "fish"), per_class: int = 4, size=(12, 10), seed: int = 0) -> Path:
    """A folder of PNG images in class subfolders (imageDatastore layout), sizes varying by class."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for number in range(per_class):
            height, width = size[0] + index, size[1] + index  # sizes differ: loading must resize
            pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{name}_{number}.png")
    return root


def class_images(count: int, size: int = 35, classes: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Learnable synthetic images (N x H x W x 3, uint8): each class brightens its own horizontal band."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count) % classes
    images = rng.integers(0, 100, (count, size, size, 3)).astype(np.uint8)
    band = size // classes
    for index, label in enumerate(labels):
        images[index, label * band : (label + 1) * band] += 120
    return images, labels.astype(np.int64)


def concat_net(seed: int = 4) -> onnx.ModelProto:
    """Two convolutions concatenated on the channel axis, then a conv, pooling and a Gemm."""
    rng = np.random.default_rng(seed)
    inits = [
        _init(rng, "a_W", (6, 3, 3, 3)), _init(rng, "a_B", (6,), 0.1),
        _init(rng, "b_W", (4, 3, 1, 1)), _init(rng, "b_B", (4,), 0.1),
        _init(rng, "c_W", (8, 10, 3, 3)), _init(rng, "c_B", (8,), 0.1),
        _init(rng, "fc_W", (5, 8)), _init(rng, "fc_B", (5,), 0.1),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "a_W", "a_B"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Conv", ["x", "b_W", "b_B"], ["b"], name="conv_b"),
        helper.make_node("Concat", ["a", "b"], ["ab"], name="concat", axis=1),
        helper.make_node("Relu", ["ab"], ["r"], name="relu"),
        helper.make_node("Conv", ["r", "c_W", "c_B"], ["c"], name="conv_c", pads=[1, 1, 1, 1]),
        helper.make_node("GlobalAveragePool", ["c"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_W", "fc_B"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "concat",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="onnx.helper")
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model


def depthwise_net(seed: int = 5) -> onnx.ModelProto:
    """Conv -> depthwise Conv (group = channels) -> Sigmoid -> 1x1 Conv -> pooling -> Gemm."""
    rng = np.random.default_rng(seed)
    inits = [
        _init(rng, "c1_W", (8, 3, 3, 3)), _init(rng, "c1_B", (8,), 0.1),
        _init(rng, "dw_W", (8, 1, 3, 3)), _init(rng, "dw_B", (8,), 0.1),
        _init(rng, "pw_W", (6, 8, 1, 1)), _init(rng, "pw_B", (6,), 0.1),
        _init(rng, "fc_W", (4, 6)), _init(rng, "fc_B", (4,), 0.1),
    ]  # fmt: skip
    nodes = [
        helper.make_node("Conv", ["x", "c1_W", "c1_B"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "dw_W", "dw_B"], ["dw"], name="depthwise", pads=[1, 1, 1, 1], group=8),
        helper.make_node("Sigmoid", ["dw"], ["s"], name="sigmoid"),
        helper.make_node("Conv", ["s", "pw_W", "pw_B"], ["pw"], name="pointwise"),
        helper.make_node("MaxPool", ["pw"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p"], ["g"], name="gap"),
        helper.make_node("Flatten", ["g"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc_W", "fc_B"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes,
        "depthwise",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="onnx.helper")
    model.ir_version = 7
    onnx.checker.check_model(model)
    return model
