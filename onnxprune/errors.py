"""One exception family for everything a user can get wrong, and the context of everything else.

Every message says what went wrong, where, and what to do; the CLI prints it as one line and
exits with code 2. Any other exception escaping a stage of the library (`stage`, `at_node`)
becomes an `InternalError` naming the stage and the node: one line and exit code 1.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

    import onnx


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


class InternalError(Exception):
    """An unexpected exception (a bug here or in a library used), with the stage and node it escaped from.

    Not an `OnnxpruneError`: nothing the user can fix. `stage` turns any other exception that
    escapes a stage of the library into one, naming the node being processed (`at_node`); the CLI
    prints it as one line with the debug log's path and exits with code 1, the MATLAB bridge raises
    it as `onnxprune:internal`. The original exception is `cause` (and `__cause__`).

    Example:
        >>> str(InternalError("compaction", ValueError(), node="Add_12", op="Add"))
        "internal error in compaction at node 'Add_12' (Add): ValueError with an empty message (ValueError())"
    """

    def __init__(self, stage: str | None, cause: BaseException, node: str | None = None, op: str | None = None):
        super().__init__(stage, cause, node, op)
        self.stage, self.cause, self.node, self.op = stage, cause, node, op

    def __str__(self) -> str:
        where = f" in {self.stage}" if self.stage else ""
        if self.node is not None:
            where += f" at node '{self.node}' ({self.op})"
        return f"internal error{where}: {exception_summary(self.cause)}"


MESSAGE_CHARS = 400  # an internal error's line keeps this much of the original message; the log has all of it


def exception_summary(exc: BaseException) -> str:
    """`Type: message` on one line; an exception without a message is named by its type and repr."""
    name = type(exc).__name__
    text = " ".join(str(exc).split())
    if not text:
        return f"{name} with an empty message ({exc!r})"
    return f"{name}: {text if len(text) <= MESSAGE_CHARS else text[:MESSAGE_CHARS] + '...'}"


_STAGE: contextvars.ContextVar[str | None] = contextvars.ContextVar("onnxprune_stage", default=None)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """A stage of the library (load, channel analysis, compaction, ...); also usable as a decorator.

    An exception escaping it that is neither an `OnnxpruneError` nor already an `InternalError`
    (nor a `KeyboardInterrupt`) becomes an `InternalError` naming the stage. Stages nest: the
    innermost one names the error, the outer ones let it through.

    Example:
        >>> with stage("compaction"):  # doctest: +SKIP
        ...     for index, node in enumerate(graph.node):
        ...         with at_node(node, index):
        ...             rewrite(node)
    """
    token = _STAGE.set(name)
    try:
        yield
    except (OnnxpruneError, InternalError):
        raise
    except Exception as exc:
        raise InternalError(name, exc) from exc
    finally:
        _STAGE.reset(token)


class at_node:
    """Inside a stage's loop over ONNX nodes: an unexpected exception names the node and its op.

    A class rather than a generator-based context manager: it is entered once per node.
    """

    __slots__ = ("index", "node")

    def __init__(self, node: onnx.NodeProto, index: int | None = None) -> None:
        self.node, self.index = node, index

    def __enter__(self) -> onnx.NodeProto:
        return self.node

    def __exit__(self, kind: type | None, exc: BaseException | None, traceback: object) -> bool:
        if exc is None or not isinstance(exc, Exception) or isinstance(exc, (OnnxpruneError, InternalError)):
            return False
        name = self.node.name or (f"#{self.index}" if self.index is not None else self.node.output[0])
        raise InternalError(_STAGE.get(), exc, node=name, op=self.node.op_type) from exc
