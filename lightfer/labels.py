"""Canonical label spaces shared by every dataset adapter, model and report.

The emotion order is the one of the official EfficientFace checkpoints and of AffectNet;
adapters map each dataset's own codes into it, and checkpoints record it so that loading
can refuse a model trained with another order.
"""

from __future__ import annotations

CLASSES: tuple[str, ...] = (
    "neutral",
    "happiness",
    "sadness",
    "surprise",
    "fear",
    "disgust",
    "anger",
)
NUM_CLASSES = len(CLASSES)

# The 17 Action Unit intensities OpenFace 2 estimates (`AUxx_r`, 0-5), in its column order.
AU_NAMES: tuple[str, ...] = (
    "AU01",  # inner brow raiser
    "AU02",  # outer brow raiser
    "AU04",  # brow lowerer
    "AU05",  # upper lid raiser
    "AU06",  # cheek raiser
    "AU07",  # lid tightener
    "AU09",  # nose wrinkler
    "AU10",  # upper lip raiser
    "AU12",  # lip corner puller
    "AU14",  # dimpler
    "AU15",  # lip corner depressor
    "AU17",  # chin raiser
    "AU20",  # lip stretcher
    "AU23",  # lip tightener
    "AU25",  # lips part
    "AU26",  # jaw drop
    "AU45",  # blink
)
AU_MAX_INTENSITY = 5.0


def class_index(name: str) -> int:
    """Return the canonical index of an emotion name (case-insensitive).

    Raises:
        ValueError: the name is not one of the seven canonical classes.
    """
    key = name.strip().lower()
    if key not in CLASSES:
        raise ValueError(f"unknown emotion {name!r}; expected one of {', '.join(CLASSES)}")
    return CLASSES.index(key)
