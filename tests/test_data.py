"""Every data format, preprocessing, and the bad input users meet."""

from __future__ import annotations

import gzip
import zipfile

import fixtures
import h5py
import numpy as np
import onnx
import pytest
import scipy.io
from conftest import shared_path
from typer.testing import CliRunner

import onnxprune
from onnxprune.cli import app
from onnxprune.errors import DataError
from onnxprune.workbench.data import Dataset, _labels_from, check_labels, load_data, preprocess_for, split


def test_image_folder_sorted_classes_and_resize(tmp_path):
    root = fixtures.image_folder(tmp_path / "images")
    dataset = load_data(root, size=(16, 16))
    assert dataset.classes == ["cat", "dog", "fish"]
    assert dataset.images.shape == (12, 16, 16, 3) and dataset.images.dtype == np.uint8
    assert list(np.bincount(dataset.labels)) == [4, 4, 4]
    assert dataset.value_range == "0-255"


def test_image_folder_wrapped_in_one_folder_and_zip(tmp_path):
    fixtures.image_folder(tmp_path / "wrap" / "train")
    assert load_data(tmp_path / "wrap", size=(8, 8)).classes == ["cat", "dog", "fish"]
    archive = tmp_path / "images.zip"
    with zipfile.ZipFile(archive, "w") as handle:
        for file in sorted((tmp_path / "wrap").rglob("*.png")):
            handle.write(file, file.relative_to(tmp_path / "wrap"))
    dataset = load_data(archive, size=(8, 8))
    assert dataset.classes == ["cat", "dog", "fish"] and len(dataset) == 12


def test_mat_v5_in_matlab_order_with_cellstr_labels(tmp_path):
    images, labels = fixtures.class_images(6, size=9, classes=3)
    names = np.array(["bird", "cat", "dog"], dtype=object)[labels]
    path = tmp_path / "data.mat"
    scipy.io.savemat(path, {"X": images.transpose(1, 2, 3, 0), "Y": names.reshape(-1, 1)})  # H x W x C x N
    dataset = load_data(path)
    assert dataset.images.shape == (6, 9, 9, 3)
    np.testing.assert_array_equal(dataset.images, images)
    assert dataset.classes == ["bird", "cat", "dog"]
    np.testing.assert_array_equal(dataset.labels, labels)


def test_mat_v5_numeric_labels_and_nchw(tmp_path):
    images, labels = fixtures.class_images(6, size=9, classes=3)
    path = tmp_path / "data.mat"
    scipy.io.savemat(path, {"images": images.transpose(0, 3, 1, 2).astype(np.float64) / 255, "labels": labels})
    dataset = load_data(path)
    assert dataset.images.shape == (6, 9, 9, 3) and dataset.value_range == "0-1"
    np.testing.assert_array_equal(dataset.labels, labels)


def test_mat_v73_through_h5py(tmp_path):
    images, labels = fixtures.class_images(5, size=7, classes=5)
    path = tmp_path / "data73.mat"
    with h5py.File(path, "w", userblock_size=512) as handle:  # MATLAB stores column-major: h5py sees dims reversed
        handle.create_dataset("X", data=images.transpose(1, 2, 3, 0).astype(np.float64).transpose())
        handle["X"].attrs["MATLAB_class"] = np.bytes_("double")
        handle.create_dataset("Y", data=labels.astype(np.float64).reshape(1, -1).transpose())
        handle["Y"].attrs["MATLAB_class"] = np.bytes_("double")
    dataset = load_data(path)
    np.testing.assert_array_equal(dataset.images, images)
    np.testing.assert_array_equal(dataset.labels, labels)


def test_mat_v73_with_matlab_header(tmp_path):
    path = tmp_path / "header.mat"
    with h5py.File(path, "w", userblock_size=512) as handle:
        handle.create_dataset("X", data=np.zeros((4, 1, 5, 5)))
        handle["X"].attrs["MATLAB_class"] = np.bytes_("double")
        handle.create_dataset("Y", data=np.array([[0.0, 1.0, 0.0, 1.0]]))
        handle["Y"].attrs["MATLAB_class"] = np.bytes_("double")
    with open(path, "r+b") as stream:
        stream.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Fri Nov 27 2026 HDF5 schema 1.00 .")
    assert len(load_data(path)) == 4


