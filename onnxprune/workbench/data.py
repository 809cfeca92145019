"""Labelled images in the formats these users have, and the preprocessing a model expects.

Sources (`load_data`):
- a folder or a .zip of images in class subfolders (MATLAB's `imageDatastore` with
  `'LabelSource','foldernames'`), PNG or JPEG; classes are the folder names, sorted;
- `.mat` files: v5/v7 through scipy, v7.3 through h5py; images H x W x C x N (MATLAB's order) or
  N x C x H x W, labels numeric or a cell array of class names;
- `.npz` with `x` and `y` (or `images` and `labels`);
- MNIST idx files (`*-images-idx3-ubyte[.gz]` with its `*-labels-idx1-ubyte[.gz]`), or a folder
  holding such a pair.

Every source becomes a `Dataset`: images N x H x W x C as stored (uint8 0-255 or float), integer
labels and class names. `Preprocess` then turns it into exactly the tensor the model's input wants.
"""

from __future__ import annotations

import gzip
import io
import os
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from onnxprune.errors import DataError
from onnxprune.graph.model import Model

if TYPE_CHECKING:
    import h5py

    from onnxprune.options import DataOptions

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")
IMAGE_KEYS = ("x", "images", "X", "XTrain", "XTest", "XValidation", "data", "imgs", "input", "inputs")
LABEL_KEYS = ("y", "labels", "Y", "YTrain", "YTest", "YValidation", "label", "targets")
# MATLAB's rgb2gray weights
GRAY_WEIGHTS = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)


@dataclass
class Dataset:
    """Images and labels held in memory.

    Attributes:
        images: N x H x W x C, as stored: uint8 (0-255) or floating point.
        labels: N integer class indices.
        classes: class names; `classes[labels[i]]` names sample i.
        source: where it came from (for messages).
        value_range: "0-255" or "0-1": what the stored values mean.
        flat: True when the source held feature vectors (N x D), not images.
        resized_from: the (H, W) sizes image files had before they were resized at load (of the whole
            source: a subset keeps them, whether or not its own files had each size).
    """

    images: np.ndarray
    labels: np.ndarray
    classes: list[str]
    source: str
    value_range: str = "0-255"
    flat: bool = False
    resized_from: tuple[tuple[int, int], ...] = ()

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, indices: np.ndarray, suffix: str = "") -> Dataset:
        """The samples at `indices` (a copy)."""
        return replace(self, images=self.images[indices], labels=self.labels[indices], source=self.source + suffix)


