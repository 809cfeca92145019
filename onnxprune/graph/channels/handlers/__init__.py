"""One handler per op family; `handler_for(op)` picks it, or the generic rule for an op none knows.

A new op is one file here with a `Handler` subclass decorated with `@register`, and its module
named in the import list below (tests/test_channels.py proves a registered handler is used).
"""

from onnxprune.graph.channels.handlers import (  # noqa: F401 - each module registers its handlers
    concat,
    elementwise,
    gather,
    layers,
    lrn,
    norms,
    pad,
    passthrough,
    reduce,
    reshape,
    slicing,
)
from onnxprune.graph.channels.handlers.base import OPS, Handler, PatchContext, TraceContext, register, unregister, where
from onnxprune.graph.channels.handlers.generic import Generic

GENERIC = Generic()


def handler_for(op_type: str) -> Handler:
    """The handler registered for `op_type`, else the generic rule."""
    return OPS.get(op_type, GENERIC)


__all__ = [
    "GENERIC", "OPS", "Handler", "PatchContext", "TraceContext", "handler_for", "register", "unregister", "where",
]  # fmt: skip