def test_categorical_labels_tell_the_user_what_to_save(tmp_path):
    path = tmp_path / "categorical.mat"
    with h5py.File(path, "w") as handle:
        handle.create_dataset("X", data=np.zeros((3, 1, 4, 4)))
        handle["X"].attrs["MATLAB_class"] = np.bytes_("double")
        handle.create_dataset("Y", data=np.zeros((3, 1), dtype=np.uint32))
        handle["Y"].attrs["MATLAB_class"] = np.bytes_("categorical")
    with pytest.raises(DataError, match=r"MATLAB object.*cellstr\(Y\) or double\(Y\)"):
        load_data(path)
    from scipy.io.matlab import MatlabOpaque

    opaque = MatlabOpaque(np.empty((1,), dtype=[("s0", "O"), ("s1", "O"), ("s2", "O"), ("arr", "O")]))
    with pytest.raises(DataError, match="categorical"):
        _labels_from(opaque, tmp_path / "v5.mat", "labels")


def test_npz(tmp_path):
    images, labels = fixtures.class_images(4, size=6, classes=2)
    np.savez(tmp_path / "d.npz", x=images, y=labels)
    dataset = load_data(tmp_path / "d.npz")
    assert dataset.images.shape == (4, 6, 6, 3) and dataset.classes == ["0", "1"]


def test_idx_pair(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    with gzip.open(tmp_path / "t-images-idx3-ubyte.gz", "wb") as handle:
        handle.write(bytes([0, 0, 8, 3]) + b"".join(d.to_bytes(4, "big") for d in images.shape) + images.tobytes())
    with gzip.open(tmp_path / "t-labels-idx1-ubyte.gz", "wb") as handle:
        handle.write(bytes([0, 0, 8, 1]) + (2).to_bytes(4, "big") + bytes([1, 0]))
    dataset = load_data(tmp_path / "t-images-idx3-ubyte.gz")
    assert dataset.images.shape == (2, 3, 4, 1) and list(dataset.labels) == [1, 0]
    assert len(load_data(tmp_path)) == 2  # the folder holding the pair


def test_real_mnist_idx():
    dataset = load_data(shared_path("data/mnist"))
    assert dataset.images.shape == (10000, 28, 28, 1) and dataset.classes == [str(i) for i in range(10)]


def test_split_is_seeded_and_stratified():
    images, labels = fixtures.class_images(50, size=4, classes=5)
    dataset = Dataset(images, labels, [str(i) for i in range(5)], "synthetic")
    train, val = split(dataset, 0.2, seed=3)
    again_train, again_val = split(dataset, 0.2, seed=3)
    np.testing.assert_array_equal(val.labels, again_val.labels)
    assert len(val) == 10 and list(np.bincount(val.labels)) == [2] * 5 and len(train) == 40


def test_preprocess_matlab_defaults_and_column_major(fixture_model):
    model = onnxprune.load(fixture_model("matlab_alexnet_opset8"))
    assert preprocess_for(model).pixel_range == "0-255"
    assert preprocess_for(onnxprune.load(fixture_model("vgg_bn_torchscript"))).pixel_range == "0-1"
    mlp = onnxprune.load(fixture_model("matmul_mlp"))  # takes 20 values: images of 4 x 5 are flattened
    images = np.arange(2 * 4 * 5, dtype=np.uint8).reshape(2, 4, 5, 1)
    dataset = Dataset(images, np.array([0, 1]), ["a", "b"], "s")
    row = preprocess_for(mlp, pixel_range="0-255")(dataset)
    column = preprocess_for(mlp, pixel_range="0-255", flatten_order="column")(dataset)
    np.testing.assert_array_equal(row[0], images[0, :, :, 0].reshape(-1))
    np.testing.assert_array_equal(column[0], images[0, :, :, 0].T.reshape(-1))


def test_preprocess_nhwc_gray_to_rgb_and_mean_std(fixture_model):
    model = onnxprune.load(fixture_model("tf2onnx_nhwc"))  # NHWC 12 x 12 x 3
    images = np.full((1, 6, 6, 1), 255, np.uint8)
    dataset = Dataset(images, np.array([0]), ["a"], "s")
    batch = preprocess_for(model, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))(dataset)
    assert batch.shape == (1, 12, 12, 3)
    np.testing.assert_allclose(batch, 2.0, atol=1e-5)


