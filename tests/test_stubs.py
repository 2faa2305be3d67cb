"""The type stub of the native module (``python/fruitlens/_native.pyi``) matches the
built module: ``python -m mypy.stubtest fruitlens._native`` (names, signatures,
defaults, properties, ``@final``), with the mypy settings of ``pyproject.toml``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fruitlens import _native

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_native_stub_matches_the_module() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            "--mypy-config-file",
            str(ROOT / "pyproject.toml"),
            "--concise",
            "fruitlens._native",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_stub_declares_default_threads() -> None:
    stub = (ROOT / "python" / "fruitlens" / "_native.pyi").read_text(encoding="utf-8")
    assert "def default_threads() -> int" in stub
    assert 1 <= _native.default_threads() <= _native.MAX_THREADS
