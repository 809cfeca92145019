"""Measuring: evaluation, sweeps and sensitivity, latency benchmarks, quantization."""
