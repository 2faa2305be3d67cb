"""``fruitlens predict MODEL_DIR PATH...``: classify image files, folders or object-store
prefixes with an exported classifier, without Spark.

Files are listed like ``fruitlens run``'s input (:func:`fruitlens._listing.find_images`),
read concurrently (:func:`fruitlens._reading.read_many`, local or ``s3://``) and
classified in batches by :class:`fruitlens.classify.Classifier`. A bad image is its own
line with an ``error``; the other images are unaffected.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterator, Sequence
from typing import Any

from . import _uri
from ._args import positive_int, threads_arg
from ._errors import CLIError
from ._listing import find_images
from ._reading import read_many
from .classify import Classifier

__all__ = ["add_predict_arguments", "cmd_predict", "iter_predictions", "list_inputs"]

#: Images read and classified per call.
CHUNK = 64


def add_predict_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The arguments of ``fruitlens predict``."""
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="written by `fruitlens train`")
    parser.add_argument(
        "paths", metavar="PATH", nargs="+", help="image files, folders or s3:// URIs"
    )
    parser.add_argument("--top", type=positive_int, default=5, help="classes shown (default 5)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.add_argument(
        "--threads", type=threads_arg, help="decode/inference threads (default: the CPUs)"
    )
    return parser


def list_inputs(paths: Sequence[str]) -> list[tuple[str, str | None]]:
    """``(path, error or None)`` for every image: files as given, folders and
    prefixes listed (sorted)."""
    out: list[tuple[str, str | None]] = []
    for path in paths:
        if _uri.is_local(path) and os.path.isfile(_uri.local_path(path)):
            out.append((path, None))
            continue
        try:
            refs = find_images(path)
        except FileNotFoundError:
            out.append((path, f"unreadable: {path}: no such file, folder or prefix"))
            continue
        out.extend((r.path, r.error) for r in refs)
    return out


def iter_predictions(
    clf: Classifier, inputs: Sequence[tuple[str, str | None]], top: int = 5
) -> Iterator[dict[str, Any]]:
    """One ``{path, label, score, top, error}`` dict per input, in order."""
    for start in range(0, len(inputs), CHUNK):
        chunk = inputs[start : start + CHUNK]
        readable = [p for p, e in chunk if e is None]
        contents = iter(read_many(readable, 16, clf.max_bytes))
        images: list[bytes | None] = []
        errors: list[str | None] = []
        for _, error in chunk:
            content, read_error = next(contents) if error is None else (None, error)
            images.append(content)
            errors.append(read_error)
        rows = clf.predict(images, top=top).to_pylist()
        for (path, _), row, error in zip(chunk, rows, errors):
            yield {"path": path, **row, "error": error or row["error"]}


def _line(row: dict[str, Any]) -> str:
    if row["error"] is not None:
        return f"{row['path']}\terror: {row['error']}"
    others = ", ".join(f"{t['label']} {t['score']:.3f}" for t in row["top"][1:])
    return f"{row['path']}\t{row['label']}\t{row['score']:.3f}" + (
        f"\t({others})" if others else ""
    )


def _json_safe(row: dict[str, Any]) -> dict[str, Any]:
    score = row.get("score")
    if isinstance(score, float) and not math.isfinite(score):
        row["score"] = None
    return row


def cmd_predict(args: argparse.Namespace) -> int:
    """Run ``fruitlens predict``; 0 when at least one image was classified."""
    clf = Classifier(args.model_dir, threads=args.threads)
    inputs = list_inputs(args.paths)
    if not inputs:
        raise CLIError(f"no images found under {', '.join(args.paths)}")
    classified = 0
    try:
        for row in iter_predictions(clf, inputs, args.top):
            classified += row["error"] is None
            print(json.dumps(_json_safe(row)) if args.json else _line(row), flush=True)
    except BrokenPipeError:  # `fruitlens predict ... | head`: the reader has enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 0 if classified else 1
