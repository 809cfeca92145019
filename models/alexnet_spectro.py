"""AlexNet-shaped reference model for the built-in spectrogram data, exported the way MATLAB does.

The AlexNet layout (conv 11x11 stride 4, LRN, max pooling, grouped conv2/4/5, three
fully-connected layers with dropout) with widths reduced to train on a laptop CPU, for 64x64
grayscale spectrograms of six signal classes (`onnxprune.demo.spectrograms`).

The ONNX file is written as MATLAB's `exportONNXNetwork` writes: opset 8, input `data` with a
fixed batch of 1, a mean-image `Sub` ("zerocenter" normalisation: the model takes raw 0-255
pixels), `LRN`, `Flatten` + `Gemm(transB=1)` fully-connected layers, `Dropout` v7, a `Softmax`
output named `prob`, MATLAB's layer names and producer name (its `doc_string` says it was
written by this script, not by MATLAB).

Train and export:  .venv/bin/python models/alexnet_spectro.py --out models/alexnet_spectro.onnx
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from onnxprune.demo.spectrograms import CLASSES, SIZE  # noqa: E402

MATLAB_PRODUCER = "MATLAB Deep Learning Toolbox Converter for ONNX Model Format"
WIDTHS = {"conv1": 48, "conv2": 128, "conv3": 192, "conv4": 192, "conv5": 128, "fc6": 256, "fc7": 256}
LRN = {"size": 5, "alpha": 1e-4, "beta": 0.75, "bias": 1.0}


class AlexNetSpectro(nn.Module):
    """AlexNet layout for 1 x 64 x 64 inputs (raw 0-255 pixels minus the mean image)."""

    def __init__(self, mean_image: torch.Tensor, classes: int = len(CLASSES)):
        super().__init__()
        w = WIDTHS
        self.register_buffer("mean", mean_image.reshape(1, 1, SIZE, SIZE))
        self.conv1 = nn.Conv2d(1, w["conv1"], 11, stride=4, padding=2)  # 64 -> 15
        self.conv2 = nn.Conv2d(w["conv1"], w["conv2"], 5, padding=2, groups=2)
        self.conv3 = nn.Conv2d(w["conv2"], w["conv3"], 3, padding=1)
        self.conv4 = nn.Conv2d(w["conv3"], w["conv4"], 3, padding=1, groups=2)
        self.conv5 = nn.Conv2d(w["conv4"], w["conv5"], 3, padding=1, groups=2)
        self.fc6 = nn.Linear(w["conv5"], w["fc6"])
        self.fc7 = nn.Linear(w["fc6"], w["fc7"])
        self.fc8 = nn.Linear(w["fc7"], classes)
        self.norm = nn.LocalResponseNorm(LRN["size"], LRN["alpha"], LRN["beta"], LRN["bias"])
        self.drop = nn.Dropout(0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (the exported graph ends with a Softmax)."""
        x = x - self.mean
        x = F.max_pool2d(self.norm(F.relu(self.conv1(x))), 3, 2)  # 15 -> 7
        x = F.max_pool2d(self.norm(F.relu(self.conv2(x))), 3, 2)  # 7 -> 3
        x = F.relu(self.conv3(x))
        x = F.relu(self.conv4(x))
        x = F.max_pool2d(F.relu(self.conv5(x)), 3, 2)  # 3 -> 1
        x = torch.flatten(x, 1)
        x = self.drop(F.relu(self.fc6(x)))
        x = self.drop(F.relu(self.fc7(x)))
        return self.fc8(x)


def load_split(root: Path, split: str):
    """Images (raw 0-255, N x 1 x 64 x 64 float), labels and class names of one split."""
    from onnxprune.workbench.data import load_data

    data = load_data(root / split)
    images = torch.from_numpy(data.images).permute(0, 3, 1, 2).float()  # raw 0-255
    return images, torch.from_numpy(data.labels), data.classes


