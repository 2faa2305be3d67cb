"""Locating the ONNX Runtime shared library that the native core loads.

fruitlens ships no ONNX Runtime of its own: it loads ``libonnxruntime.so.*`` from the
installed ``onnxruntime`` wheel (``onnxruntime/capi/``), found here *without*
importing the ``onnxruntime`` Python package. ``FRUITLENS_ORT_LIB`` overrides it.
"""

from __future__ import annotations

import importlib.util
import os
import re
from pathlib import Path

from ._errors import RuntimeNotFoundError

__all__ = ["ENV_VAR", "find_onnxruntime_library"]

ENV_VAR = "FRUITLENS_ORT_LIB"

_PATTERNS = ("libonnxruntime.so*", "libonnxruntime*.dylib", "onnxruntime.dll")


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", path.name))


def find_onnxruntime_library() -> Path:
    """Return the path of the ONNX Runtime shared library to load.

    Order: ``$FRUITLENS_ORT_LIB``; then the ``capi/`` folder of the installed
    ``onnxruntime`` package. Raises :class:`RuntimeNotFoundError` saying what to do.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env)
        if not path.is_file():
            raise RuntimeNotFoundError(
                f"{ENV_VAR}={env} does not name an existing file: point it at a "
                "libonnxruntime shared library, or unset it to use the onnxruntime wheel's"
            )
        return path
    spec = importlib.util.find_spec("onnxruntime")
    locations = list(spec.submodule_search_locations or []) if spec else []
    candidates: list[Path] = []
    for loc in locations:
        capi = Path(loc) / "capi"
        for pattern in _PATTERNS:
            candidates.extend(p for p in capi.glob(pattern) if p.is_file())
    # Prefer the real, fully versioned file (libonnxruntime.so.1.32.0) over symlinks.
    candidates = [p for p in candidates if "providers" not in p.name]
    if not candidates:
        where = ", ".join(locations) or "not installed"
        raise RuntimeNotFoundError(
            "ONNX Runtime library not found (onnxruntime package: "
            f"{where}). Install it with `pip install onnxruntime`, or set {ENV_VAR} to the "
            "path of libonnxruntime.so"
        )
    return max(candidates, key=_version_key)
