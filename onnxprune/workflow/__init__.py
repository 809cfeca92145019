"""Orchestration: a whole prune in any mode (`pipeline`), rounds with fine-tuning (`schedule`).

Pruning, measuring and reporting lie below this room; only the CLI, the MATLAB bridge and the demo above it.
"""
