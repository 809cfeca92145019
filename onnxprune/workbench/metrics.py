"""Classification metrics of one batch of model outputs, shared by training and evaluation."""

from __future__ import annotations

import numpy as np


def scores_to_metrics(scores: np.ndarray, labels: np.ndarray, probabilities: bool) -> tuple[int, int, float]:
    """(top-1 hits, top-5 hits, summed loss) for one batch of model outputs."""
    scores = scores.reshape(scores.shape[0], -1).astype(np.float64)
    if probabilities:
        log_p = np.log(np.clip(scores, 1e-12, None))
    else:
        shifted = scores - scores.max(axis=1, keepdims=True)
        log_p = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    k = min(5, scores.shape[1])
    top = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    top1 = int(np.sum(top[:, 0] == labels))
    top5 = int(np.sum(np.any(top == labels[:, None], axis=1)))
    loss = float(-np.sum(log_p[np.arange(labels.size), labels]))
    return top1, top5, loss


def sampling_noise(top1: float, samples: int) -> float:
    """Two standard errors of a top-1 measured on `samples` images (at least one image's worth).

    Every keep-the-better decision (a fine-tuned round against its pruned start, a measured scope
    or reconstruction, a sensitivity blend against global) needs a difference beyond this: on 60
    images one image is 1.7 points, and a round 100% -> 98.3% is noise, not a failure.
    """
    p = min(max(top1, 1 / samples), 1 - 1 / samples) if samples > 1 else 0.5
    return max(2 * (p * (1 - p) / samples) ** 0.5, 1 / samples)
