"""Masked fine-tuning and the OMP / IMP schedule with checkpoints and resume."""

from __future__ import annotations

import json

import fixtures
import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from typer.testing import CliRunner

import onnxprune
from onnxprune.cli import app
from onnxprune.errors import ConfigError
from onnxprune.options import PruneOptions, ScheduleOptions, TrainOptions
from onnxprune.workbench.convert import to_torch
from onnxprune.workbench.data import Dataset, preprocess_for
from onnxprune.workbench.train import finetune, refresh_pruned
from onnxprune.workflow.schedule import run

FAST = TrainOptions(epochs=2, batch_size=16, lr=0.01, seed=0)


@pytest.fixture(scope="module")
def synthetic():
    images, labels = fixtures.class_images(60, size=35, classes=5)
    dataset = Dataset(images, labels, [str(i) for i in range(5)], "synthetic")
    return dataset.subset(np.arange(40)), dataset.subset(np.arange(40, 60))


def zeros_per_weight(path, model) -> dict[str, np.ndarray]:
    proto = onnx.load(str(path))
    values = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    return {layer.weight: values[layer.weight] == 0 for layer in model.layers}


def test_finetuning_keeps_every_pruned_weight_at_zero(fixture_model, synthetic, tmp_path):
    train, val = synthetic
    model = onnxprune.load(fixture_model("matlab_alexnet_opset8"))
    result = onnxprune.prune(model, 0.7)
    before = {entry.layer.weight: (entry.to_onnx() == 0) for entry in result.torch_model.params.values()}
    preprocess = preprocess_for(model)
    history = finetune(result.torch_model, train, preprocess, FAST, val, softmax_output="prob")
    assert [record.epoch for record in history.history] == [1, 2]
    from onnxprune.workflow.schedule import write_checkpoint

    write_checkpoint(model, result.torch_model, tmp_path / "tuned.onnx")
    after = zeros_per_weight(tmp_path / "tuned.onnx", model)
    for name, mask in before.items():
        assert np.array_equal(after[name] & mask, mask), f"{name}: a pruned weight came back"
        assert int(after[name].sum()) == int(mask.sum())
    # biases and weights that survived did change: training happened
    tuned = onnxprune.load(tmp_path / "tuned.onnx")
    assert not np.array_equal(tuned.weight_array(tuned.layers[-1]), result.weights[tuned.layers[-1].weight])


def test_masked_weights_follow_the_module_to_another_device():
    # Module.to moves weight_orig and weight_mask but not the computed `weight` attribute: after
    # training on CUDA it stayed on the GPU and the next channel mask failed (seen on an H100).
    import torch
    from torch.nn.utils import prune as torch_prune

    layer = torch.nn.Linear(4, 3)
    torch_prune.l1_unstructured(layer, "weight", amount=0.5)
    layer(torch.ones(1, 4))
    layer.to("meta")
    assert layer.weight.device.type == "cpu" and layer.weight_orig.device.type == "meta"
    refresh_pruned(layer)
    assert layer.weight.device.type == "meta"


def test_zeros_of_a_loaded_model_are_its_mask(fixture_model, synthetic, tmp_path):
    train, _ = synthetic
    model = onnxprune.load(fixture_model("matmul_mlp"))
    pruned = tmp_path / "pruned.onnx"
    onnxprune.save(onnxprune.prune(model, 0.6, keep_masks=False), pruned)
    reloaded = onnxprune.load(pruned)
    zeros = {layer.name: reloaded.weight_array(layer) == 0 for layer in reloaded.layers}
    torch_model = to_torch(reloaded)
    flat = Dataset(
        np.random.default_rng(0).random((32, 20)).astype(np.float32), np.arange(32) % 4, list("abcd"), "f", "0-1", True
    )
    finetune(torch_model, flat, preprocess_for(reloaded), TrainOptions(epochs=2, batch_size=8, lr=0.1))
    for name, entry in torch_model.params.items():
        assert np.all(entry.to_onnx()[zeros[name]] == 0)