def load_data(path: str | os.PathLike, size: tuple[int, int] | None = None) -> Dataset:
    """Read labelled images from a folder, .zip, .mat, .npz or MNIST idx file.

    Args:
        path: the data source.
        size: (H, W) to resize decoded image files to (folders and zips only; array sources are
            resized by `Preprocess`). None keeps each file's size, which must then be uniform.

    Raises:
        DataError: a missing path, an empty folder, one class only, an image that will not
            decode (named), a .mat without recognisable variables (listing what it holds), ...
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; check the data path")
    if path.is_dir():
        idx_images = sorted(path.glob("*images-idx3-ubyte*"))
        if idx_images:
            return _load_idx(idx_images[0])
        return _load_image_files(_folder_entries(path), str(path), size)
    suffix = path.suffix.lower()
    if suffix == ".zip":
        return _load_image_files(_zip_entries(path), str(path), size)
    if suffix == ".mat":
        return _load_mat(path)
    if suffix == ".npz":
        return _load_npz(path)
    if "idx3-ubyte" in path.name:
        return _load_idx(path)
    raise DataError(
        f"{path}: unknown data format; give a folder or .zip of class subfolders, a .mat, an .npz or an MNIST idx file"
    )


def stratified_sample(labels: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """`count` indices drawn at random (seeded), the same number from every class where possible.

    Class-folder zips list their images class by class, so "the first N" is one or two classes;
    this is the representative N. Classes too small to give their share give all they have, and
    the rest is shared among the others. The indices come back in the data's own order.
    """
    rng = np.random.default_rng(seed)
    members = {label: rng.permutation(np.flatnonzero(labels == label)) for label in np.unique(labels)}
    taken = {label: 0 for label in members}
    left = min(count, labels.size)
    while left > 0:
        open_classes = [label for label in members if taken[label] < members[label].size]
        share, extra = divmod(left, len(open_classes))
        for position, label in enumerate(rng.permutation(open_classes)):
            more = min(share + (1 if position < extra else 0), members[label].size - taken[label])
            taken[label] += more
            left -= more
    return np.sort(np.concatenate([members[label][: taken[label]] for label in members]))


def split(dataset: Dataset, val_fraction: float, seed: int = 0) -> tuple[Dataset, Dataset]:
    """A seeded, stratified split into (train, validation)."""
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"--val-split must be between 0 and 1, got {val_fraction}")
    rng = np.random.default_rng(seed)
    val_indices = []
    for label in np.unique(dataset.labels):
        members = np.flatnonzero(dataset.labels == label)
        rng.shuffle(members)
        val_indices.append(members[: max(1, int(round(val_fraction * members.size)))])
    val = np.sort(np.concatenate(val_indices))
    train = np.setdiff1d(np.arange(len(dataset)), val)
    return dataset.subset(train, " (train split)"), dataset.subset(val, " (validation split)")


# --- image folders and zips ------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    label: str
    name: str
    read: object  # () -> bytes


def _folder_entries(root: Path) -> list[_Entry]:
    root = _descend_single_wrapper(root)
    entries = []
    for class_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for file in sorted(class_dir.rglob("*")):
            if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file():
                entries.append(_Entry(class_dir.name, str(file), file.read_bytes))
    return entries


def _descend_single_wrapper(root: Path) -> Path:
    """`data/` holding only `train/` whose subfolders are the classes: descend into `train/`."""
    children = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    loose_images = [p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    if len(children) == 1 and not loose_images:
        grandchildren = [p for p in children[0].iterdir() if p.is_dir()]
        if grandchildren:
            return children[0]
    return root


def _zip_entries(path: Path) -> list[_Entry]:
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise DataError(f"{path}: not a readable .zip file") from None
    names = [n for n in archive.namelist() if not n.endswith("/") and Path(n).suffix.lower() in IMAGE_SUFFIXES]
    names = [n for n in names if "__MACOSX" not in n]
    entries = []
    for name in names:  # the archive's own order: "the first N" of a zip means these
        parts = Path(name).parts
        if len(parts) < 2:
            continue  # an image at the top of the zip has no class folder
        entries.append(_Entry(parts[-2], f"{path}:{name}", lambda n=name: archive.read(n)))
    return entries


def _load_image_files(entries: list[_Entry], source: str, size: tuple[int, int] | None) -> Dataset:
    if not entries:
        raise DataError(f"{source}: no images found; expected class subfolders of PNG or JPEG files")
    classes = sorted({entry.label for entry in entries})
    if len(classes) < 2:
        raise DataError(f"{source}: only one class ('{classes[0]}'); put each class's images in its own subfolder")
    decoded = [_decode(entry, size) for entry in entries]
    images = [image for image, _ in decoded]
    resized_from = tuple(sorted({original for image, original in decoded if original != image.shape[:2]}))
    shapes = {image.shape for image in images}
    if len(shapes) > 1:
        channels = max(image.shape[2] for image in images)
        images = [np.repeat(image, channels, axis=2) if image.shape[2] < channels else image for image in images]
        shapes = {image.shape for image in images}
        if len(shapes) > 1:
            raise DataError(
                f"{source}: images have different sizes {sorted(shapes)[:3]}...; "
                "give a model (or a size) to resize them to its input"
            )
    index = {name: i for i, name in enumerate(classes)}
    labels = np.array([index[entry.label] for entry in entries], dtype=np.int64)
    return Dataset(np.stack(images), labels, classes, source, "0-255", resized_from=resized_from)


def _decode(entry: _Entry, size: tuple[int, int] | None) -> tuple[np.ndarray, tuple[int, int]]:
    """(the image as H x W x C uint8, resized to `size` when given; its (H, W) in the file)."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(io.BytesIO(entry.read()))
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise DataError(
            f"{entry.name}: cannot decode this image ({type(exc).__name__}); remove or replace it"
        ) from None
    image = image.convert("L" if image.mode in ("L", "I;16", "I", "1", "LA") else "RGB")
    original = (image.size[1], image.size[0])
    if size is not None and image.size != (size[1], size[0]):
        image = image.resize((size[1], size[0]), Image.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return (array[:, :, None] if array.ndim == 2 else array), original


# --- arrays: .mat, .npz, idx -----------------------------------------------------------------


def _load_mat(path: Path) -> Dataset:
    import h5py
    import scipy.io

    if h5py.is_hdf5(str(path)):  # -v7.3 files are HDF5 (behind a 512-byte MATLAB header)
        content = _read_mat73(path)
    else:
        try:
            content = scipy.io.loadmat(str(path), squeeze_me=False)
        except Exception as exc:
            raise DataError(f"{path}: not a readable .mat file ({type(exc).__name__})") from None
    matlab_order = True
    variables = {key: value for key, value in content.items() if not key.startswith("__")}
    images_key = _pick(variables, IMAGE_KEYS, path, "images")
    labels_key = _pick(variables, LABEL_KEYS, path, "labels")
    labels, classes = _labels_from(variables[labels_key], path, labels_key)
    images = _check_numeric(variables[images_key], path, images_key)
    images = _images_to_nhwc(images, len(labels), matlab_order, path)
    return _array_dataset(images, labels, classes, str(path))


def _read_mat73(path: Path) -> dict:
    import h5py

    try:
        handle = h5py.File(str(path), "r")
    except OSError:
        raise DataError(f"{path}: not a readable .mat file (neither v5/v7 nor v7.3/HDF5)") from None
    content = {}
    with handle:
        for key, item in handle.items():
            if not isinstance(item, h5py.Dataset):
                continue
            matlab_class = item.attrs.get("MATLAB_class", b"")
            matlab_class = matlab_class.decode() if isinstance(matlab_class, bytes) else str(matlab_class)
            if matlab_class == "cell":
                content[key] = np.array(
                    [_h5_string(handle[reference]) for reference in np.asarray(item).reshape(-1, order="F")],
                    dtype=object,
                )
            elif matlab_class in (
                "",
                "double",
                "single",
                "uint8",
                "int8",
                "uint16",
                "int16",
                "int32",
                "uint32",
                "int64",
                "uint64",
                "logical",
            ):
                # h5py sees MATLAB's column-major arrays with their dimensions reversed
                content[key] = np.asarray(item).transpose()
            else:
                content[key] = _Opaque(matlab_class)
    return content


def _h5_string(dataset: h5py.Dataset) -> str:
    return "".join(chr(code) for code in np.asarray(dataset).reshape(-1))


@dataclass(frozen=True)
class _Opaque:
    matlab_class: str


def _pick(variables: dict, keys: tuple[str, ...], path: Path, what: str) -> str:
    for key in keys:
        if key in variables:
            return key
    held = ", ".join(f"{k} ({_describe(v)})" for k, v in variables.items()) or "nothing"
    raise DataError(
        f"{path}: no {what} variable (looked for {', '.join(keys[:6])}); it holds: {held}; "
        "save the images as X (H x W x C x N) and the labels as Y"
    )


def _describe(value: object) -> str:
    if isinstance(value, _Opaque):
        return f"MATLAB {value.matlab_class} object"
    if isinstance(value, np.ndarray):
        return f"{value.dtype} {'x'.join(map(str, value.shape))}"
    return type(value).__name__


def _check_numeric(value: np.ndarray | _Opaque, path: Path, key: str) -> np.ndarray:
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
        raise DataError(
            f"{path}: variable '{key}' is not a numeric array ({_describe(value)}); save it with double() or uint8()"
        )
    return value


MAX_CLASSES = 1_000_000


def _labels_from(value: np.ndarray | _Opaque, path: Path, key: str) -> tuple[np.ndarray, list[str]]:
    opaque = isinstance(value, _Opaque) or (
        isinstance(value, np.ndarray) and value.dtype.kind == "O" and _is_matlab_object(value)
    )
    if opaque:
        raise DataError(
            f"{path}: labels '{key}' are a MATLAB object (a categorical array?) which Python cannot read; "
            f"in MATLAB save them as cellstr({key}) or double({key})"
        )
    value = np.asarray(value)
    if value.dtype.kind in "OUS":  # cell array of class names
        names = [_cell_text(item) for item in value.reshape(-1, order="F")]
        classes = sorted(set(names))
        index = {name: i for i, name in enumerate(classes)}
        return np.array([index[name] for name in names], dtype=np.int64), classes
    if value.dtype.kind not in "biuf":
        raise DataError(f"{path}: labels '{key}' are {value.dtype}; save them as numbers or a cell array of names")
    numbers = value.reshape(-1)
    if numbers.size == 0:
        raise DataError(f"{path}: labels '{key}' are empty; save one label per image")
    if not np.all(np.isfinite(numbers)) or not np.all(numbers == np.round(numbers)) or numbers.min() < 0:
        raise DataError(f"{path}: labels '{key}' must be non-negative whole numbers or class names")
    if numbers.max() >= MAX_CLASSES:  # class indices, not ids: a label of 1e300 would name 1e300 classes
        raise DataError(f"{path}: labels '{key}' go up to {numbers.max():g}; labels are class indices 0 ... C-1")
    numbers = numbers.astype(np.int64)
    return numbers, [str(i) for i in range(int(numbers.max()) + 1)]


def _is_matlab_object(value: np.ndarray) -> bool:
    try:
        from scipy.io.matlab import MatlabOpaque
    except ImportError:  # older scipy
        from scipy.io.matlab.mio5_params import MatlabOpaque
    return isinstance(value, MatlabOpaque) or any(isinstance(item, MatlabOpaque) for item in value.reshape(-1)[:1])


def _cell_text(item: object) -> str:
    while isinstance(item, np.ndarray) and item.dtype.kind == "O" and item.size == 1:
        item = item.reshape(-1)[0]
    if isinstance(item, np.ndarray):
        item = "".join(item.reshape(-1).tolist()) if item.dtype.kind == "U" else str(item.reshape(-1)[0])
    return str(item).strip()


def _images_to_nhwc(images: np.ndarray, count: int, matlab_order: bool, path: Path) -> np.ndarray:
    """N x H x W x C from MATLAB's H x W x C x N, N x C x H x W, N x H x W (x C) or N x D."""
    if images.ndim == 2:
        if images.shape[0] == count:
            return images  # N x D features
        if images.shape[1] == count:
            return images.T  # MATLAB: D x N
    if images.ndim == 3:
        if images.shape[0] == count:
            return images[:, :, :, None]
        if images.shape[2] == count:  # MATLAB H x W x N (grayscale)
            return images.transpose(2, 0, 1)[:, :, :, None]
    if images.ndim == 4:
        if images.shape[3] == count and matlab_order:
            return images.transpose(3, 0, 1, 2)  # H x W x C x N
        if images.shape[0] == count:
            if images.shape[1] in (1, 3) and images.shape[3] not in (1, 3):
                return images.transpose(0, 2, 3, 1)  # N x C x H x W
            return images
    raise DataError(
        f"{path}: images of shape {'x'.join(map(str, images.shape))} do not match {count} labels; "
        "expected H x W x C x N (MATLAB), N x C x H x W, N x H x W x C or N x D"
    )


def _array_dataset(images: np.ndarray, labels: np.ndarray, classes: list[str], source: str) -> Dataset:
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{source}: {images.shape[0]} images but {labels.shape[0]} labels")
    if images.shape[0] == 0:
        raise DataError(f"{source}: holds no samples")
    if images.size == 0:
        raise DataError(f"{source}: the images are empty ({'x'.join(map(str, images.shape))}); one image per label")
    flat = images.ndim == 2
    if images.dtype == np.uint8:
        value_range = "0-255"
    else:
        with np.errstate(over="ignore"):  # a value float32 cannot hold becomes inf, refused below
            images = images.astype(np.float32)
        if not np.isfinite(images).all():
            raise DataError(f"{source}: the images hold NaN or infinite values (or numbers beyond float32)")
        value_range = "0-1" if float(np.max(images)) <= 1.0 else "0-255"
    return Dataset(images, labels, classes, source, value_range, flat)


def _load_npz(path: Path) -> Dataset:
    try:
        content = dict(np.load(str(path), allow_pickle=False))
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__})") from None
    images_key = _pick(content, IMAGE_KEYS, path, "images")
    labels_key = _pick(content, LABEL_KEYS, path, "labels")
    labels, classes = _labels_from(content[labels_key], path, labels_key)
    images = _images_to_nhwc(_check_numeric(content[images_key], path, images_key), len(labels), False, path)
    return _array_dataset(images, labels, classes, str(path))


