"""Selection: exact counts, ties, global threshold, the layer-collapse guard, ratio files."""

from __future__ import annotations

import numpy as np
import pytest

import onnxprune
from onnxprune.errors import ConfigError
from onnxprune.options import check_sparsity
from onnxprune.pruning import select


def test_smallest_drops_exactly_count_even_with_ties():
    scores = np.array([0, 0, 0, 0, 1, 2, 3, 3, 3, 4], dtype=np.float32)
    for count in range(11):
        keep = select.smallest(scores, count)
        assert int((~keep).sum()) == count
        if 0 < count < 10:
            assert scores[~keep].max() <= scores[keep].min()


def test_global_uses_one_threshold():
    rng = np.random.default_rng(0)
    scores = {"a": rng.random(1000).astype(np.float32), "b": rng.random(3000).astype(np.float32) * 2}
    plans = select.select_global(scores, 0.5, max_layer_sparsity=0.99)
    masks = select.masks_from_plans(scores, plans)
    assert sum(plan.count for plan in plans.values()) == 2000
    dropped = np.concatenate([scores[n][~masks[n]] for n in scores])
    kept = np.concatenate([scores[n][masks[n]] for n in scores])
    assert dropped.max() <= kept.min()
    assert plans["a"].ratio > plans["b"].ratio  # smaller scores, pruned harder


def test_global_caps_a_layer_that_would_collapse_and_keeps_the_total():
    scores = {"tiny": np.full(100, 1e-6, np.float32), "big": np.linspace(1, 2, 900, dtype=np.float32)}
    plans = select.select_global(scores, 0.5, max_layer_sparsity=0.9)
    assert plans["tiny"].capped and plans["tiny"].count == 90
    assert plans["big"].count == 500 - 90
    assert not plans["big"].capped


def test_global_infeasible_cap_is_an_error():
    scores = {"a": np.ones(10, np.float32), "b": np.ones(10, np.float32)}
    with pytest.raises(ConfigError, match="cannot be reached"):
        select.select_global(scores, 0.95, max_layer_sparsity=0.5)


def test_read_ratios_accepts_aliases_and_default(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("default: 0.7\nconv1: 0.5\nfc8_W: 0\n")
    ratios, default = select.read_ratios(path, ["conv1", "fc8"], {"conv1_W": "conv1", "fc8_W": "fc8"})
    assert ratios == {"conv1": 0.5, "fc8": 0.0}
    assert default == 0.7


def test_read_ratios_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="no such ratio file"):
        select.read_ratios(tmp_path / "absent.yaml", ["a"], {})


@pytest.mark.parametrize("value", [1.0, 1.5, -0.01, "x", float("nan")])
def test_check_sparsity_rejects(value):
    with pytest.raises(ConfigError):
        check_sparsity(value)


@pytest.mark.parametrize("k", [1, 12345, 2_500_000, 4_999_999, 5_000_000])
def test_global_kth_smallest_matches_a_full_partition(k):
    rng = np.random.default_rng(1)
    arrays = [rng.random(3_000_000).astype(np.float32), (rng.random(2_000_000) * 0.5).astype(np.float32)]
    arrays[1][:1000] = 0.0  # ties
    pooled = np.concatenate(arrays)
    assert select.global_kth_smallest(arrays, k) == np.partition(pooled, k - 1)[k - 1]


def test_lamp_scores_are_scale_invariant_per_layer_and_keep_each_layers_largest():
    rng = np.random.default_rng(0)
    weights = rng.standard_normal(100)
    lamp = select.lamp_scores(weights)
    np.testing.assert_allclose(select.lamp_scores(weights * 1e-3), lamp, rtol=1e-9)
    assert lamp[np.argmax(np.abs(weights))] == 1.0
    order = np.argsort(np.abs(weights))
    assert np.all(np.diff(lamp[order]) >= 0), "the order of |w| is kept within a layer"
    # hand-computed: w = [1, 2, 3] -> squares 1, 4, 9 -> 1/14, 4/13, 9/9
    np.testing.assert_allclose(select.lamp_scores(np.array([3.0, 1.0, 2.0])), [1.0, 1 / 14, 4 / 13])


def test_lamp_scope_spares_a_small_scale_layer_that_global_magnitude_empties(fixture_model):
    import onnxprune
    from onnxprune.graph.model import from_proto
    from onnxprune.graph.storage import write_back

    model = onnxprune.load(fixture_model("matmul_mlp"))
    first = model.layers[0]
    shrunk = from_proto(write_back(model, {first.weight: model.weight_array(first) * 1e-3}))
    by_scope = {}
    for scope in ("global", "lamp"):
        result = onnxprune.prune(shrunk, 0.8, scope=scope, keep_masks=False)
        by_scope[scope] = {layer.name: layer.sparsity for layer in result.layers}
        assert result.prunable_sparsity == pytest.approx(0.8, abs=0.01)
    assert by_scope["global"][first.name] >= 0.98, "global magnitude puts its zeros in the small-scale layer"
    assert by_scope["lamp"][first.name] < 0.95, "LAMP spreads them by each layer's own scale"


def test_erk_shares_the_sparsity_by_layer_shape_and_meets_the_total():
    shapes = {"conv1": (16, 3, 3, 3), "conv2": (64, 16, 3, 3), "conv3": (128, 64, 3, 3), "fc": (10, 128)}
    sizes = {name: int(np.prod(shape)) for name, shape in shapes.items()}
    ratios = select.erk_ratios(shapes, 0.8)
    removed = sum(ratios[name] * sizes[name] for name in shapes)
    assert removed / sum(sizes.values()) == pytest.approx(0.8, abs=1e-9)
    assert ratios["conv3"] > ratios["conv2"] > ratios["conv1"], "the larger the layer, the sparser"
    assert ratios["conv1"] == 0.0, "ERK would make the first convolution denser than dense: it stays dense"
    density = {name: 1 - ratios[name] for name in ("conv2", "conv3")}  # free layers: density ~ sum/product
    raw = {name: sum(shapes[name]) / sizes[name] for name in density}
    assert density["conv2"] / density["conv3"] == pytest.approx(raw["conv2"] / raw["conv3"])
    capped = select.erk_ratios(shapes, 0.97, max_layer_sparsity=0.98)
    assert max(capped.values()) == pytest.approx(0.98), "no layer beyond the cap"
    assert sum(capped[name] * sizes[name] for name in shapes) / sum(sizes.values()) == pytest.approx(0.97)


def test_erk_scope_prunes_a_real_model_to_the_target(fixture_model):
    model = onnxprune.load(fixture_model("matlab_alexnet_opset8"))
    result = onnxprune.prune(model, 0.9, scope="erk")
    assert result.prunable_sparsity == pytest.approx(0.9, abs=1e-4)
    by_sparsity = sorted(result.layers, key=lambda layer: layer.sparsity)
    by_erk_density = sorted(result.layers, key=lambda layer: -sum(layer.shape) / layer.numel)
    assert [layer.name for layer in by_sparsity] == [layer.name for layer in by_erk_density]
    with pytest.raises(ConfigError, match="scope erk shares out single weights; l1-filter removes"):
        onnxprune.prune(model, 0.5, method="l1-filter", scope="erk")
