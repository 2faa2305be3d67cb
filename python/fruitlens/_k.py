"""The rules for PCA's ``k``, in one place: the Python API, the pyspark.ml ``k`` Param,
the CLI's ``--k`` and saved PCA files all go through these functions."""

from __future__ import annotations

import json
import numbers
from typing import Any

from ._common import FEATURE_DIM
from ._errors import PCAError

__all__ = ["check_k", "k_from_rule", "native_k_args", "parse_k"]


def check_k(k: Any) -> int | float:
    """Validate a PCA ``k``: an int ≥ 1 (components) or a float in (0, 1] (the
    explained-variance fraction to reach). Returns it as a plain ``int``/``float``;
    raises :class:`PCAError` (a ``ValueError``) otherwise."""
    if isinstance(k, bool) or not isinstance(k, numbers.Real):
        raise PCAError(
            f"k must be a number of components (int ≥ 1) or an explained-variance fraction "
            f"in (0, 1], got {k!r}"
        )
    if isinstance(k, numbers.Integral):
        if int(k) < 1:
            raise PCAError(f"k must be at least 1 component, got {k}")
        return int(k)
    if not 0.0 < float(k) <= 1.0:
        raise PCAError(f"a fractional k (explained-variance fraction) must be in (0, 1], got {k}")
    return float(k)


def parse_k(text: str, max_components: int = FEATURE_DIM) -> int | float:
    """``k`` from text (the CLI's ``--k``): ``"85"`` → 85 components, ``"0.95"`` → a
    variance fraction; at most ``max_components`` components. Raises :class:`PCAError`."""
    try:
        value: int | float = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            raise PCAError(
                f"{text!r} is not a number of components or a variance fraction"
            ) from None
    value = check_k(value)
    if isinstance(value, int) and value > max_components:
        raise PCAError(
            f"k={value} is more than the {max_components} features of MobileNetV2: use at "
            f"most {max_components} components, or a variance fraction such as 0.95"
        )
    return value


def native_k_args(k: Any) -> dict[str, Any]:
    """``k`` as the keyword arguments of the native fit: ``{"k": n}`` or ``{"variance": f}``."""
    k = check_k(k)
    return {"k": k} if isinstance(k, int) else {"variance": k}


def k_from_rule(rule: str, k: int) -> int | float:
    """The ``k`` a saved PCA was fitted with, from its ``k_rule`` (``"variance>=0.95"`` →
    0.95, otherwise the number of components ``k``)."""
    if rule.startswith("variance>="):
        try:
            return float(json.loads(rule.split(">=", 1)[1]))
        except (TypeError, ValueError) as exc:  # a damaged or hand-edited model file
            raise PCAError(f"not a fruitlens PCA model file: bad k_rule {rule!r}") from exc
    return k
