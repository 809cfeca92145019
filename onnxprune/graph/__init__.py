"""The ONNX side: load, sanitise for conversion, write back, storage, structure and compaction, verify, inspect.

Knows nothing of torch training, methods or the CLI.
"""