def test_finetune_cli_writes_a_verified_model(fixture_model, tmp_path):
    images, labels = fixtures.class_images(30, size=35, classes=5)
    np.savez(tmp_path / "d.npz", x=images, y=labels)
    output = tmp_path / "tuned.onnx"
    args = ["finetune", str(fixture_model("matlab_alexnet_opset13")), "--data", str(tmp_path / "d.npz")]
    result = CliRunner().invoke(app, args + ["--epochs", "1", "--batch-size", "8", "-o", str(output)])
    assert result.exit_code == 0, result.output
    assert "kept epoch 1 of 1" in result.stdout and output.exists()
    assert "learning rate" in result.stdout and "scope" not in result.stdout, "finetune chooses no scope"


def test_schedule_sparsities():
    geometric = ScheduleOptions(PruneOptions(0.8), iterations=3)
    assert [round(geometric.sparsity_at(k), 4) for k in (1, 2, 3)] == [0.4152, 0.658, 0.8]
    cubic = ScheduleOptions(PruneOptions(0.8), iterations=3, schedule="cubic")
    assert cubic.sparsity_at(1) > geometric.sparsity_at(1) and cubic.sparsity_at(3) == pytest.approx(0.8)
    assert ScheduleOptions(PruneOptions(0.8)).name == "omp"


@pytest.mark.slow
def test_imp_writes_rounds_results_and_named_model(fixture_model, synthetic, tmp_path):
    train, val = synthetic
    model_path = fixture_model("matlab_alexnet_opset8")
    options = ScheduleOptions(PruneOptions(0.8, scope="global"), iterations=3, train=FAST)
    result = run(model_path, tmp_path / "imp", options, train, val, preprocess_for(onnxprune.load(model_path)))
    assert [r.round for r in result.rounds] == [1, 2, 3]
    assert result.rounds[-1].sparsity == pytest.approx(0.8, abs=1e-3)
    assert result.final_path.name == f"imp_unstructured_0.80_acc_{result.final_top1:.3f}.onnx"
    document = json.loads((tmp_path / "imp" / "results.json").read_text())
    assert document["extra"]["final"]["top1"] == result.final_top1 and len(document["extra"]["rounds"]) == 3
    assert [row["accuracy"] for row in document["rows"]] == [r.top1 for r in result.rounds]
    csv_lines = (tmp_path / "imp" / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("method,scope,sparsity,accuracy") and len(csv_lines) == 4
    assert (tmp_path / "imp" / "results.mat").exists()
    for record in result.rounds:  # the written checkpoint holds the sparsity of its round
        checkpoint = onnxprune.load(tmp_path / "imp" / record.checkpoint)
        zeros = sum(int((checkpoint.weight_array(layer) == 0).sum()) for layer in checkpoint.layers)
        assert zeros / sum(layer.numel for layer in checkpoint.layers) == pytest.approx(
            record.target_sparsity, abs=1e-3
        )


@pytest.mark.slow
def test_resume_after_interruption_gives_the_same_model(fixture_model, synthetic, tmp_path):
    train, val = synthetic
    model_path = fixture_model("matlab_alexnet_opset8")
    preprocess = preprocess_for(onnxprune.load(model_path))
    options = ScheduleOptions(PruneOptions(0.8), iterations=3, rewind=False, train=FAST)
    whole = run(model_path, tmp_path / "whole", options, train, val, preprocess)

    def interrupt_in_round_3(event):
        if event.get("round") == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(model_path, tmp_path / "cut", options, train, val, preprocess, progress=interrupt_in_round_3)
    assert sorted(p.name for p in (tmp_path / "cut").glob("round_*.onnx")) == ["round_1.onnx", "round_2.onnx"]
    resumed = run(model_path, tmp_path / "cut", options, train, val, preprocess, resume=True)
    a = onnx.load(str(whole.final_path))
    b = onnx.load(str(resumed.final_path))
    for x, y in zip(a.graph.initializer, b.graph.initializer, strict=True):
        np.testing.assert_array_equal(numpy_helper.to_array(x), numpy_helper.to_array(y), err_msg=x.name)
    assert whole.final_path.name == resumed.final_path.name


def test_resume_refuses_another_models_run(fixture_model, synthetic, tmp_path):
    train, val = synthetic
    options = ScheduleOptions(PruneOptions(0.5), iterations=1, train=TrainOptions(epochs=0))
    first = fixture_model("matlab_alexnet_opset8")
    run(first, tmp_path / "run", options, None, val, preprocess_for(onnxprune.load(first)))
    other = fixture_model("matlab_alexnet_opset13")
    with pytest.raises(ConfigError, match="holds a run of another model"):
        run(other, tmp_path / "run", options, None, val, preprocess_for(onnxprune.load(other)), resume=True)
    with pytest.raises(ConfigError, match="is not empty"):
        run(first, tmp_path / "run", options, None, val, preprocess_for(onnxprune.load(first)))


def test_prune_cli_with_data_runs_omp(fixture_model, tmp_path):
    images, labels = fixtures.class_images(30, size=35, classes=5)
    np.savez(tmp_path / "d.npz", x=images, y=labels)
    args = [
        "prune",
        str(fixture_model("matlab_alexnet_opset8")),
        "--sparsity",
        "0.5",
        "--data",
        str(tmp_path / "d.npz"),
    ]
    result = CliRunner().invoke(
        app, args + ["--finetune-epochs", "1", "--batch-size", "8", "--out-dir", str(tmp_path / "o")]
    )
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in (tmp_path / "o").iterdir())
    assert any(n.startswith("omp_unstructured_0.50_acc_") for n in names)
    assert {"results.json", "results.csv", "run.json", "round_1.onnx"} <= set(names)
    held_out = json.loads((tmp_path / "o" / "results.json").read_text())["extra"]["val_samples"]
    assert 0 < held_out <= 6  # the default split holds out 20%, stratified by class
    assert f"top-1 on {held_out} images held out from --data" in result.stdout, "issues 27, 29: split and size"
    assert f"on {held_out} images held out from --data, in onnxruntime)" in result.stdout  # the final line too
    header = next(line for line in result.stdout.splitlines() if "round" in line and "target" in line)
    assert "sparsity (of weights)" in header and "top-1 pruned" in header and "top-1 fine-tuned" in header
    assert "validation images" in (tmp_path / "o" / "report.html").read_text()