def _load_idx(images_path: Path) -> Dataset:
    labels_path = _idx_labels_path(images_path)
    images = _read_idx(images_path)
    labels = _read_idx(labels_path).astype(np.int64)
    if images.ndim != 3:
        raise DataError(f"{images_path}: expected an idx3 file of N x H x W images")
    return _array_dataset(
        images[:, :, :, None], labels, [str(i) for i in range(int(labels.max()) + 1)], str(images_path)
    )


def _idx_labels_path(images_path: Path) -> Path:
    candidates = [images_path.with_name(images_path.name.replace("images-idx3", "labels-idx1"))]
    candidates.append(candidates[0].with_name(candidates[0].name.removesuffix(".gz")))
    candidates.append(candidates[0].with_name(candidates[0].name + ".gz"))
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise DataError(f"{images_path}: no matching labels file ({candidates[0].name}) beside it")


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as stream:
            data = stream.read()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise DataError(f"{path}: not an unsigned-byte idx file")
    dims = int(data[3])
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims))
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims)
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path}: truncated idx file")
    return body.reshape(shape)


# --- preprocessing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Preprocess:
    """How a `Dataset` becomes the model's input tensor.

    Attributes:
        input_shape: the model input's per-sample shape (without the batch dimension).
        layout: "NCHW", "NHWC" or "flat".
        pixel_range: "0-255" (MATLAB exports with a mean-image Sub normalise inside the graph) or "0-1".
        mean, std: per-channel normalisation applied after scaling to `pixel_range`, if given.
        flatten_order: "row" (numpy's reshape) or "column" (MATLAB's (:) order, the image
            transposed) for models that take flattened images.
    """

    input_shape: tuple[int, ...]
    layout: str
    pixel_range: str = "0-1"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    flatten_order: str = "row"
    notes: tuple[str, ...] = field(default=(), compare=False)

    @property
    def image_size(self) -> tuple[int, int] | None:
        """(H, W) for image-shaped inputs; None for flat ones."""
        if self.layout == "NCHW" and len(self.input_shape) == 3:
            return self.input_shape[1], self.input_shape[2]
        if self.layout == "NHWC" and len(self.input_shape) == 3:
            return self.input_shape[0], self.input_shape[1]
        return None

    @property
    def channels(self) -> int | None:
        """Input channels for image-shaped inputs."""
        if self.layout == "NCHW" and len(self.input_shape) == 3:
            return self.input_shape[0]
        if self.layout == "NHWC" and len(self.input_shape) == 3:
            return self.input_shape[2]
        return None

    def __call__(self, dataset: Dataset, indices: np.ndarray | slice | None = None) -> np.ndarray:
        """The model input for the selected samples, float32, batch first."""
        images = dataset.images if indices is None else dataset.images[indices]
        images = images.astype(np.float32)
        images = _rescale(images, dataset.value_range, self.pixel_range)
        per_sample = int(np.prod(self.input_shape))
        if self.flattens(dataset):
            return self._flatten(images, dataset).reshape((images.shape[0], *self.input_shape))
        images = self._match_channels(images, dataset)
        images = self._resize(images)
        if self.mean is not None:
            images = (images - np.asarray(self.mean, np.float32)) / np.asarray(self.std or (1.0,), np.float32)
        if self.layout == "NCHW":
            images = images.transpose(0, 3, 1, 2)
        if images[0].size != per_sample:
            raise DataError(
                f"{dataset.source}: samples of shape {'x'.join(map(str, images.shape[1:]))} do not fit the model's "
                f"input {'x'.join(map(str, self.input_shape))}"
            )
        return np.ascontiguousarray(images.reshape((images.shape[0], *self.input_shape)))

    def flattens(self, dataset: Dataset) -> bool:
        """True when this dataset's samples reach the model flattened (where `flatten_order` acts)."""
        sample = dataset.images[:1]
        per_sample = int(np.prod(self.input_shape))
        return dataset.flat or self.layout == "flat" or (sample[0].size == per_sample and self._wants_flat(sample))

    def _wants_flat(self, images: np.ndarray) -> bool:
        """The model takes the sample's values in another shape than an image of this size."""
        return self.image_size is None or self.image_size != images.shape[1:3] or self.channels != images.shape[3]

    def _flatten(self, images: np.ndarray, dataset: Dataset) -> np.ndarray:
        if images.ndim == 2:
            flat = images
        elif self.flatten_order == "column":
            flat = images.transpose(0, 2, 1, 3).reshape(images.shape[0], -1)  # MATLAB's X(:)
        else:
            flat = images.reshape(images.shape[0], -1)
        if self.mean is not None:
            flat = (flat - np.float32(self.mean[0])) / np.float32((self.std or (1.0,))[0])
        if flat.shape[1] != int(np.prod(self.input_shape)):
            raise DataError(
                f"{dataset.source}: samples have {flat.shape[1]} values but the model takes "
                f"{'x'.join(map(str, self.input_shape))}"
            )
        return flat

    def _match_channels(self, images: np.ndarray, dataset: Dataset) -> np.ndarray:
        wanted = self.channels
        if wanted is None or images.shape[3] == wanted:
            return images
        if wanted == 1 and images.shape[3] == 3:
            return (images @ GRAY_WEIGHTS)[:, :, :, None]
        if wanted == 3 and images.shape[3] == 1:
            return np.repeat(images, 3, axis=3)
        raise DataError(f"{dataset.source}: images have {images.shape[3]} channels, the model wants {wanted}")

    def _resize(self, images: np.ndarray) -> np.ndarray:
        size = self.image_size
        if size is None or images.shape[1:3] == size:
            return images
        import torch
        import torch.nn.functional as F

        tensor = torch.from_numpy(images).permute(0, 3, 1, 2)
        tensor = F.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=True)
        return tensor.permute(0, 2, 3, 1).contiguous().numpy()


