"""Small torch networks, each built around one construct that once broke loading or compaction.

Every network is a classifier (3 x 16 x 16 images, 10 classes) with seeded weights and random
BatchNorm statistics, exported the way users export (`export`): torch's dynamo exporter with its
defaults, or TorchScript at a pinned opset. The constructs, from issue 25:

- ``same_padding``: TensorFlow-style SAME padding computed from the input's size at run time
  (timm's `pad_same`: Shape -> arithmetic -> Max -> Pad);
- ``token_batchnorm``: BatchNorm over the channels of a (B, N, C) token tensor reshaped from a
  computed shape (LeViT), so shape inference loses its rank;
- ``pool_unknown_rank``: average pooling after a reshape to a computed shape;
- ``weight_standardised``: convolutions whose weight the graph computes from an initializer
  (timm's StdConv2d: a BatchNormalization in training form over the weight);
- ``group_norm``: GroupNorm, which TorchScript writes as Reshape + InstanceNormalization;
- ``radix_reshape``: a block that reshapes its channel axis (split attention's radix softmax);
- ``mixed_depthwise``: channels Split into unequal groups, depthwise convolutions of 3, 5 and 7
  pixels, Concat (MixNet's MixedConv2d);
- ``recurrent_rows``: a bidirectional LSTM along the rows and a GRU along the columns of the
  feature map (Sequencer), ops onnx2torch has no converter for.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def _randomise(module: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in module.modules():
            if isinstance(layer, nn.modules.batchnorm._BatchNorm):
                layer.running_mean.copy_(torch.randn(layer.num_features, generator=generator) * 0.1)
                layer.running_var.copy_(torch.rand(layer.num_features, generator=generator) + 0.5)
            if isinstance(layer, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm)):
                layer.weight.copy_(torch.rand(layer.weight.shape, generator=generator) + 0.5)
                layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator) * 0.1)
    return module.eval()


class _Classifier(nn.Module):
    """stem conv -> `body` -> conv -> global average -> linear head."""

    def __init__(self, body: nn.Module, width: int = 16):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.body = body
        self.tail = nn.Sequential(nn.Conv2d(width, 24, 1), nn.BatchNorm2d(24), nn.ReLU())
        self.head = nn.Linear(24, 10)

    def forward(self, x):
        x = self.tail(self.body(self.stem(x)))
        return self.head(x.mean((2, 3)))


def _pad_same(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """timm's pad_same: the padding TensorFlow's SAME computes, from the input's size at run time."""
    height, width = x.size()[-2:]
    pad_h = max((math.ceil(height / stride) - 1) * stride + kernel - height, 0)
    pad_w = max((math.ceil(width / stride) - 1) * stride + kernel - width, 0)
    return F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])


class SameConv(nn.Conv2d):
    """A convolution with SAME padding computed at run time (timm's Conv2dSame)."""

    def forward(self, x):
        return super().forward(_pad_same(x, self.kernel_size[0], self.stride[0]))


class SamePadding(nn.Module):
    def __init__(self, width=16):
        super().__init__()
        self.conv = SameConv(width, width, 3, stride=2, padding=0)
        self.norm, self.act = nn.BatchNorm2d(width), nn.ReLU()
        self.conv2 = SameConv(width, width, 5, padding=0)

    def forward(self, x):
        return self.conv2(self.act(self.norm(self.conv(x))))


class TokenBatchNorm(nn.Module):
    """A linear layer on tokens followed by BatchNorm1d over their channels (LeViT's LinearNorm)."""

    def __init__(self, width=16):
        super().__init__()
        self.linear = nn.Linear(width, width, bias=False)
        self.norm = nn.BatchNorm1d(width)

    def forward(self, x):
        batch, channels, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, N, C)
        tokens = self.linear(tokens)
        tokens = self.norm(tokens.flatten(0, 1)).reshape_as(tokens)
        return F.relu(tokens).transpose(1, 2).reshape(batch, channels, height, width)


class PoolUnknownRank(nn.Module):
    """Average pooling of a tensor whose shape the graph computes (a pooling token mixer)."""

    def __init__(self, width=16):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 1)
        self.pool = nn.AvgPool2d(3, 1, 1, count_include_pad=False)

    def forward(self, x):
        batch, channels, height, width = x.shape
        y = self.conv(x).reshape(batch, channels, -1).reshape(batch, channels, height, width)
        return x + self.pool(y) - y


class StdConv(nn.Conv2d):
    """timm's StdConv2d: the weight standardised per filter by BatchNorm in training form."""

    def forward(self, x):
        weight = F.batch_norm(
            self.weight.reshape(1, self.out_channels, -1), None, None, training=True, momentum=0.0, eps=1e-6
        ).reshape_as(self.weight)
        return F.conv2d(x, weight, self.bias, self.stride, self.padding)