def test_a_round_that_trained_nothing_shows_its_top1_as_pruned(fixture_model, tmp_path):
    """Issue 29, 7 and 10: no fine-tuned column where nothing fine-tuned; channels named as channels."""
    images, labels = fixtures.class_images(10, size=35, classes=5)
    np.savez(tmp_path / "d.npz", x=images, y=labels)
    args = [
        "prune",
        str(fixture_model("matlab_alexnet_opset8")),
        "--method",
        "l1-filter",
        "--sparsity",
        "0.5",
        "--data",
        str(tmp_path / "d.npz"),
        "--out-dir",
        str(tmp_path / "o"),
        "--json",
    ]
    summary = json.loads(CliRunner().invoke(app, args).stdout)
    assert summary["evaluated_on"] == "10 images of --data"  # nothing was fitted: all of them
    result = CliRunner().invoke(app, args[:-1] + ["--out-dir", str(tmp_path / "again")])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    header = next(line for line in lines if "round" in line and "target" in line)
    assert "sparsity (of channels)" in header and "top-1 pruned" in header and "fine-tuned" not in header
    row = next(line for line in lines if line.strip("│ ").startswith("1 "))
    assert f"{summary['rounds'][0]['top1']:.2%}" in row
    assert "top-1 on 10 images of --data" in result.stdout


def test_a_worse_fine_tuned_round_is_set_aside_only_beyond_sampling_noise():
    """Issue 27: on 60 images, 100% -> 98.33% (one image) discarded the fine-tuning."""
    from onnxprune.workbench.metrics import sampling_noise

    assert sampling_noise(1.0, 60) > 1 / 60  # one image of 60 is within the noise
    assert sampling_noise(0.5, 10_000) == pytest.approx(0.01)  # two standard errors
    assert sampling_noise(0.9, 10_000) < sampling_noise(0.9, 100)