# --- bad input ---------------------------------------------------------------------------------


def test_empty_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images found"):
        load_data(tmp_path / "empty")


def test_one_class(tmp_path):
    fixtures.image_folder(tmp_path / "one", classes=("only",))
    with pytest.raises(DataError, match="only one class"):
        load_data(tmp_path / "one")


def test_undecodable_image_is_named(tmp_path):
    root = fixtures.image_folder(tmp_path / "imgs")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(DataError, match=r"broken\.png: cannot decode"):
        load_data(root, size=(8, 8))


def test_labels_beyond_the_model_outputs():
    dataset = Dataset(np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 7]), [str(i) for i in range(8)], "src")
    with pytest.raises(DataError, match="src: 8 classes .* but the model has 5 outputs: is this the data"):
        check_labels(dataset, 5)
    unnamed = Dataset(np.zeros((2, 4, 4, 3), np.uint8), np.array([0, 7]), [], "src")
    with pytest.raises(DataError, match="^src: 8 classes but the model has 5 outputs"):
        check_labels(unnamed, 5)
    check_labels(unnamed.subset(np.arange(0)), 5)  # no samples: nothing to check (and no max of nothing)


def test_mat_without_expected_variables_lists_them(tmp_path):
    scipy.io.savemat(tmp_path / "odd.mat", {"pictures": np.zeros((2, 3)), "answers": np.zeros(2)})
    with pytest.raises(DataError, match=r"no images variable.*pictures \(float64 2x3\), answers"):
        load_data(tmp_path / "odd.mat")


def test_missing_data_path(tmp_path):
    with pytest.raises(DataError, match="no such file or folder"):
        load_data(tmp_path / "nowhere")


def test_cli_data_errors_are_one_line(fixture_model, tmp_path):
    result = CliRunner().invoke(
        app, ["evaluate", str(fixture_model("matlab_alexnet_opset8")), "--data", str(tmp_path / "nowhere")]
    )
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1 and "no such file or folder" in result.stderr


def test_dataset_of_wrong_size_for_flat_model(fixture_model):
    mlp = onnxprune.load(fixture_model("matmul_mlp"))
    dataset = Dataset(np.zeros((1, 3, 3, 1), np.uint8), np.array([0]), ["a"], "tiny")
    with pytest.raises(DataError, match="9 values but the model takes 20"):
        preprocess_for(mlp)(dataset)


def test_onnx_untouched_by_data_loading(fixture_model):
    path = fixture_model("matlab_alexnet_opset8")
    before = path.read_bytes()
    preprocess_for(onnxprune.load(path))
    assert path.read_bytes() == before and onnx.load(str(path))


def test_real_merchdata_zip_with_spaces_in_class_names():
    dataset = load_data(shared_path("data/merchdata/MerchData.zip"), size=(64, 64))
    assert len(dataset) == 75 and len(dataset.classes) == 5
    assert "MathWorks Cap" in dataset.classes and list(np.bincount(dataset.labels)) == [15] * 5


def test_stratified_sample_draws_evenly_from_every_class():
    from onnxprune.workbench.data import stratified_sample

    labels = np.repeat(np.arange(4), [100, 100, 100, 3])  # grouped by class, one class small
    picked = stratified_sample(labels, 40, seed=0)
    assert picked.size == 40 and np.all(np.diff(picked) > 0), "in the data's own order, no repeats"
    counts = np.bincount(labels[picked], minlength=4)
    assert counts[3] == 3 and sorted(counts[:3]) == [12, 12, 13], "the small class gives all it has"
    np.testing.assert_array_equal(picked, stratified_sample(labels, 40, seed=0))
    assert not np.array_equal(picked, stratified_sample(labels, 40, seed=1))