def _rescale(images: np.ndarray, stored: str, wanted: str) -> np.ndarray:
    if stored == wanted:
        return images
    return images / 255.0 if wanted == "0-1" else images * 255.0


def preprocess_for(
    model: Model,
    pixel_range: str | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
    flatten_order: str = "row",
    layout: str | None = None,
) -> Preprocess:
    """The preprocessing a model expects, from its input spec and producer, with overrides.

    Defaults: MATLAB exports whose graph starts with a mean-image `Sub` normalise inside the graph
    and expect raw 0-255 pixels; everything else gets 0-1. Layout is the one guessed from the
    input shape (`InputSpec.layout`).
    """
    if flatten_order not in ("row", "column"):
        raise DataError(f"flatten order must be 'row' or 'column', got '{flatten_order}'")
    if pixel_range not in (None, "0-1", "0-255"):
        raise DataError(f"pixel range must be '0-1' or '0-255', got '{pixel_range}'")
    notes = []
    if pixel_range is None:
        pixel_range = "0-255" if model.is_matlab and _starts_with_mean_sub(model) else "0-1"
        if pixel_range == "0-255":
            notes.append("MATLAB export with a mean-image Sub: feeding raw 0-255 pixel values")
    shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in model.input.shape[1:])
    layout = layout or ("flat" if model.input.layout in ("flat", "unknown") else model.input.layout)
    preprocess = Preprocess(shape, layout, pixel_range, None, None, flatten_order, tuple(notes))
    for option, values in (("--mean", mean), ("--std", std)):
        _check_channel_values(option, values, preprocess.channels)
    if mean is not None and std is None:
        std = tuple(1.0 for _ in mean)
    if std is not None and mean is None:  # scaling alone: (x - 0) / std
        mean = tuple(0.0 for _ in std)
    return replace(preprocess, mean=mean, std=std)


