"""Labels: the course's classes, labels files, and what the gateway answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clothing_preproc import CLOTHING_LABELS, load_labels, scores_by_label, softmax, top_k


def test_the_course_classes_in_training_order() -> None:
    assert CLOTHING_LABELS == (
        "dress", "hat", "longsleeve", "outwear", "pants", "shirt", "shoes", "shorts", "skirt", "t-shirt",
    )


def test_scores_by_label_is_the_course_response() -> None:
    logits = np.arange(10, dtype=np.float32)[None, :]  # a (1, 10) batch row as the model returns
    scores = scores_by_label(logits)
    assert list(scores) == list(CLOTHING_LABELS)
    assert scores["t-shirt"] == 9.0
    assert isinstance(scores["dress"], float)


def test_scores_must_match_the_labels() -> None:
    with pytest.raises(ValueError, match="11 scores but there are 10 labels"):
        scores_by_label(np.zeros(11))


def test_softmax_is_stable_and_sums_to_one() -> None:
    p = softmax([1000.0, 1000.0, -1000.0])
    assert p.tolist() == pytest.approx([0.5, 0.5, 0.0])
    batch = softmax(np.array([[0.0, 0.0], [0.0, np.log(3.0)]]))
    assert batch.sum(axis=-1).tolist() == pytest.approx([1.0, 1.0])
    assert batch[1].tolist() == pytest.approx([0.25, 0.75])


def test_top_k_best_first_with_ties_in_training_order() -> None:
    logits = [0.0, 5.0, 0.0, 5.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    top = top_k(logits, k=3)
    assert [label for label, _ in top] == ["hat", "outwear", "pants"]
    assert top[0][1] == pytest.approx(top[1][1])
    assert len(top_k(logits, k=50)) == 10
    with pytest.raises(ValueError, match="k must be at least 1"):
        top_k(logits, k=0)


def test_labels_file_one_per_line_or_json(tmp_path: Path) -> None:
    lines = tmp_path / "labels.txt"
    lines.write_text("cat\n\n  dog \n", encoding="utf-8")
    assert load_labels(lines) == ("cat", "dog")
    js = tmp_path / "labels.json"
    js.write_text('["cat", "dog", "bird"]', encoding="utf-8")
    assert load_labels(js) == ("cat", "dog", "bird")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "no labels found"),
        (b"cat\ncat\n", "unique"),
        (b'["cat", 3]', "list of strings"),
        (b'["cat", " "]', "blank"),
        (b'["cat",', "invalid JSON at line 1"),
        (b"\xff\xfe\x00", "not UTF-8"),
    ],
)
def test_bad_labels_files_name_the_problem(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "labels.txt"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=message) as info:
        load_labels(path)
    assert str(path) in str(info.value)


def test_a_missing_labels_file_is_a_value_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot read the labels file"):
        load_labels(tmp_path / "nope.txt")
