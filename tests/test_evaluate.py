"""fruitlens._evaluate: the numbers against sklearn.metrics on random data, the report's
JSON shape, the plots (131 classes) and the CLI summary. No Spark, no model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fruitlens._evaluate import (
    CONFUSION_PNG,
    MAX_CONFUSED,
    PER_CLASS_PNG,
    evaluate,
    summary_lines,
    write_report,
)
from fruitlens.classify import REPORT_FILE

metrics = pytest.importorskip("sklearn.metrics", reason="scikit-learn is the reference")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _random_case(seed: int, n: int, c: int, k: int = 5, right: float = 0.6):
    """y_true and a top-k ranking whose first column is right about ``right`` of the
    time; each row's k predictions are distinct (like a real ranking)."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, size=n)
    top = np.stack([rng.permutation(c)[:k] for _ in range(n)])
    hit = rng.random(n) < right
    for i in np.nonzero(hit)[0]:
        row = [y[i]] + [j for j in top[i] if j != y[i]]
        top[i] = row[:k]
    labels = [f"class_{i:03d}" for i in range(c)]
    return y, top, labels


@pytest.mark.parametrize(("seed", "n", "c"), [(0, 500, 7), (1, 2000, 131), (2, 60, 40)])
def test_numbers_match_sklearn(seed: int, n: int, c: int) -> None:
    y, top, labels = _random_case(seed, n, c)
    report = evaluate(y, top, labels)
    pred = top[:, 0]
    every = list(range(c))
    assert report["n"] == n
    assert report["labels"] == labels
    assert report["top1"] == pytest.approx(metrics.accuracy_score(y, pred))
    assert report["top5"] == pytest.approx(
        metrics.top_k_accuracy_score(y, _scores_from_ranking(top, c), k=5, labels=every)
    )
    p, r, f, s = metrics.precision_recall_fscore_support(y, pred, labels=every, zero_division=0)
    for i, label in enumerate(labels):
        got = report["classes"][label]
        assert got["precision"] == pytest.approx(p[i])
        assert got["recall"] == pytest.approx(r[i])
        assert got["f1"] == pytest.approx(f[i])
        assert got["support"] == s[i]
    for average in ("macro", "weighted"):
        p, r, f, _ = metrics.precision_recall_fscore_support(
            y, pred, labels=every, average=average, zero_division=0
        )
        assert report[average]["precision"] == pytest.approx(p)
        assert report[average]["recall"] == pytest.approx(r)
        assert report[average]["f1"] == pytest.approx(f)
        assert report[average]["support"] == n
    expected = metrics.confusion_matrix(y, pred, labels=every)
    assert np.array_equal(np.array(report["confusion"]), expected)


def _scores_from_ranking(top: np.ndarray, c: int) -> np.ndarray:
    """Scores whose descending order is ``top`` (for sklearn's top_k_accuracy_score)."""
    scores = np.zeros((top.shape[0], c))
    k = top.shape[1]
    for rank in range(k):
        scores[np.arange(top.shape[0]), top[:, rank]] = k - rank
    return scores


def test_confused_pairs_are_the_largest_off_diagonal_cells() -> None:
    y, top, labels = _random_case(3, 3000, 30, right=0.3)
    report = evaluate(y, top, labels)
    cm = metrics.confusion_matrix(y, top[:, 0], labels=range(30))
    np.fill_diagonal(cm, 0)
    confused = report["confused"]
    assert len(confused) == MAX_CONFUSED
    counts = [p["count"] for p in confused]
    assert counts == sorted(counts, reverse=True)
    assert counts[0] == cm.max()
    assert counts[-1] >= np.sort(cm.ravel())[::-1][MAX_CONFUSED - 1]
    index = {label: i for i, label in enumerate(labels)}
    for pair in confused:
        assert pair["true"] != pair["pred"]
        assert cm[index[pair["true"]], index[pair["pred"]]] == pair["count"]


