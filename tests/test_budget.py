"""Pruning to a budget (issue 28): latency tables, --speedup and --target-macs, and their refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

import onnxprune
from onnxprune.cli import app
from onnxprune.errors import ConfigError
from onnxprune.pruning import budget
from onnxprune.workbench import latency


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """A cache folder of the test's own: no table from another run is found."""
    monkeypatch.setenv("ONNXPRUNE_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_latency_table_is_built_cached_reused_and_rebuilt_for_another_machine(fixture_model, cache, monkeypatch):
    model = onnxprune.load(fixture_model("vgg_bn_torchscript"))
    shapes = latency.layer_shapes(model, batch=4)
    assert set(shapes) == {layer.name for layer in model.layers}, "every layer's geometry is known"
    conv = next(shape for shape in shapes.values() if shape.op == "Conv")
    assert conv.spatial and conv.kernel == (3, 3) and conv.batch == 4

    first = latency.LatencyTable(threads=1)
    timings = {name: first.milliseconds(shape) for name, shape in shapes.items()}
    narrower = first.milliseconds(conv.with_widths(conv.cin, max(1, conv.cout // 2)))
    assert all(value > 0 for value in timings.values()) and narrower > 0
    assert first.measured == len(set(shapes.values())) + 1
    path = first.save()
    assert path.parent == cache / "latency" and json.loads(path.read_text())["identity"]["threads"] == 1

    again = latency.LatencyTable(threads=1)
    assert {name: again.milliseconds(shape) for name, shape in shapes.items()} == timings
    assert again.measured == 0 and again.path == path, "the same machine reads the table, measures nothing"

    other_threads = latency.LatencyTable(threads=2)
    assert other_threads.path != path and not other_threads.entries
    real = latency.machine()
    monkeypatch.setattr(latency, "machine", lambda: {**real, "onnxruntime": "0.0.1"})
    upgraded = latency.LatencyTable(threads=1)
    assert upgraded.path != path and not upgraded.entries, "another onnxruntime: the table is built again"
    upgraded.milliseconds(conv)
    assert upgraded.measured == 1

    path.write_text("{not json")  # a damaged table is measured again, not trusted
    assert latency.LatencyTable(threads=1).entries == {}


def test_single_layer_models_compute_what_the_layer_computes(fixture_model):
    import onnxruntime as ort

    model = onnxprune.load(fixture_model("vgg_bn_torchscript"))
    for shape in latency.layer_shapes(model, batch=2).values():
        session = ort.InferenceSession(latency.single_layer_model(shape).SerializeToString())
        dims = [2, shape.cin, *shape.spatial] if shape.op == "Conv" else [2, shape.cin]
        (out,) = session.run(None, {"x": np.zeros(dims, np.float32)})
        assert out.shape[:2] == (2, shape.cout)


def test_target_macs_writes_a_model_within_the_budget_with_channel_blocks(fixture_model, tmp_path, cache):
    source = fixture_model("vgg_bn_torchscript")
    dense = onnxprune.load(source)
    out = tmp_path / "m.onnx"
    result = CliRunner().invoke(app, ["prune", str(source), "--method", "l1-filter", "--target-macs", "0.4",
                                      "--round-to", "4", "-o", str(out), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    written = onnxprune.load(out)
    left = written.layer_total("macs") / dense.layer_total("macs")
    assert left <= 0.4 + 1e-9 and left > 0.25, "the greedy stops at the budget, not far below it"
    note = next(note for note in summary["notes"] if note.startswith("--target-macs 0.4"))
    assert f"{left:.1%} of the dense MACs left" in note and "end to end" in note
    before = {layer.name: layer.shape[0] for layer in dense.layers}
    for layer in written.layers[:-1]:  # the classifier keeps its outputs
        width = layer.shape[0]
        assert width == before[layer.name] or before[layer.name] < 16 or width % 4 == 0, (layer.name, width)
        assert width >= 1


def test_speedup_measures_the_written_model_and_records_the_table(fixture_model, tmp_path, cache):
    model = onnxprune.load(fixture_model("vgg_bn_torchscript"))
    result = onnxprune.prune(model, method="l1-filter", speedup=1.3, bench_batch_size=8, threads=1)
    report = result.budget
    assert report.kind == "speedup" and report.batch == 8 and report.threads == 1
    assert report.attempts and all(attempt["measured_speedup"] > 0 for attempt in report.attempts)
    assert report.reached == report.attempts[[a["measured_speedup"] for a in report.attempts].index(report.reached)][
        "measured_speedup"]  # fmt: skip
    assert report.within == (abs(report.reached - 1.3) <= budget.TOLERANCE * 1.3)
    assert result.notes[0].startswith("--speedup 1.3: measured") and str(cache) in result.notes[0]
    assert (cache / "latency").is_dir() and report.table_measured > 0
    assert result.macs_removed > 0 and result.compacted is not None


def test_budget_refusals_are_one_line(fixture_model, tmp_path, cache):
    source = str(fixture_model("vgg_bn_torchscript"))
    out = ["-o", str(tmp_path / "x.onnx")]
    one_line_error(CliRunner().invoke(app, ["prune", source, "--speedup", "2", *out]),
                   "--speedup has no effect here: magnitude zeroes single weights")  # fmt: skip
    one_line_error(CliRunner().invoke(app, ["prune", source, "--method", "l1-filter", "--speedup", "2",
                                            "--sparsity", "0.3", *out]),
                   "--sparsity has no effect here: --speedup chooses how many channels go")  # fmt: skip
    one_line_error(CliRunner().invoke(app, ["prune", source, "--method", "l1-filter", "--speedup", "2",
                                            "--target-macs", "0.5", *out]), "two budgets")  # fmt: skip
    one_line_error(CliRunner().invoke(app, ["prune", source, "--method", "l1-filter", "--speedup", "0.5", *out]),
                   "--speedup must be above 1")  # fmt: skip
    one_line_error(CliRunner().invoke(app, ["prune", source, "--method", "l1-filter", "--target-macs", "1.5", *out]),
                   "--target-macs must be between 0 and 1")  # fmt: skip
    one_line_error(CliRunner().invoke(app, ["prune", source, "--method", "l1-filter", "--threads", "2", *out]),
                   "--threads has no effect here")  # fmt: skip
    one_line_error(CliRunner().invoke(app, ["prune", source, "--method", "l1-filter", "--speedup", "2",
                                            "--iterations", "3", *out]), "prunes in one round")  # fmt: skip
    unreachable = CliRunner().invoke(app, ["prune", source, "--method", "l1-filter", "--speedup", "90", *out])
    one_line_error(unreachable, "--speedup 90 cannot be reached")
    assert not (tmp_path / "x.onnx").exists()
    with pytest.raises(ConfigError, match="zeroes single weights"):
        onnxprune.prune(onnxprune.load(source), method="magnitude", target_macs=0.5)


def test_the_greedy_never_empties_a_layer_for_its_cost_alone():
    """Scores are per-layer normalised: without the thinning penalty the costliest layer went to 1 channel."""
    from onnxprune.pruning.channels import ChannelGroup

    groups = {"cheap": ChannelGroup("cheap", ["cheap"], list(range(16))),
              "costly": ChannelGroup("costly", ["costly"], list(range(16, 32)))}  # fmt: skip
    scores = {root: 1.0 for root in range(32)}
    layers = [
        budget.LayerWidths("cheap", 16, 16, {r: 1 for r in range(16)}, {}, 16 * 16, False, None),
        budget.LayerWidths("costly", 16, 16, {r: 1 for r in range(16, 32)}, {}, 16 * 16 * 4, False, None),
    ]
    goal = 0.3 * 16 * 16 * 5  # 14 of the costly layer's channels would meet it alone
    removed, reached = budget.greedy_plan(groups, scores, layers, budget._Costs(layers, None), goal, 0.99, 1)
    assert reached <= goal
    # a channel of the costly layer saves 4x as much; its importance grows as (16 / kept) ** THINNING (2)
    assert removed == {"cheap": 8, "costly": 12}, "past half kept, the costly layer's channels weigh more"


def test_a_mac_budget_is_met_where_the_latency_table_measures_no_saving():
    """--target-macs ranks by measured time but counts MACs: a flat (noisy) table stopped it at 0.66-0.78."""
    from onnxprune.pruning.channels import ChannelGroup

    groups = {"a": ChannelGroup("a", ["a"], list(range(16))), "b": ChannelGroup("b", ["b"], list(range(16, 32)))}
    scores = {root: 1.0 + root / 100 for root in range(32)}
    shape = object()  # any geometry: the flat table below gives every width the same time
    layers = [
        budget.LayerWidths("a", 16, 16, {r: 1 for r in range(16)}, {}, 16 * 16, False, shape),
        budget.LayerWidths("b", 16, 16, {r: 1 for r in range(16, 32)}, {}, 16 * 16, False, shape),
    ]

    class FlatTable:
        def milliseconds(self, _shape):
            return 1.0

    class Layer(budget._Costs):
        def __call__(self, layer, kin, kout):
            return 1.0  # every width measured alike: no move saves time

    macs = budget._Costs(layers, None)
    goal = 0.4 * 2 * 16 * 16
    removed, reached = budget.greedy_plan(groups, scores, layers, Layer(layers, FlatTable()), goal, 0.99, 1, macs)
    assert reached <= goal and sum(removed.values()) > 0


def test_a_speedup_the_table_cannot_see_is_measured_at_the_floor_not_refused(fixture_model, cache, monkeypatch):
    """resnet_2b: a pessimistic table predicted 1.40x at the floor and refused 1.5; the floor measured 1.8x."""
    from onnxprune.workbench import timing

    monkeypatch.setattr(latency.LatencyTable, "milliseconds", lambda self, shape: 1.0)  # no move saves time

    def macs_timing(models, batches, threads=None, budget=0.0):  # latency in proportion to MACs, plus overhead
        timed = []
        for model in models:
            result = timing.TimedModel()
            result.latency_ms = {str(b): {"median": 0.05 + model.layer_total("macs") / 1e6} for b in batches}
            timed.append(result)
        return timed

    monkeypatch.setattr(timing, "time_side_by_side", macs_timing)
    model = onnxprune.load(fixture_model("vgg_bn_torchscript"))
    dense_ms = macs_timing([model], [8])[0].latency_ms["8"]["median"]
    result = onnxprune.prune(model, method="l1-filter", speedup=1.5, bench_batch_size=8, threads=1)
    assert result.budget.within and abs(result.budget.reached - 1.5) <= budget.TOLERANCE * 1.5
    assert any("macs_budget" in attempt for attempt in result.budget.attempts), "found by measuring MAC budgets"
    written_ms = macs_timing([onnxprune.load(_saved(result, cache))], [8])[0].latency_ms["8"]["median"]
    assert dense_ms / written_ms == pytest.approx(result.budget.reached)
    with pytest.raises(ConfigError, match=r"--speedup 50 cannot be reached: .* the model measured \d+\.\d\dx faster"):
        onnxprune.prune(model, method="l1-filter", speedup=50, bench_batch_size=8, threads=1)


def _saved(result, folder):
    path = folder / "written.onnx"
    onnxprune.save(result, path)
    return path