def _check_channel_values(option: str, values: tuple[float, ...] | None, channels: int | None) -> None:
    """One value for every channel, or one for all: anything else would not broadcast (or would be ignored)."""
    if values is None or len(values) == 1 or (channels is not None and len(values) == channels):
        return
    wanted = f"{channels} (one per input channel) or 1 (for all)" if channels else "1: the model's input is flat"
    raise DataError(
        f"{option} has {len(values)} values ({','.join(f'{v:g}' for v in values)}); the model takes {wanted}"
    )


def _starts_with_mean_sub(model: Model) -> bool:
    for node in model.proto.graph.node:
        if node.op_type == "Sub" and model.input.name in node.input:
            return any(name in model._initializers for name in node.input)
    return False


def check_labels(dataset: Dataset, num_outputs: int) -> None:
    """The data's classes must fit the model's outputs: more classes than outputs is the wrong data."""
    if not len(dataset):
        return
    count = max(len(dataset.classes), int(dataset.labels.max()) + 1)
    if count > num_outputs:
        named = f" ({', '.join(dataset.classes[:5])}{'...' if len(dataset.classes) > 5 else ''})"
        raise DataError(
            f"{dataset.source}: {count} classes{named if dataset.classes else ''} but the model has {num_outputs} "
            "outputs: is this the data the model classifies? (labels are class indices 0 ... C-1)"
        )