def train(root: Path, epochs: int, seed: int) -> tuple[AlexNetSpectro, dict]:
    """Adam with a cosine schedule on the training split; test accuracy after every epoch."""
    torch.manual_seed(seed)
    x_train, y_train, classes = load_split(root, "train")
    x_test, y_test, _ = load_split(root, "test")
    assert tuple(classes) == tuple(sorted(CLASSES))
    model = AlexNetSpectro(x_train.mean(dim=0))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs)
    generator = torch.Generator().manual_seed(seed)
    history = []
    for epoch in range(1, epochs + 1):
        model.train()
        order = torch.randperm(len(y_train), generator=generator)
        started, loss_sum = time.perf_counter(), 0.0
        for start in range(0, len(order), 64):
            index = order[start : start + 64]
            loss = F.cross_entropy(model(x_train[index]), y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += float(loss.detach()) * len(index)
        scheduler.step()
        model.eval()
        with torch.no_grad():
            accuracy = float((model(x_test).argmax(1) == y_test).float().mean())
        history.append({"epoch": epoch, "loss": loss_sum / len(order), "test_top1": accuracy,
                        "seconds": time.perf_counter() - started})  # fmt: skip
        print(json.dumps(history[-1]), flush=True)
    return model.eval(), {"history": history, "test_top1": history[-1]["test_top1"]}


def export_matlab_style(model: AlexNetSpectro) -> onnx.ModelProto:
    """The ONNX graph exportONNXNetwork would write for this network (opset 8)."""
    state = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    inits = [numpy_helper.from_array(state["mean"].reshape(1, 1, SIZE, SIZE), "data_Mean")]
    nodes = [helper.make_node("Sub", ["data", "data_Mean"], ["data_Sub"], name="data_Sub")]

    def conv(name, source, module):
        inits.extend([numpy_helper.from_array(state[f"{name}.weight"], f"{name}_W"),
                      numpy_helper.from_array(state[f"{name}.bias"], f"{name}_B")])  # fmt: skip
        attributes = {
            "kernel_shape": list(module.kernel_size), "strides": list(module.stride),
            "pads": list(module.padding) * 2, "group": module.groups, "dilations": [1, 1],
        }  # fmt: skip
        nodes.append(helper.make_node("Conv", [source, f"{name}_W", f"{name}_B"], [name], name=name, **attributes))
        relu = name.replace("conv", "relu")
        nodes.append(helper.make_node("Relu", [name], [relu], name=relu))
        return relu

    def pool(name, source):
        nodes.append(helper.make_node("MaxPool", [source], [name], name=name, kernel_shape=[3, 3], strides=[2, 2]))
        return name

    def lrn(name, source):
        nodes.append(helper.make_node("LRN", [source], [name], name=name, **LRN))
        return name

    x = pool("pool1", lrn("norm1", conv("conv1", "data_Sub", model.conv1)))
    x = pool("pool2", lrn("norm2", conv("conv2", x, model.conv2)))
    x = conv("conv3", x, model.conv3)
    x = conv("conv4", x, model.conv4)
    x = pool("pool5", conv("conv5", x, model.conv5))
    nodes.append(helper.make_node("Flatten", [x], ["fc6_Flatten"], name="fc6_Flatten", axis=1))
    source = "fc6_Flatten"
    for name in ("fc6", "fc7", "fc8"):
        inits.extend([numpy_helper.from_array(state[f"{name}.weight"], f"{name}_W"),
                      numpy_helper.from_array(state[f"{name}.bias"], f"{name}_B")])  # fmt: skip
        nodes.append(helper.make_node("Gemm", [source, f"{name}_W", f"{name}_B"], [name], name=name, transB=1))
        source = name
        if name != "fc8":
            relu, drop = name.replace("fc", "relu"), name.replace("fc", "drop")
            nodes.append(helper.make_node("Relu", [name], [relu], name=relu))
            nodes.append(helper.make_node("Dropout", [relu], [drop], name=drop, ratio=0.5))
            source = drop
    nodes.append(helper.make_node("Softmax", [source], ["prob"], name="prob", axis=1))
    graph = helper.make_graph(
        nodes,
        "alexnet_spectro",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 1, SIZE, SIZE])],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, [1, len(CLASSES)])],
        inits,
    )
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 8)], producer_name=MATLAB_PRODUCER)
    proto.producer_version = "onnxprune-reference-1"
    proto.ir_version = 4
    proto.doc_string = "Written by onnxprune models/alexnet_spectro.py in the layout of MATLAB's exportONNXNetwork."
    onnx.checker.check_model(proto)
    return proto


def main() -> None:
    """Train, export, check the export against torch, write the model card's numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "models" / "alexnet_spectro.onnx")
    args = parser.parse_args()
    from onnxprune.demo.spectrograms import generate

    root = generate()
    model, record = train(root, args.epochs, args.seed)
    proto = export_matlab_style(model)
    onnx.save_model(proto, str(args.out))
    # the exported graph computes what the torch model does
    import onnxruntime as ort

    session = ort.InferenceSession(str(args.out), providers=["CPUExecutionProvider"])
    sample = load_split(root, "test")[0][:1]
    with torch.no_grad():
        expected = torch.softmax(model(sample), 1).numpy()
    np.testing.assert_allclose(session.run(None, {"data": sample.numpy()})[0], expected, rtol=1e-4, atol=1e-5)
    record.update(vars(args) | {"out": str(args.out), "date": time.strftime("%Y-%m-%d")})
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2))
    print(f"test top-1 {record['test_top1']:.4f}; wrote {args.out}")


if __name__ == "__main__":
    main()