def test_small_hand_checked_case() -> None:
    labels = ["apple", "lemon", "mango"]
    y = np.array([0, 0, 1, 1, 2, 2])
    top = np.array([[0, 1], [1, 0], [1, 2], [1, 0], [0, 2], [0, 1]])
    report = evaluate(y, top, labels)
    assert report["top1"] == pytest.approx(3 / 6)
    # top-5 with only 2 columns counts both: only the last row (mango: apple, lemon) misses
    assert report["top5"] == pytest.approx(5 / 6)
    assert report["confusion"] == [[1, 1, 0], [0, 2, 0], [2, 0, 0]]
    assert report["confused"][0] == {"true": "mango", "pred": "apple", "count": 2}
    assert report["confused"][1] == {"true": "apple", "pred": "lemon", "count": 1}
    assert len(report["confused"]) == 2
    assert report["classes"]["mango"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 2}
    assert report["classes"]["lemon"]["precision"] == pytest.approx(2 / 3)


def test_perfect_and_one_dimensional_ranking() -> None:
    labels = ["a", "b"]
    report = evaluate(np.array([0, 1, 1]), np.array([0, 1, 1]), labels)
    assert report["top1"] == report["top5"] == 1.0
    assert report["confused"] == []
    assert any("none" in line for line in summary_lines(report))


@pytest.mark.parametrize(
    ("y", "top", "match"),
    [
        (np.array([0, 1]), np.array([[0], [1], [1]]), r"\[N\]"),
        (np.array([0, 3]), np.array([[0], [1]]), "outside"),
        (np.array([0, 1]), np.array([[0], [-1]]), "outside"),
        (np.array([0.0, 1.0]), np.array([[0], [1]]), "integer"),
        (np.array([0, 1]), np.zeros((2, 0), dtype=int), r"K>=1"),
    ],
)
def test_bad_inputs_are_refused(y: np.ndarray, top: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        evaluate(y, top, ["a", "b", "c"])


def test_empty_test_set_gives_zeros_not_nan() -> None:
    report = evaluate(np.zeros(0, dtype=int), np.zeros((0, 5), dtype=int), ["a", "b"])
    assert report["n"] == 0 and report["top1"] == 0.0 and report["macro"]["f1"] == 0.0
    json.dumps(report, allow_nan=False)


def test_write_report_131_classes(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the plots need matplotlib")
    y, top, labels = _random_case(4, 1310, 131, right=0.9)
    labels = [f"apple_golden_{i}" if i % 2 else f"cherry_wax_black_{i}" for i in range(131)]
    report = evaluate(y, top, labels)
    before = json.dumps(report)
    extra = {"provenance": {"data": "x", "top1": report["top1"]}, "timings_s": {"fit": 1.5}}
    write_report(report, tmp_path / "model", extra)
    assert json.dumps(report) == before  # not modified
    written = json.loads((tmp_path / "model" / REPORT_FILE).read_text(encoding="utf-8"))
    assert written == {**report, **extra}
    assert len(written["confusion"]) == 131 and len(written["confusion"][0]) == 131
    for name, min_height in ((CONFUSION_PNG, 1500), (PER_CLASS_PNG, 2000)):
        data = (tmp_path / "model" / name).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 20_000, name
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        # tall enough that 131 labels at >= 4 pt don't overlap (150 dpi)
        assert height >= min_height, (name, width, height)
    assert not [p for p in (tmp_path / "model").iterdir() if p.name.endswith(".tmp")]


def test_write_report_does_not_touch_pyplot_backend(tmp_path: Path) -> None:
    matplotlib = pytest.importorskip("matplotlib", reason="the plots need matplotlib")
    backend = matplotlib.get_backend()
    report = evaluate(np.array([0, 1, 2]), np.array([[0], [2], [2]]), ["a", "b", "c"])
    write_report(report, tmp_path, {})
    assert matplotlib.get_backend() == backend
    assert (tmp_path / CONFUSION_PNG).exists() and (tmp_path / PER_CLASS_PNG).exists()


def test_summary_lines() -> None:
    y, top, labels = _random_case(5, 400, 10)
    report = evaluate(y, top, labels)
    lines = summary_lines(report)
    assert lines[0].startswith("test        400 images, top-1 ")
    assert f"{100 * report['top1']:.1f} %" in lines[0]
    assert f"{100 * report['top5']:.1f} %" in lines[0]
    assert lines[1].startswith("F1          macro ")
    first = report["confused"][0]
    assert lines[2].startswith(f"confused    {first['true']} → {first['pred']} ({first['count']})")
    assert all(len(line) < 200 for line in lines)