def conversion_notes(preprocess: Preprocess, dataset: Dataset) -> list[str]:
    """What is done to the samples to fit the model: resizing, and grey to RGB or RGB to grey."""
    if not len(dataset) or preprocess.flattens(dataset):
        return []
    notes = []
    wanted = preprocess.image_size
    sizes = list(dataset.resized_from)
    if wanted is not None and dataset.images.shape[1:3] != wanted:
        sizes = [dataset.images.shape[1:3]]
    if wanted is not None and sizes:
        shown = ", ".join("x".join(map(str, size)) for size in sizes[:3]) + ("..." if len(sizes) > 3 else "")
        notes.append(f"{dataset.source}: images resized from {shown} to the model's {wanted[0]}x{wanted[1]} (bilinear)")
    channels = dataset.images.shape[3]
    if preprocess.channels == 1 and channels == 3:
        notes.append(f"{dataset.source}: RGB images converted to grey for the model's 1-channel input")
    elif preprocess.channels == 3 and channels == 1:
        notes.append(f"{dataset.source}: grey images repeated to 3 channels (RGB) for the model's input")
    return notes


def class_coverage_note(dataset: Dataset, num_outputs: int | None) -> str | None:
    """A note when `dataset` holds samples of fewer classes than the model has (its accuracy covers only them)."""
    present = int(np.unique(dataset.labels).size)
    if num_outputs is None or present >= num_outputs:
        return None
    return (
        f"{dataset.source} holds samples of {present} of the model's {num_outputs} classes: "
        "accuracy on it says nothing of the others (a --first subset of a class-ordered archive? use --limit)"
    )


