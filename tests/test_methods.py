"""The contract every registered pruning method keeps (parametrized over the registry)."""

from __future__ import annotations

import fixtures
import numpy as np
import pytest

import onnxprune
from onnxprune.graph.proto import session
from onnxprune.graph.verify import random_batch
from onnxprune.pruning.methods import list_methods
from onnxprune.workbench.data import Dataset, preprocess_for

METHODS = [method.name for method in list_methods()]


@pytest.fixture(scope="module")
def images():
    pixels, labels = fixtures.class_images(48, size=16, classes=5)
    return Dataset(pixels, labels, [str(i) for i in range(5)], "synthetic")


@pytest.mark.parametrize("name", METHODS)
def test_method_contract(name, fixture_model, images, tmp_path):
    """Target reached, the written file verifies in onnxruntime, outputs finite."""
    method = next(m for m in list_methods() if m.name == name)
    model = onnxprune.load(fixture_model("vgg_bn_dynamo"))
    extra = {}
    if method.needs_data:
        extra = {"data": images, "preprocess": preprocess_for(model), "method_options": {"batches_per_round": 2}}
    result = onnxprune.prune(model, 0.4, method=name, **extra)
    output = tmp_path / f"{name}.onnx"
    report = onnxprune.save(result, output)
    assert report.max_abs_diff <= 1e-3
    if method.granularity == "weight":
        assert result.prunable_sparsity == pytest.approx(0.4, abs=0.01)
    else:
        removed, total = result.units
        assert abs(removed - round(0.4 * total)) <= len(model.layers), (removed, total)
        assert onnxprune.load(output).layers[0].shape[0] < model.layers[0].shape[0] or name == "neuron"
    run = session(output)
    values = run.run(None, {run.get_inputs()[0].name: random_batch(model.input, 3)})[0]
    assert np.all(np.isfinite(values))


def test_registry_rejects_duplicates():
    from onnxprune.pruning.methods import register

    with pytest.raises(ValueError, match="already registered"):
        register("magnitude", granularity="weight")(lambda entry, ctx: None)


def test_taylor_records_loss_accuracy_and_filters_per_round(fixture_model, images):
    model = onnxprune.load(fixture_model("concat_net"))
    preprocess = preprocess_for(model)
    options = {"batches_per_round": 2, "max_per_round": 2}
    result = onnxprune.prune(
        model, 0.4, method="taylor", data=images, preprocess=preprocess, method_options=options, val=images,
        val_preprocess=preprocess,
    )  # fmt: skip
    history = result.history
    assert len(history) >= 2 and all(row["loss"] is not None and 0 <= row["val_top1"] <= 1 for row in history)
    filters = [row["filters"] for row in history]
    assert filters == sorted(filters, reverse=True) and filters[0] - filters[1] <= 2
    assert history[-1]["filters"] == result.units[1] - result.units[0]


def test_taylor_needs_data(fixture_model):
    from onnxprune.errors import ConfigError

    with pytest.raises(ConfigError, match="needs training data"):
        onnxprune.prune(onnxprune.load(fixture_model("concat_net")), 0.4, method="taylor")


def test_synflow_with_batchnorm_gives_finite_scores_and_reaches_the_target(fixture_model):
    from onnxprune.pruning.methods.synflow import iterative_scores
    from onnxprune.workbench.convert import to_torch

    model = onnxprune.load(fixture_model("vgg_bn_dynamo"))
    converted = to_torch(model)
    scores = iterative_scores(converted, 0.9, 10, model.input.concrete_shape(1), converted.module)
    assert all(np.all(np.isfinite(s)) for s in scores.values())
    result = onnxprune.prune(model, 0.9, method="synflow", scope="global")
    assert result.prunable_sparsity == pytest.approx(0.9, abs=1e-3)
    assert all(layer.sparsity < 1.0 for layer in result.layers), "SynFlow avoids layer collapse"


def test_synflow_is_data_free_and_beats_magnitude_on_the_matlab_model():
    """On the shipped AlexNet-shaped model at 90%, SynFlow keeps more accuracy than global magnitude."""
    from conftest import REPO

    from onnxprune.demo import spectrograms
    from onnxprune.workbench.data import load_data
    from onnxprune.workbench.evaluate import evaluate

    model = onnxprune.load(REPO / "models" / "alexnet_spectro.onnx")
    test = load_data(spectrograms.generate() / "test")
    preprocess = preprocess_for(model)
    synflow = evaluate(onnxprune.prune(model, 0.9, method="synflow", scope="global").model, test, preprocess)
    magnitude = evaluate(onnxprune.prune(model, 0.9, scope="global").model, test, preprocess)
    assert synflow.top1 > magnitude.top1