class WeightStandardised(nn.Module):
    def __init__(self, width=16):
        super().__init__()
        self.conv = StdConv(width, width, 3, padding=1)
        self.act = nn.ReLU()
        self.plain = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return self.plain(self.act(self.conv(x)))


class GroupNormBlock(nn.Module):
    def __init__(self, width=16):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)
        self.norm = nn.GroupNorm(4, width)
        self.conv2 = nn.Conv2d(width, width, 1)

    def forward(self, x):
        return x + self.conv2(F.relu(self.norm(self.conv(x))))


class RadixReshape(nn.Module):
    """Split attention's radix softmax: the channel axis reshaped into (radix, C / radix)."""

    def __init__(self, width=16, radix=2):
        super().__init__()
        self.radix = radix
        self.conv = nn.Conv2d(width, width * radix, 3, padding=1)
        self.fc = nn.Conv2d(width, width * radix, 1)
        self.proj = nn.Conv2d(width, width, 1)

    def forward(self, x):
        batch = x.size(0)
        y = F.relu(self.conv(x))
        splits = y.reshape(batch, self.radix, -1, *y.shape[2:])
        gap = splits.sum(1).mean((2, 3), keepdim=True)
        attention = self.fc(gap).reshape(batch, self.radix, -1).softmax(1).reshape(batch, self.radix, -1, 1, 1)
        return self.proj((splits * attention).sum(1))


class MixedDepthwise(nn.Module):
    """MixNet's MixedConv2d: unequal channel groups, depthwise kernels 3 / 5 / 7, concatenated."""

    def __init__(self, width=16):
        super().__init__()
        self.splits = [8, 5, 3]
        self.expand = nn.Sequential(nn.Conv2d(width, 16, 1), nn.BatchNorm2d(16), nn.ReLU())
        self.convs = nn.ModuleList(
            nn.Conv2d(c, c, k, padding=k // 2, groups=c) for c, k in zip(self.splits, (3, 5, 7), strict=True)
        )
        self.norm = nn.BatchNorm2d(16)
        self.project = nn.Conv2d(16, width, 1)

    def forward(self, x):
        parts = torch.split(self.expand(x), self.splits, 1)
        mixed = torch.cat([conv(part) for conv, part in zip(self.convs, parts, strict=True)], 1)
        return x + self.project(F.relu(self.norm(mixed)))


class RecurrentRows(nn.Module):
    """Sequencer's BiLSTM2D, with a GRU for the columns: recurrent layers over the feature map."""

    def __init__(self, width=16):
        super().__init__()
        self.rows = nn.LSTM(width, width // 2, batch_first=True, bidirectional=True)
        self.columns = nn.GRU(width, width, batch_first=True)
        self.project = nn.Conv2d(2 * width, width, 1)

    def forward(self, x):
        batch, channels, height, width = x.shape
        tokens = x.permute(0, 2, 3, 1)
        rows, _ = self.rows(tokens.reshape(batch * height, width, channels))
        columns, _ = self.columns(tokens.transpose(1, 2).reshape(batch * width, height, channels))
        rows = rows.reshape(batch, height, width, channels)
        columns = columns.reshape(batch, width, height, channels).transpose(1, 2)
        return x + self.project(torch.cat([rows, columns], -1).permute(0, 3, 1, 2))


BLOCKS = {
    "same_padding": SamePadding,
    "token_batchnorm": TokenBatchNorm,
    "pool_unknown_rank": PoolUnknownRank,
    "weight_standardised": WeightStandardised,
    "group_norm": GroupNormBlock,
    "radix_reshape": RadixReshape,
    "mixed_depthwise": MixedDepthwise,
    "recurrent_rows": RecurrentRows,
}
EXPORTERS = ("dynamo", "torchscript13")


def build(name: str, seed: int = 0) -> nn.Module:
    """The classifier around block `name`, seeded."""
    torch.manual_seed(seed)
    return _randomise(_Classifier(BLOCKS[name]()), seed + 1)


def export(name: str, exporter: str, folder: Path, seed: int = 0) -> Path:
    """Export the classifier around block `name`: "dynamo" (torch's defaults) or "torchscript<opset>"."""
    path = Path(folder) / f"{name}_{exporter}.onnx"
    module = build(name, seed)
    example = (torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed)),)
    names = {"input_names": ["images"], "output_names": ["logits"]}
    if exporter == "dynamo":
        batch = torch.export.Dim("batch", min=1, max=1024)
        torch.onnx.export(module, example, str(path), dynamic_shapes=({0: batch},), **names)
    else:
        torch.onnx.export(
            module, example, str(path), dynamo=False, opset_version=int(exporter.removeprefix("torchscript")),
            dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"}}, **names,
        )  # fmt: skip
    return path