def prepare(
    model: Model, options: DataOptions, default_split: float = 0.0, loaded: dict | None = None
) -> tuple[Preprocess, Dataset | None, Dataset | None]:
    """(preprocess, training set, validation set) for a model and its `onnxprune.options.DataOptions`.

    Without a data path both sets are None (the preprocessing still follows the options). The
    validation set is `options.val`, else a seeded stratified split of `options.val_split` (or
    `default_split`) of the data, else the data itself. `loaded` (a dict a caller keeps) holds the
    files read, so that a run preparing the same data twice (a measurement, then the prune) reads
    and decodes them once.
    """
    preprocess = preprocess_for(model, options.pixel_range, options.mean, options.std, options.flatten or "row")
    if options.path is None:
        return preprocess, None, None
    notes = []

    def read(path: str) -> Dataset:
        key = (path, preprocess.image_size)
        dataset = loaded[key] if loaded is not None and key in loaded else load_data(path, size=preprocess.image_size)
        if loaded is not None:
            loaded[key] = dataset
        if options.first is not None:  # archive order, for users who need it
            dataset = dataset.subset(np.arange(min(options.first, len(dataset))), f" (first {options.first})")
        elif options.limit is not None and options.limit < len(dataset):
            indices = stratified_sample(dataset.labels, options.limit, options.seed)
            dataset = dataset.subset(indices, f" ({options.limit} drawn evenly from the classes, seed {options.seed})")
        if model.num_classes:
            check_labels(dataset, model.num_classes)
        coverage = class_coverage_note(dataset, model.num_classes)
        if coverage:
            notes.append(coverage)
        notes.extend(conversion_notes(preprocess, dataset))
        if options.flatten is not None and len(dataset) and not preprocess.flattens(dataset):
            raise DataError(
                f"--flatten has no effect here: the model takes {dataset.source}'s samples as images "
                f"({model.input.layout} {'x'.join(map(str, preprocess.input_shape))}), nothing is flattened"
            )
        return dataset

    train = read(options.path)
    val = read(options.val) if options.val is not None else None
    preprocess = replace(preprocess, notes=preprocess.notes + tuple(notes))
    if val is not None:
        return preprocess, train, val
    fraction = default_split if options.val_split is None else options.val_split
    if not fraction:
        return preprocess, train, train
    train, held_out = split(train, fraction, options.seed)
    return preprocess, train, held_out
