"""Writing a file so that a reader never sees half of it: through a temporary file, then a rename.

A leaf: results, reports, ratio files and models all write through `save_atomic`; `file_digest`
names a file's content; `cache_root` is where per-machine data lives.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from onnxprune.errors import write_error

if TYPE_CHECKING:
    import onnx


def file_digest(path: str | os.PathLike) -> str:
    """The SHA-256 of a file, read in blocks: what a resumed run checks it continues on the same model."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def temporary_path(output: Path) -> Path:
    """A new empty file beside `output` (hidden, `.tmp`), with the usual permissions."""
    try:
        handle, temp_name = tempfile.mkstemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent)
    except OSError as exc:  # a read-only or full folder
        raise write_error(output, exc) from None
    os.close(handle)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temp_name, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
    return Path(temp_name)


def save_atomic(
    write: Callable[[Path], object] | onnx.ModelProto,
    output: Path,
    check: Callable[[Path], object] | None = None,
) -> None:
    """Write a file through a temporary file in the same folder, then rename it into place.

    Args:
        write: `write(temp_path)` writes the content (an `onnx.ModelProto` is accepted too).
        output: the final path.
        check: `check(temp_path)` runs on the written file before the rename; if it raises,
            the temporary file is removed and `output` is left as it was.
    """
    if not callable(write):  # a ModelProto: onnx is loaded already, whoever built one
        import onnx

        proto = write
        write = lambda path: onnx.save_model(proto, str(path))  # noqa: E731
    temp_path = temporary_path(Path(output))
    try:
        write(temp_path)
        if check is not None:
            check(temp_path)
        os.replace(temp_path, output)
    except OSError as exc:  # disk full, a file size limit: the temporary file goes, the output stays as it was
        temp_path.unlink(missing_ok=True)
        raise write_error(output, exc) from None
    except BaseException:
        temp_path.unlink(missing_ok=True)
        raise


def cache_root() -> Path:
    """$ONNXPRUNE_CACHE, else ~/.cache/onnxprune: what is generated or measured once per machine.

    The demo's data sets and the latency tables of `onnxprune.workbench.latency` live there.
    """
    return Path(os.environ.get("ONNXPRUNE_CACHE", Path.home() / ".cache" / "onnxprune"))
