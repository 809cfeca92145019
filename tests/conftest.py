"""Shared test fixtures: the real models in ../shared and the models built in tests/fixtures.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import fixtures  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("ONNXPRUNE_SHARED", REPO.parent / "shared"))
REAL_MODELS = sorted((SHARED / "models").glob("*/*.onnx")) if (SHARED / "models").is_dir() else []
REAL_MODEL_NAMES = [
    "matlab/cora_mnist_point.onnx",
    "matlab/flir_defect_r2020.onnx",
    "matlab/nln_logsig_200_100_50.onnx",
    "pytorch/convnet_maxpool_mnist.onnx",
    "pytorch/oval21_cifar_base.onnx",
    "pytorch/resnet_2b_cifar10.onnx",
]


def shared_path(relative: str) -> Path:
    """A file under ../shared; skipped with a reason where ../shared is absent, failed in CI."""
    path = SHARED / relative
    if not path.exists():
        message = f"{path} not found (../shared holds the real models and data)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must have it")
        pytest.skip(message)
    return path


FIXTURE_BUILDERS = {
    "matlab_alexnet_opset8": lambda: fixtures.matlab_alexnet(opset=8),
    "matlab_alexnet_opset13": lambda: fixtures.matlab_alexnet(opset=13),
    "matmul_mlp": fixtures.matmul_mlp,
    "tf2onnx_nhwc": fixtures.tf2onnx_nhwc,
    "concat_net": fixtures.concat_net,
    "depthwise_net": fixtures.depthwise_net,
}
TORCH_EXPORTS = {"vgg_bn_torchscript": False, "vgg_bn_dynamo": True}
ALL_FIXTURES = list(FIXTURE_BUILDERS) + list(TORCH_EXPORTS)


@pytest.fixture(scope="session")
def fixture_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fixtures")


@pytest.fixture(scope="session")
def fixture_model(fixture_dir):
    """Build (once per session) and return the path of a named fixture model."""
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            path = fixture_dir / f"{name}.onnx"
            if name in TORCH_EXPORTS:
                fixtures.export_vgg(path, dynamo=TORCH_EXPORTS[name])
            else:
                fixtures.save(FIXTURE_BUILDERS[name](), path)
            built[name] = path
        return built[name]

    return get


@pytest.fixture
def model_path(request, fixture_model) -> Path:
    """Parametrized by 'real:<relative>' or 'fixture:<name>'."""
    kind, name = request.param.split(":", 1)
    return shared_path(f"models/{name}") if kind == "real" else fixture_model(name)


ALL_MODELS = [f"real:{name}" for name in REAL_MODEL_NAMES] + [f"fixture:{name}" for name in ALL_FIXTURES]