def test_a_result_far_below_dense_after_fine_tuning_gets_a_note_with_what_to_try(tmp_path):
    from onnxprune.workflow.pipeline import _far_below_dense
    from onnxprune.workflow.schedule import ScheduleResult

    schedule = ScheduleOptions(PruneOptions(0.4, method="l1-filter"), train=TrainOptions(epochs=1))
    far = ScheduleResult(tmp_path, [], 0.8767, None, 0.3367, val_samples=300)
    note = _far_below_dense(far, schedule, train_samples=500)
    assert note.startswith("after fine-tuning, top-1 33.67% is 54.0 points below the dense 87.67% (on 300 validation")
    assert "more training data (this run had 500 images)" in note and "a lower --sparsity than 0.4" in note
    assert _far_below_dense(ScheduleResult(tmp_path, [], 0.8767, None, 0.85, val_samples=300), schedule, 500) is None


def test_prune_cli_resume_on_other_model_is_one_line(fixture_model, tmp_path):
    images, labels = fixtures.class_images(10, size=35, classes=5)
    np.savez(tmp_path / "d.npz", x=images, y=labels)
    base = ["prune", "--sparsity", "0.5", "--data", str(tmp_path / "d.npz"), "--out-dir", str(tmp_path / "o")]
    first = CliRunner().invoke(app, [base[0], str(fixture_model("matlab_alexnet_opset8")), *base[1:]])
    assert first.exit_code == 0, first.output
    second = CliRunner().invoke(app, [base[0], str(fixture_model("matlab_alexnet_opset13")), *base[1:], "--resume"])
    assert second.exit_code == 2 and "another model" in second.stderr and second.stderr.count("\n") == 1