def test_slimming_penalty_drives_batchnorm_scales_toward_zero(fixture_model, images):
    from onnxprune.options import TrainOptions
    from onnxprune.workbench.convert import to_torch
    from onnxprune.workbench.train import finetune

    model = onnxprune.load(fixture_model("vgg_bn_dynamo"))
    means = {}
    for strength in (0.0, 2.0):
        converted = to_torch(model)
        options = TrainOptions(epochs=3, batch_size=16, lr=0.05, weight_decay=0.0, augment=False, bn_l1=strength)
        history = finetune(converted, images, preprocess_for(model), options).history
        assert all(record.scale_sparsity is not None for record in history)
        scales = [
            np.abs(m.weight.detach().numpy()) for m in converted.module.modules() if "BatchNorm" in type(m).__name__
        ]
        means[strength] = float(np.mean(np.concatenate(scales)))
    assert means[2.0] < 0.8 * means[0.0]


def test_slimming_bad_input(fixture_model):
    from onnxprune.errors import ConfigError
    from onnxprune.options import PruneOptions, ScheduleOptions

    with pytest.raises(ConfigError, match="has no BatchNormalization"):
        onnxprune.prune(onnxprune.load(fixture_model("matmul_mlp")), 0.5, method="slimming")
    with pytest.raises(ConfigError, match="lambda > 0"):
        ScheduleOptions(PruneOptions(0.5, method="slimming"), sparsity_epochs=2, bn_l1=0.0)


def test_hybrid_chain_removes_filters_then_polishes_magnitude(fixture_model, tmp_path):
    from onnxprune.errors import ConfigError
    from onnxprune.options import PruneOptions, parse_recipe
    from onnxprune.pruning.methods import traits
    from onnxprune.pruning.oneshot import prune_chain

    model = onnxprune.load(fixture_model("vgg_bn_torchscript"))
    result = prune_chain(model, parse_recipe("l1-filter:0.4,magnitude:0.8"))
    onnxprune.save(result, tmp_path / "hybrid.onnx")
    written = onnxprune.load(tmp_path / "hybrid.onnx")
    assert written.layers[0].shape[0] < model.layers[0].shape[0], "filters physically removed"
    zeros = sum(int((written.weight_array(layer) == 0).sum()) for layer in written.layers)
    assert zeros / sum(layer.numel for layer in written.layers) == pytest.approx(0.8, abs=1e-3)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("- {method: l2-filter, sparsity: 0.3}\n- {method: magnitude, sparsity: 0.5}\n")
    assert parse_recipe(str(recipe)) == [("l2-filter", 0.3), ("magnitude", 0.5)]
    assert parse_recipe("l1-filter:0.3,dice:0.8") == [("l1-filter", 0.3), ("dice", 0.8)]  # syntax only
    with pytest.raises(ConfigError, match="unknown pruning method 'dice'; known methods"):
        traits(PruneOptions(method="l1-filter:0.3,dice:0.8"))  # the registry, where a prune starts
    with pytest.raises(ConfigError, match="needs a sparsity"):
        parse_recipe("l1-filter")


def test_greedy_removal_never_picks_a_removed_filter(fixture_model, images):
    model = onnxprune.load(fixture_model("concat_net"))
    pixels = images.subset(np.arange(24))
    pixels.images = pixels.images[:, :8, :8, :]
    options = {"candidates": 4, "val_samples": 16, "finetune_every": 3, "finetune_batches": 1}
    result = onnxprune.prune(
        model, 0.4, method="greedy", data=pixels, preprocess=preprocess_for(model), method_options=options
    )
    steps = result.history
    assert [row["step"] for row in steps] == list(range(1, len(steps) + 1))
    units = [row["units"] for row in steps]
    assert units == sorted(units, reverse=True) and len(set(units)) == len(units), "one new unit per step"
    assert len(steps) == result.units[0] and result.units[0] == round(0.4 * result.units[1])


def test_sss_factors_fold_exactly_into_the_weights(fixture_model):
    import torch

    from onnxprune.pruning.methods.sss import _Scale, fold
    from onnxprune.workbench.convert import to_torch

    for name in ("vgg_bn_dynamo", "matmul_mlp"):
        model = onnxprune.load(fixture_model(name))
        converted = to_torch(model)
        inputs = torch.from_numpy(__import__("onnxprune.graph.verify").graph.verify.random_batch(model.input, 3))
        factors, hooks = {}, []
        generator = torch.Generator().manual_seed(0)
        for layer, entry in converted.params.items():
            scale = _Scale(entry.layer.shape[entry.layer.out_axis], 1 if entry.layer.op_type == "Conv" else -1)
            with torch.no_grad():
                scale.factor.copy_(torch.rand(scale.factor.shape, generator=generator) * 2)
            factors[layer] = scale.factor.detach().clone()
            hooks.append(entry.module.register_forward_hook(scale))
        with torch.no_grad():
            scaled = converted.module.eval()(inputs)
        for hook in hooks:
            hook.remove()
        fold(converted, factors)
        with torch.no_grad():
            folded = converted.module(inputs)
        torch.testing.assert_close(folded, scaled, rtol=1e-5, atol=1e-6)


