"""Pruning: selection (scopes, ratios, guards), channels, the methods, one-shot and scheduled pruning, the pipeline."""
