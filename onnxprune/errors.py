"""One exception family for everything a user can get wrong.

Every message says what went wrong, where, and what to do; the CLI prints it as one line and
exits with code 2.
"""

from __future__ import annotations

import os


class OnnxpruneError(Exception):
    """Base class of every error onnxprune raises on purpose."""


class ModelLoadError(OnnxpruneError):
    """The model file is missing, unreadable, or not a valid ONNX model."""


class ConversionError(OnnxpruneError):
    """The ONNX graph cannot be converted to torch (an op onnx2torch lacks, ...)."""


class ConfigError(OnnxpruneError):
    """Bad options: a sparsity out of range, a YAML naming an unknown layer, ..."""


class UnreachableLevel(ConfigError):
    """A sparsity that the selection cannot reach under its constraints (the layer cap of global scope)."""


class VerificationError(OnnxpruneError):
    """The written model fails onnx.checker, onnxruntime, or disagrees with torch."""


class DataError(OnnxpruneError):
    """Data that cannot be read or does not fit the model: an empty folder, an undecodable image, ..."""


class WriteError(OnnxpruneError):
    """An output that cannot be written: disk full, a read-only folder, a file size limit."""


def write_error(path: str | os.PathLike, exc: OSError) -> WriteError:
    """The one line for an OSError while writing `path`: what failed, and what to do."""
    reason = exc.strerror or type(exc).__name__
    return WriteError(f"cannot write {path}: {reason}; nothing was written (free space, or choose another output)")