def test_sss_proximal_l1_sets_factors_exactly_to_zero(fixture_model, images):
    from onnxprune.options import MethodSettings
    from onnxprune.pruning.methods import ScoreContext
    from onnxprune.pruning.methods.sss import learn_factors
    from onnxprune.workbench.convert import to_torch

    model = onnxprune.load(fixture_model("vgg_bn_dynamo"))
    zeros = {}
    for gamma in (0.0, 20.0):
        settings = MethodSettings(sss_gamma=gamma, lr=0.05, max_steps=20)
        context = ScoreContext(to_torch(model), model=model, data=images, preprocess=preprocess_for(model),
                               settings=settings)  # fmt: skip
        factors = np.concatenate(list(learn_factors(context).values()))
        zeros[gamma] = float(np.mean(factors == 0))
    assert zeros[0.0] == 0.0 and zeros[20.0] > 0.2
    result = onnxprune.prune(model, 0.3, method="sss", data=images, preprocess=preprocess_for(model),
                             method_options={"sss_gamma": 5.0, "lr": 0.05, "max_steps": 20})  # fmt: skip
    assert result.units[0] > 0 and result.compacted is not None


def without_final_softmax(proto):
    """The same graph ending at the Softmax's input: the logits the Softmax normalises."""
    import onnx

    copy = onnx.ModelProto()
    copy.CopyFrom(proto)
    softmax = next(node for node in copy.graph.node if node.op_type == "Softmax")
    kept = [node for node in copy.graph.node if node is not softmax]
    del copy.graph.node[:]
    copy.graph.node.extend(kept)
    copy.graph.output[0].name = softmax.input[0]
    return copy


@pytest.mark.parametrize("name", ["taylor", "sss", "greedy"])
def test_data_driven_methods_score_softmax_models_from_logits(name, fixture_model, images):
    """A MATLAB export ends with Softmax: its scores must equal those of the same model without it."""
    from onnxprune.graph.model import from_proto
    from onnxprune.options import MethodSettings
    from onnxprune.pruning.methods import ScoreContext, get_method
    from onnxprune.workbench.convert import to_torch

    with_softmax = onnxprune.load(fixture_model("matlab_alexnet_opset13"))
    assert with_softmax.final_softmax is not None
    logits = from_proto(without_final_softmax(with_softmax.proto))
    assert logits.final_softmax is None
    pixels, labels = fixtures.class_images(24, size=35, classes=5)
    data = Dataset(pixels, labels, [str(i) for i in range(5)], "synthetic")
    settings = MethodSettings(batches_per_round=2, batch_size=8, max_steps=2, val_samples=8)
    scores = []
    for model in (with_softmax, logits):
        context = ScoreContext(to_torch(model), model=model, data=data, preprocess=preprocess_for(model),
                               settings=settings)  # fmt: skip
        scores.append(get_method(name).layer_scores(context))
    for layer in scores[0]:
        np.testing.assert_allclose(scores[0][layer], scores[1][layer], rtol=1e-4, atol=1e-7, err_msg=layer)


def test_method_settings_refuse_unknown_names():
    from onnxprune.errors import ConfigError
    from onnxprune.options import MethodSettings

    with pytest.raises(ConfigError, match="unknown method setting 'batches'; the settings are: batch_size"):
        MethodSettings.of({"batches": 3})


def test_the_documented_example_method_registers_and_prunes(fixture_model, images, tmp_path):
    """docs/methods.md, "Adding a method": its code, run as written, is a working method."""
    import re
    from pathlib import Path

    from onnxprune.pruning.methods.registry import METHODS

    text = (Path(__file__).resolve().parents[1] / "docs" / "methods.md").read_text()
    code = re.search(r"## Adding a method.*?```python\n(.*?)```", text, re.S).group(1)
    METHODS.pop("saliency", None)
    try:
        exec(compile(code, "docs/methods.md", "exec"), {})
        model = onnxprune.load(fixture_model("vgg_bn_dynamo"))
        result = onnxprune.prune(model, 0.5, method="saliency", data=images, preprocess=preprocess_for(model),
                                 method_options={"batches_per_round": 2, "batch_size": 8})  # fmt: skip
        assert result.prunable_sparsity == pytest.approx(0.5, abs=0.01)
        assert onnxprune.save(result, tmp_path / "saliency.onnx").max_abs_diff <= 1e-3
    finally:
        METHODS.pop("saliency", None)
