"""``--info``: facts about each class (display name, description, any fields), joined into
the ``info`` of a prediction.

Formats:

* CSV with a header row and a ``label`` column (else the first column is the label);
  the other columns are the fields (empty cells are left out);
* JSON: an object ``{"<label>": {...fields...}}``, or a list of objects each with a
  ``label`` key.

Labels are matched exactly as the model names them (its training folder names).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from .._errors import CLIError

__all__ = ["InfoLike", "join_info", "load_info", "normalise"]

InfoLike = Union[str, Path, Mapping[str, Mapping[str, Any]]]


def load_info(info: InfoLike | None) -> dict[str, dict[str, Any]]:
    """``{label: {field: value}}`` from a ``.csv``/``.json`` file or a mapping (copied).

    Raises :class:`CLIError` with the file and the problem when it cannot be used."""
    if info is None:
        return {}
    if isinstance(info, Mapping):
        return _checked(info, "info")
    path = Path(info)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise CLIError(f"cannot read the info file {path}: {exc}") from None
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("{", "[")):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise CLIError(f"{path} is not valid JSON: {exc}") from None
        return _checked(_from_json(data, path), str(path))
    return _checked(_from_csv(text, path), str(path))


def _from_json(data: Any, path: Path) -> Mapping[str, Any]:
    if isinstance(data, Mapping):
        return data
    if isinstance(data, list):
        out: dict[str, Any] = {}
        for i, row in enumerate(data):
            if not isinstance(row, Mapping) or not isinstance(row.get("label"), str):
                raise CLIError(f"{path}: item {i} is not an object with a string 'label'")
            out[row["label"]] = {k: v for k, v in row.items() if k != "label"}
        return out
    raise CLIError(f"{path}: expected an object {{label: {{...}}}} or a list of objects")


def _from_csv(text: str, path: Path) -> dict[str, Any]:
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if any(cell.strip() for cell in r)]
    if len(rows) < 2:
        raise CLIError(f"{path}: a CSV info file needs a header row and at least one row")
    header = [h.strip() for h in rows[0]]
    key = header.index("label") if "label" in header else 0
    out: dict[str, Any] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) > len(header):
            raise CLIError(f"{path}: row {line} has {len(row)} cells for {len(header)} columns")
        label = row[key].strip() if key < len(row) else ""
        if not label:
            raise CLIError(f"{path}: row {line} has no label")
        out[label] = {
            header[i]: cell
            for i, cell in enumerate(row)
            if i != key and cell.strip() != "" and header[i]
        }
    return out


def _checked(data: Mapping[str, Any], where: str) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for label, fields in data.items():
        if not isinstance(label, str) or not isinstance(fields, Mapping):
            raise CLIError(f"{where}: the entry for {label!r} is not an object of fields")
        out[label] = dict(fields)
    return out


def normalise(label: str) -> str:
    """``"Apple Braeburn 1"`` and ``"apple_braeburn_1"`` → ``"apple_braeburn_1"``: lower
    case, every run of other characters than letters and digits as one ``_``."""
    return re.sub(r"[^0-9a-z]+", "_", label.lower()).strip("_")


def join_info(
    info: Mapping[str, Mapping[str, Any]], labels: Sequence[str]
) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """``({model label: its info}, info labels matching no model label)``.

    A label matches its exact entry, else the entry with the same :func:`normalise` form
    (so an info file written for folder names like ``apple_braeburn_1`` also serves a
    model trained on ``Apple Braeburn 1``). Labels without an entry get ``{}``."""
    by_norm: dict[str, str] = {}
    for key in info:
        by_norm.setdefault(normalise(key), key)
    joined: dict[str, dict[str, Any]] = {}
    used: set[str] = set()
    for label in labels:
        key = label if label in info else by_norm.get(normalise(label))
        joined[label] = dict(info[key]) if key is not None else {}
        if key is not None:
            used.add(key)
    return joined, sorted(k for k in info if k not in used)
