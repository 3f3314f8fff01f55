"""Class labels and what to do with the model's logits."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

# The course model's classes, in training order (the order of its output units).
CLOTHING_LABELS: tuple[str, ...] = (
    "dress",
    "hat",
    "longsleeve",
    "outwear",
    "pants",
    "shirt",
    "shoes",
    "shorts",
    "skirt",
    "t-shirt",
)


def load_labels(path: str | Path) -> tuple[str, ...]:
    """Read labels from a file: a JSON list of strings, or one label per line (blank lines skipped).

    Any problem with the file (missing, not UTF-8, not a list, empty, duplicates) is a ValueError
    naming the file.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise ValueError(f"{path}: cannot read the labels file ({e.strerror or e})") from e
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: the labels file is not UTF-8 text") from e
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON at line {e.lineno}: {e.msg}") from e
        if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
            raise ValueError(f"{path}: a JSON labels file must hold a list of strings")
        labels = tuple(data)
    else:
        labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not labels:
        raise ValueError(f"{path}: no labels found")
    if any(not label.strip() for label in labels):
        raise ValueError(f"{path}: labels must not be blank")
    if len(set(labels)) != len(labels):
        raise ValueError(f"{path}: labels must be unique")
    return labels


def _check(logits: npt.ArrayLike, labels: Sequence[str]) -> npt.NDArray[np.float64]:
    row = np.asarray(logits, dtype=np.float64).reshape(-1)
    if row.shape[0] != len(labels):
        raise ValueError(f"the model returned {row.shape[0]} scores but there are {len(labels)} labels")
    return row


def scores_by_label(logits: npt.ArrayLike, labels: Sequence[str] = CLOTHING_LABELS) -> dict[str, float]:
    """One image's raw scores keyed by class, as the course gateway answered: `{class: logit}`."""
    row = _check(logits, labels)
    return {label: float(value) for label, value in zip(labels, row, strict=True)}


def softmax(logits: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Numerically stable softmax over the last axis, in float64."""
    x = np.asarray(logits, dtype=np.float64)
    shifted = x - np.max(x, axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=-1, keepdims=True)  # type: ignore[no-any-return]


def top_k(
    logits: npt.ArrayLike, labels: Sequence[str] = CLOTHING_LABELS, k: int = 3
) -> list[tuple[str, float]]:
    """The k most probable classes of one image as (label, softmax probability), best first.

    Ties keep training order, so the result is deterministic.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    probs = softmax(_check(logits, labels))
    order = sorted(range(len(labels)), key=lambda i: (-probs[i], i))
    return [(labels[i], float(probs[i])) for i in order[:k]]
