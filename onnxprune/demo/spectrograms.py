"""The built-in data set: spectrograms of synthetic signals, as PNG files in class subfolders.

Six classes of one-second signals sampled at 8 kHz, each drawn with random parameters and
buried in white noise at a random SNR (-3 to 20 dB), so that some examples are hard:

    tone      a sine at 300-3,000 Hz
    chirp     a linear sweep between two random frequencies
    am        a carrier amplitude-modulated at 2-20 Hz
    fm        a carrier frequency-modulated at 2-12 Hz, 50-400 Hz deep
    square    a square wave at 100-600 Hz (odd harmonics)
    burst     band-limited noise switched on for 0.1-0.4 s

Each becomes a log-power spectrogram (scipy.signal), scaled to 0-255 and saved as a 64x64
grayscale PNG under `train/<class>/` and `test/<class>/`: the layout MATLAB's
`imageDatastore(..., 'LabelSource', 'foldernames')` reads. Generation is deterministic from the
seed (the same seed gives byte-identical files) and cached.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from onnxprune.files import cache_root

CLASSES = ("am", "burst", "chirp", "fm", "square", "tone")
RATE = 8000
SIZE = 64
VERSION = 2


def generate(
    root: str | os.PathLike | None = None, train_per_class: int = 200, test_per_class: int = 50, seed: int = 0
) -> Path:
    """Write (or reuse) the data set; returns its folder holding `train/` and `test/`.

    Args:
        root: the folder (default: a cache folder named after the arguments).
        train_per_class: images per class in the training split.
        test_per_class: images per class in the test split.
        seed: everything random derives from it.
    """
    name = f"spectrograms-v{VERSION}-seed{seed}-{train_per_class}-{test_per_class}"
    root = Path(root) if root is not None else cache_root() / name
    done = root / ".complete"
    if done.exists():
        return root
    rng = np.random.default_rng(seed)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for label in CLASSES:
            folder = root / split / label
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                image = spectrogram(signal(label, rng), SIZE)
                _write_png(folder / f"{label}_{index:04d}.png", image)
    done.write_text(fingerprint(root))
    return root


def signal(label: str, rng: np.random.Generator) -> np.ndarray:
    """One second of the class's signal plus white noise at a random SNR."""
    t = np.arange(RATE) / RATE
    if label == "tone":
        clean = np.sin(2 * np.pi * rng.uniform(300, 3000) * t)
    elif label == "chirp":
        f0, f1 = rng.uniform(200, 3500, size=2)
        clean = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / 2))
    elif label == "am":
        carrier, rate = rng.uniform(500, 3000), rng.uniform(2, 20)
        clean = (1 + 0.9 * np.sin(2 * np.pi * rate * t)) * np.sin(2 * np.pi * carrier * t)
    elif label == "fm":
        carrier, rate, depth = rng.uniform(800, 3000), rng.uniform(2, 12), rng.uniform(50, 400)
        clean = np.sin(2 * np.pi * carrier * t + depth / rate * np.sin(2 * np.pi * rate * t))
    elif label == "square":
        clean = np.sign(np.sin(2 * np.pi * rng.uniform(100, 600) * t))
    elif label == "burst":
        start, length = rng.uniform(0, 0.6), rng.uniform(0.1, 0.4)
        low = rng.uniform(200, 2500)
        noise = rng.standard_normal(RATE)
        spectrum = np.fft.rfft(noise)
        frequencies = np.fft.rfftfreq(RATE, 1 / RATE)
        spectrum[(frequencies < low) | (frequencies > low + rng.uniform(300, 1200))] = 0
        clean = np.fft.irfft(spectrum, RATE) * ((t >= start) & (t < start + length))
    else:
        raise ValueError(f"unknown class {label}")
    clean = clean / (np.std(clean) + 1e-12)
    snr_db = rng.uniform(-3, 20)
    return clean + rng.standard_normal(RATE) * 10 ** (-snr_db / 20)


def spectrogram(samples: np.ndarray, size: int = SIZE) -> np.ndarray:
    """Log-power spectrogram resized to size x size, uint8 (low frequencies at the bottom)."""
    from scipy.signal import spectrogram as scipy_spectrogram

    _, _, power = scipy_spectrogram(samples, fs=RATE, nperseg=128, noverlap=96)
    decibels = 10 * np.log10(power + 1e-10)
    decibels = np.clip(decibels - decibels.max() + 60, 0, 60) / 60  # a 60 dB window below the peak
    rows = np.linspace(0, decibels.shape[0] - 1, size).round().astype(int)
    cols = np.linspace(0, decibels.shape[1] - 1, size).round().astype(int)
    return (255 * decibels[np.ix_(rows, cols)][::-1]).astype(np.uint8)


def _write_png(path: Path, image: np.ndarray) -> None:
    from PIL import Image

    Image.fromarray(image, mode="L").save(path, optimize=False)


def fingerprint(root: str | os.PathLike) -> str:
    """SHA-256 over every PNG (names and bytes), to compare generations."""
    digest = hashlib.sha256()
    for path in sorted(Path(root).rglob("*.png")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()