def test_limit_on_a_class_grouped_zip_is_representative_and_first_keeps_archive_order():
    from conftest import shared_path

    from onnxprune.graph.model import load
    from onnxprune.options import DataOptions
    from onnxprune.workbench.data import prepare

    model = load(shared_path("models/pytorch/resnet_2b_cifar10.onnx"))
    zip_path = str(shared_path("data/cifar10/test.zip"))
    _, limited, _ = prepare(model, DataOptions(zip_path, limit=500))
    assert np.bincount(limited.labels, minlength=10).tolist() == [50] * 10
    _, first, _ = prepare(model, DataOptions(zip_path, first=500))
    assert len(np.unique(first.labels)) == 1, "the archive lists one class first"
    from onnxprune.errors import ConfigError

    with pytest.raises(ConfigError, match="--limit draws N evenly from the classes, --first takes the first N"):
        DataOptions(zip_path, limit=10, first=10)


def test_a_note_when_the_data_lacks_classes_the_model_has(fixture_model, tmp_path):
    from onnxprune.options import DataOptions
    from onnxprune.workbench.data import prepare

    model = onnxprune.load(fixture_model("matlab_alexnet_opset8"))  # 5 classes
    folder = fixtures.image_folder(tmp_path / "three", classes=("a", "b", "c"), size=(35, 35))
    preprocess, _, _ = prepare(model, DataOptions(path=str(folder)))
    assert any("holds samples of 3 of the model's 5 classes" in note for note in preprocess.notes)
    five = fixtures.image_folder(tmp_path / "five", classes=("a", "b", "c", "d", "e"), size=(35, 35))
    assert not any("classes" in note for note in prepare(model, DataOptions(path=str(five)))[0].notes)


def test_merchdata_into_an_mnist_model_says_what_was_done_to_it():
    """Issue 19: MerchData (5 classes, 227x227 RGB) into a 10-class 28x28 grey MNIST model was silently resized,
    turned grey and scored 13%: every conversion and the missing classes are said, through the CLI too."""
    from conftest import shared_path

    model, merch = shared_path("models/pytorch/convnet_maxpool_mnist.onnx"), shared_path("data/merchdata/MerchData.zip")
    result = CliRunner().invoke(app, ["evaluate", str(model), "--data", str(merch)])
    assert result.exit_code == 0, result.output
    said = " ".join(result.stdout.split())
    assert "MerchData.zip: images resized from 227x227 to the model's 28x28 (bilinear)" in said
    assert "MerchData.zip: RGB images converted to grey for the model's 1-channel input" in said
    assert "MerchData.zip holds samples of 5 of the model's 10 classes" in said


def test_more_classes_than_outputs_is_refused_in_one_line():
    """MerchData's 5 classes into the 3-class FLIR defect model: the class-count error, before any measurement."""
    from conftest import shared_path

    model, merch = shared_path("models/matlab/flir_defect_r2020.onnx"), shared_path("data/merchdata/MerchData.zip")
    result = CliRunner().invoke(app, ["evaluate", str(model), "--data", str(merch), "--limit", "6"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"error: {merch} (6 drawn evenly from the classes, seed 0): 5 classes (MathWorks Cap, MathWorks Cube, "
        "MathWorks Playing Cards, MathWorks Screwdriver, MathWorks Torch) but the model has 3 outputs: is this the "
        "data the model classifies? (labels are class indices 0 ... C-1)"
    )


def test_array_data_resized_and_grey_repeated_to_rgb_is_said(fixture_model, tmp_path):
    from onnxprune.options import DataOptions
    from onnxprune.workbench.data import prepare

    model = onnxprune.load(fixture_model("vgg_bn_torchscript"))  # 3x16x16
    pixels, labels = fixtures.class_images(20, size=12, classes=10)
    np.savez(tmp_path / "grey.npz", x=pixels.mean(axis=3, keepdims=True).astype(np.uint8), y=labels)
    notes = prepare(model, DataOptions(path=str(tmp_path / "grey.npz")))[0].notes
    assert f"{tmp_path / 'grey.npz'}: images resized from 12x12 to the model's 16x16 (bilinear)" in notes
    assert f"{tmp_path / 'grey.npz'}: grey images repeated to 3 channels (RGB) for the model's input" in notes
    np.savez(tmp_path / "fits.npz", x=fixtures.class_images(20, size=16, classes=10)[0], y=labels)
    assert not prepare(model, DataOptions(path=str(tmp_path / "fits.npz")))[0].notes
