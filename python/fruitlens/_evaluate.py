"""The evaluation report of a trained classifier: accuracy, per-class scores, the most
confused pairs, and two plots readable for the 131 classes of Fruits-360.

:func:`evaluate` turns the true class and the top-k predicted classes of each test row
into a JSON-ready dict; :func:`write_report` writes ``MODEL_DIR/report.json``,
``confusion.png`` and ``per_class.png``; :func:`summary_lines` is the CLI's short
summary. No Spark here: the caller collects ``(y_true, top_idx)`` first. matplotlib is
imported only by :func:`write_report` (it renders with the Agg canvas directly, so the
caller's pyplot backend — a notebook's inline one, say — is left alone).
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._common import PathLike, write_atomic
from .classify import REPORT_FILE

__all__ = [
    "CONFUSION_PNG",
    "MAX_CONFUSED",
    "PER_CLASS_PNG",
    "evaluate",
    "summary_lines",
    "write_report",
]

#: Plots written by :func:`write_report` next to ``report.json`` (REPORT_FILE).
CONFUSION_PNG = "confusion.png"
PER_CLASS_PNG = "per_class.png"

#: How many of the most confused (true, predicted) pairs the report lists.
MAX_CONFUSED = 20

_DPI = 150
#: Up to this many classes, the confusion matrix shows the counts in its cells.
_ANNOTATE_MAX = 30


def _check_inputs(y_true: Any, top_idx: Any, labels: Sequence[str]) -> tuple[np.ndarray, ...]:
    y = np.asarray(y_true)
    top = np.asarray(top_idx)
    if top.ndim == 1:
        top = top[:, None]
    c = len(labels)
    if c < 1:
        raise ValueError("labels must not be empty")
    if y.ndim != 1 or top.ndim != 2 or top.shape[0] != y.shape[0] or top.shape[1] < 1:
        raise ValueError(f"y_true must be [N] and top_idx [N, K>=1], got {y.shape} and {top.shape}")
    if y.size and not (np.issubdtype(y.dtype, np.integer) and np.issubdtype(top.dtype, np.integer)):
        raise ValueError("y_true and top_idx must hold integer class indices")
    for name, arr in (("y_true", y), ("top_idx", top)):
        if arr.size and (arr.min() < 0 or arr.max() >= c):
            raise ValueError(f"{name} holds a class index outside [0, {c})")
    return y.astype(np.int64), top.astype(np.int64)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, 0 where den == 0 (sklearn's ``zero_division=0``)."""
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _per_class(confusion: np.ndarray) -> dict[str, np.ndarray]:
    tp = np.diag(confusion).astype(np.float64)
    support = confusion.sum(axis=1).astype(np.float64)
    predicted = confusion.sum(axis=0).astype(np.float64)
    precision = _ratio(tp, predicted)
    recall = _ratio(tp, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def _averages(scores: dict[str, np.ndarray]) -> tuple[dict[str, float], dict[str, float]]:
    support = scores["support"]
    total = float(support.sum())
    macro: dict[str, float] = {}
    weighted: dict[str, float] = {}
    for key in ("precision", "recall", "f1"):
        macro[key] = float(scores[key].mean())
        weighted[key] = float((scores[key] * support).sum() / total) if total else 0.0
    macro["support"] = weighted["support"] = int(total)
    return macro, weighted


def _most_confused(confusion: np.ndarray, labels: Sequence[str]) -> list[dict[str, Any]]:
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    t, p = np.nonzero(off)
    counts = off[t, p]
    # most frequent first; ties in label order (true, then predicted)
    order = np.lexsort((p, t, -counts))[:MAX_CONFUSED]
    return [{"true": labels[t[i]], "pred": labels[p[i]], "count": int(counts[i])} for i in order]


def evaluate(y_true: Any, top_idx: Any, labels: Sequence[str]) -> dict[str, Any]:
    """The report of ``N`` test rows: ``y_true`` ``[N]`` holds the true class index of
    each row and ``top_idx`` ``[N, K]`` the predicted classes, best first (``K >= 1``;
    top-5 counts the first 5 columns — all of them when ``K < 5``). Indices refer to
    ``labels``. Per-class precision/recall/F1 follow :mod:`sklearn.metrics` with
    ``zero_division=0``; ``confusion[i][j]`` counts rows of class ``labels[i]`` predicted
    ``labels[j]`` (top-1)."""
    labels = [str(label) for label in labels]
    y, top = _check_inputs(y_true, top_idx, labels)
    n, c = int(y.shape[0]), len(labels)
    confusion = np.zeros((c, c), dtype=np.int64)
    np.add.at(confusion, (y, top[:, 0]), 1)
    scores = _per_class(confusion)
    macro, weighted = _averages(scores)
    top1 = float((top[:, 0] == y).sum()) / n if n else 0.0
    top5 = float((top[:, :5] == y[:, None]).any(axis=1).sum()) / n if n else 0.0
    classes = {
        label: {
            "precision": float(scores["precision"][i]),
            "recall": float(scores["recall"][i]),
            "f1": float(scores["f1"][i]),
            "support": int(scores["support"][i]),
        }
        for i, label in enumerate(labels)
    }
    return {
        "n": n,
        "top1": top1,
        "top5": top5,
        "classes": classes,
        "macro": macro,
        "weighted": weighted,
        "confused": _most_confused(confusion, labels),
        "confusion": confusion.tolist(),
        "labels": labels,
    }


# --------------------------------------------------------------------------------------
# Writing: report.json and the two plots
# --------------------------------------------------------------------------------------


def write_report(
    report: dict[str, Any], model_dir: PathLike, extra: dict[str, Any] | None = None
) -> None:
    """Write ``report.json`` (the report with ``extra`` — provenance, timings, ... —
    merged in under its own keys; ``report`` itself is not modified), ``confusion.png``
    and ``per_class.png`` into ``model_dir``, each atomically."""
    out = Path(model_dir)
    full = {**report, **(extra or {})}
    text = json.dumps(full, indent=1, sort_keys=False, allow_nan=False, default=_json_default)
    write_atomic(out / CONFUSION_PNG, _confusion_png(report))
    write_atomic(out / PER_CLASS_PNG, _per_class_png(report))
    write_atomic(out / REPORT_FILE, text + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    return buf.getvalue()


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # optional dependency
    from matplotlib.figure import Figure  # optional dependency

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _font(c: int) -> float:
    """Tick-label size in points: 8 for a few classes, down to 4 for ~130."""
    return float(max(4.0, min(8.0, 560.0 / max(c, 1))))


def _confusion_png(report: dict[str, Any]) -> bytes:
    """Row-normalised confusion matrix (each row: where the images of that class went);
    cells on a log colour scale so single mistakes among 131 classes stay visible."""
    from matplotlib.colors import LogNorm  # optional dependency

    labels = report["labels"]
    c = len(labels)
    counts = np.asarray(report["confusion"], dtype=np.float64).reshape(c, c)
    rows = _ratio(counts, counts.sum(axis=1, keepdims=True).repeat(c, axis=1))
    most = max(1.0, float(counts.sum(axis=1).max()))
    vmin = max(1e-3, min(0.1, 0.5 / most))  # below the smallest possible fraction
    side = max(5.0, 2.5 + 0.11 * c)
    fig = _new_figure(side + 1.2, side)
    ax = fig.add_subplot()
    masked = np.ma.masked_where(rows <= 0, rows)
    image = ax.imshow(
        masked, cmap="viridis", norm=LogNorm(vmin=vmin, vmax=1.0), interpolation="none"
    )
    ax.set_facecolor("white")
    font = _font(c)
    ax.set_xticks(range(c), labels, rotation=90, fontsize=font)
    ax.set_yticks(range(c), labels, fontsize=font)
    ax.set_xlabel("predicted (top-1)")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion (fraction of each true class), n = {report['n']}")
    ax.tick_params(length=2, pad=1)
    if c <= _ANNOTATE_MAX:  # few classes: the counts themselves in the cells
        for i, j in zip(*np.nonzero(counts)):
            light = rows[i, j] < 0.3
            ax.text(j, i, str(int(counts[i, j])), ha="center", va="center", fontsize=font + 1,
                    color="white" if light else "black")  # fmt: skip
    fig.colorbar(image, ax=ax, shrink=0.5, label="fraction of the true class")
    return _png(fig)


def _per_class_png(report: dict[str, Any]) -> bytes:
    """Horizontal F1 bars, one per class, worst at the top; recall and precision as
    markers; the support after each label."""
    classes = report["classes"]
    order = sorted(classes, key=lambda k: (classes[k]["f1"], k))
    c = len(order)
    f1 = [classes[k]["f1"] for k in order]
    names = [f"{k} ({classes[k]['support']})" for k in order]
    fig = _new_figure(8.0, max(3.0, 1.2 + 0.13 * c))
    ax = fig.add_subplot()
    y = np.arange(c)
    ax.barh(y, f1, color="#a6c8e6", height=0.8, label="F1")
    recall = [classes[k]["recall"] for k in order]
    precision = [classes[k]["precision"] for k in order]
    ax.plot(recall, y, "|", color="#c0392b", ms=5, mew=1.2, label="recall")
    ax.plot(precision, y, ".", color="#111111", ms=3, label="precision")
    ax.set_yticks(y, names, fontsize=_font(c))
    ax.set_ylim(c - 0.5, -0.5)
    ax.set_xlim(0.0, 1.02)
    ax.xaxis.set_ticks_position("both")
    ax.tick_params(axis="x", labeltop=True, labelsize=7)
    ax.grid(axis="x", color="#dddddd", linewidth=0.5)
    ax.set_axisbelow(True)
    macro = report["macro"]["f1"]
    ax.set_title(
        f"Per class (support), worst first — top-1 {report['top1']:.1%}, macro F1 {macro:.3f}"
    )
    fig.legend(loc="outside lower center", ncols=3, fontsize=7, frameon=False)
    return _png(fig)


# --------------------------------------------------------------------------------------
# The CLI summary
# --------------------------------------------------------------------------------------


def _pct(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{100.0 * x:.1f} %"


def summary_lines(report: dict[str, Any], worst: int = 3, confused: int = 3) -> list[str]:
    """A few aligned lines for the terminal: test size and accuracy, the F1 averages and
    the worst classes, the most confused pairs."""
    lines = [
        f"test        {report['n']} images, top-1 {_pct(report['top1'])}, "
        f"top-5 {_pct(report['top5'])}",
    ]
    classes = report.get("classes", {})
    if classes:
        weak = sorted(classes, key=lambda k: (classes[k]["f1"], k))[:worst]
        names = ", ".join(f"{k} {classes[k]['f1']:.2f}" for k in weak)
        lines.append(
            f"F1          macro {report['macro']['f1']:.3f}, weighted "
            f"{report['weighted']['f1']:.3f}; lowest: {names}"
        )
    pairs = report.get("confused", [])[:confused]
    if pairs:
        text = ", ".join(f"{p['true']} → {p['pred']} ({p['count']})" for p in pairs)
        lines.append(f"confused    {text}")
    else:
        lines.append("confused    none (every top-1 prediction was right)")
    return lines