def test_distillation_loss_vanishes_when_the_student_is_the_teacher_and_is_scaled_by_t_squared():
    import torch

    from onnxprune.workbench.train import _with_distillation

    logits = torch.randn(8, 5)
    teacher = torch.nn.Identity()
    hard = torch.tensor(1.5)
    same = _with_distillation(hard, logits, teacher, logits, TrainOptions(distill_weight=0.5))
    assert float(same) == pytest.approx(0.75), "KL(p || p) = 0: only (1 - w) x the hard loss is left"
    other = torch.randn(8, 5)
    for temperature in (1.0, 4.0):
        options = TrainOptions(distill_weight=1.0, distill_temperature=temperature)
        soft = float(_with_distillation(hard, logits, teacher, other, options))
        p = torch.log_softmax(other / temperature, 1)
        q = torch.log_softmax(logits / temperature, 1)
        expected = float((p.exp() * (p - q)).sum(1).mean()) * temperature**2
        assert soft == pytest.approx(expected, rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("method, iterations", [("magnitude", 2), ("l1-filter", 1)])
def test_distillation_from_the_dense_model_in_omp_and_imp(method, iterations, fixture_model, synthetic, tmp_path):
    train, val = synthetic
    model_path = fixture_model("matlab_alexnet_opset13")
    preprocess = preprocess_for(onnxprune.load(model_path))
    finals = {}
    for weight in (0.0, 0.7):
        training = TrainOptions(epochs=1, batch_size=8, lr=1e-3, augment=False, distill_weight=weight)
        options = ScheduleOptions(PruneOptions(0.5, method=method), iterations=iterations, train=training)
        result = run(model_path, tmp_path / f"run_{weight}", options, train, val, preprocess)
        finals[weight] = onnxprune.load(result.final_path)
    assert finals[0.7].layers[0].shape == finals[0.0].layers[0].shape
    differs = [
        not np.array_equal(finals[0.7].weight_array(layer), finals[0.0].weight_array(layer))
        for layer in finals[0.7].layers
    ]
    assert any(differs), "the soft targets changed the training"


def test_lr_schedule_rewinds_or_continues_the_decay_across_rounds(fixture_model, synthetic):
    from onnxprune.workbench.convert import to_torch

    rewind = ScheduleOptions(PruneOptions(0.8), iterations=2, train=TrainOptions(epochs=1, lr=0.01))
    continued = ScheduleOptions(PruneOptions(0.8), iterations=2, train=TrainOptions(epochs=1, lr=0.01),
                                lr_schedule="continue")  # fmt: skip
    assert [rewind.train_for_round(k).cosine_span for k in (1, 2)] == [(0.0, 1.0), (0.0, 1.0)]
    assert [continued.train_for_round(k).cosine_span for k in (1, 2)] == [(0.0, 0.5), (0.5, 1.0)]
    train, _ = synthetic
    model = onnxprune.load(fixture_model("matlab_alexnet_opset13"))
    options = TrainOptions(epochs=1, batch_size=8, lr=0.01, augment=False, cosine_span=(0.0, 0.5))
    first = finetune(to_torch(model), train, preprocess_for(model), options)
    assert first.history[-1].lr == pytest.approx(0.005), "half the decay: cos(pi/2) -> lr/2 at the end"
    with pytest.raises(ConfigError, match="--lr-schedule must be one of rewind, continue"):
        ScheduleOptions(PruneOptions(0.8), lr_schedule="sometimes")


def test_gradual_pruning_grows_the_masks_along_the_cubic_ramp_and_writes_the_target(fixture_model, synthetic, tmp_path):
    train, val = synthetic
    model_path = fixture_model("matlab_alexnet_opset8")
    training = TrainOptions(epochs=7, batch_size=8, lr=0.01, seed=0)  # 35 steps: one update per step or less
    options = ScheduleOptions(PruneOptions(0.8, scope="global"), train=training, schedule="gradual")
    result = run(model_path, tmp_path / "gmp", options, train, val, preprocess_for(onnxprune.load(model_path)))
    steps = options.train.epochs * -(-len(train) // training.batch_size)
    updates = result.rounds[0].method_history
    sparsities = [update["sparsity"] for update in updates]
    assert len(updates) == 20 and sparsities == sorted(sparsities) and sparsities[-1] == pytest.approx(0.8)
    assert sparsities[0] == pytest.approx(0.8 * (1 - (1 - 1 / 20) ** 3), abs=1e-6), "Zhu & Gupta's cubic ramp"
    assert updates[-1]["step"] <= round(0.75 * steps), "the ramp ends at 3/4 of the fine-tuning"
    written = onnxprune.load(result.final_path)
    zeros = sum(int((written.weight_array(layer) == 0).sum()) for layer in written.layers)
    assert zeros / sum(layer.numel for layer in written.layers) == pytest.approx(0.8, abs=1e-3)
    assert result.final_path.name.startswith("gmp_unstructured_0.80_acc_")


def test_gradual_pruning_refuses_what_it_cannot_do():
    from onnxprune.pruning.methods import check_schedule

    training = TrainOptions(epochs=1)
    with pytest.raises(ConfigError, match="--schedule gradual grows weight masks while training; l1-filter"):
        check_schedule(ScheduleOptions(PruneOptions(0.5, method="l1-filter"), train=training, schedule="gradual"))
    with pytest.raises(ConfigError, match="--rewind resets surviving weights of a masked model"):
        check_schedule(ScheduleOptions(PruneOptions(0.5, method="l1-filter"), train=training, rewind=True))
    with pytest.raises(ConfigError, match="--schedule gradual prunes during one fine-tuning"):
        ScheduleOptions(PruneOptions(0.5), train=training, schedule="gradual", iterations=3)
    with pytest.raises(ConfigError, match="--schedule gradual prunes while fine-tuning: add --finetune-epochs"):
        ScheduleOptions(PruneOptions(0.5), schedule="gradual")


def test_rounds_record_accuracy_after_pruning_and_keep_the_better_of_pruned_and_fine_tuned(
    fixture_model, synthetic, tmp_path
):
    train, val = synthetic
    model_path = fixture_model("matlab_alexnet_opset8")
    preprocess = preprocess_for(onnxprune.load(model_path))
    wrecking = TrainOptions(epochs=1, batch_size=8, lr=50.0, augment=False)  # a learning rate that ruins the model
    options = ScheduleOptions(PruneOptions(0.3, scope="global"), train=wrecking)
    result = run(model_path, tmp_path / "run", options, train, val, preprocess)
    record = result.rounds[0]
    assert record.top1_pruned is not None and record.kept == "pruned"
    assert record.top1 == pytest.approx(record.top1_pruned), "the pruned start was kept, and measured as such"
    gentle = ScheduleOptions(PruneOptions(0.3, scope="global"), train=dataclasses_replace(wrecking, lr=1e-4))
    kept = run(model_path, tmp_path / "gentle", gentle, train, val, preprocess).rounds[0]
    assert kept.top1_pruned is not None and (kept.kept == "fine-tuned") == (kept.top1 >= kept.top1_pruned)


def dataclasses_replace(options, **changes):
    import dataclasses

    return dataclasses.replace(options, **changes)


def test_prune_prints_its_notes_before_fine_tuning_starts(fixture_model, tmp_path, monkeypatch):
    """Issue 29, 1: the chosen optimizer and learning rate are on screen before training, and stay after Ctrl-C."""
    import onnxprune.workflow.schedule as schedule_module

    images, labels = fixtures.class_images(10, size=35, classes=5)
    np.savez(tmp_path / "d.npz", x=images, y=labels)
    calls = []

    def interrupted(*args, **kwargs):
        calls.append("finetune")
        raise KeyboardInterrupt

    monkeypatch.setattr(schedule_module, "finetune", interrupted)
    args = [
        "prune",
        str(fixture_model("matlab_alexnet_opset8")),
        "--sparsity",
        "0.5",
        "--data",
        str(tmp_path / "d.npz"),
        "--finetune-epochs",
        "1",
        "--batch-size",
        "8",
        "--out-dir",
        str(tmp_path / "o"),
    ]
    result = CliRunner().invoke(app, args)
    assert calls == ["finetune"] and result.exit_code == 130, result.output
    assert "note: raw 0-255 inputs: adam at learning rate 0.001" in result.stdout
    assert "note: scope " in result.stdout  # the scope measured before fine-tuning, too
    assert "interrupted; finished rounds are kept" in result.output


def test_the_training_figure_breaks_its_lines_between_rounds_and_stops_at_100(tmp_path, monkeypatch):
    """Issue 29, 12: lines ran across round boundaries (a pruning came between) and the top-1 axis to 104%."""
    import matplotlib.pyplot as plt

    from onnxprune.report import plots

    kept = []
    monkeypatch.setattr(plots, "_save", lambda figure, path: kept.append(figure) or path)
    history = [{"train_loss": 0.5, "train_top1": 0.99, "val_top1": 1.0}, {"train_loss": 0.4, "train_top1": 1.0,
                                                                          "val_top1": 1.0}]  # fmt: skip
    rounds = [{"round": n, "sparsity": 0.3 * n, "top1": 1.0, "top1_pruned": 0.98, "train_history": history}
              for n in (1, 2)]  # fmt: skip
    plots.training({"units": "weights", "rounds": rounds}, tmp_path / "t.png")
    loss_axis, accuracy_axis, _, top1_axis = kept[0].axes[:4]
    for line in accuracy_axis.get_lines()[:2] + loss_axis.get_lines()[:1]:
        x, y = line.get_xdata(), line.get_ydata()
        gap = [i for i, value in enumerate(y) if np.isnan(value)]
        assert gap and x[gap[0]] == 2.5, "no line joins epoch 2 (round 1) to epoch 3 (round 2)"
    for axis in (accuracy_axis, top1_axis):
        assert axis.get_ylim()[1] <= 100
    plt.close(kept[0])


def test_a_compacted_one_shot_prune_says_weights_removed_not_zero(fixture_model, tmp_path):
    """Issue 29, 10: a compacted file has no zeros; its channels are gone, and the table says channels."""
    model = str(fixture_model("matlab_alexnet_opset8"))
    result = CliRunner().invoke(app, ["prune", model, "--method", "l1-filter", "--sparsity", "0.3",
                                      "-o", str(tmp_path / "small.onnx")])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "removed (the channels are gone from the file)" in result.stdout and "% zero" not in result.stdout
    assert "channels removed" in next(line for line in result.stdout.splitlines() if "layer" in line and "op" in line)
