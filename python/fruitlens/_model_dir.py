"""MODEL_DIR of ``fruitlens train``: built in a staging folder beside it, then put in
place at once, so that a failed or killed run never leaves a half-written model and
never loses the previous one.

Only files ``fruitlens train`` writes are ever replaced: ``--overwrite`` refuses a
MODEL_DIR holding anything else.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from . import _uri
from ._common import umask
from ._errors import CLIError
from .classify import (
    CLASSIFIER_FILE,
    CLASSIFIER_INT8_FILE,
    CLASSIFIER_UINT8_FILE,
    HEAD_FILE,
    REPORT_FILE,
)

__all__ = ["MODEL_FILES", "ModelDir"]

#: Everything ``fruitlens train`` writes into a MODEL_DIR.
MODEL_FILES = frozenset(
    {
        CLASSIFIER_FILE,
        CLASSIFIER_UINT8_FILE,
        CLASSIFIER_INT8_FILE,
        HEAD_FILE,
        REPORT_FILE,
        "confusion.png",
        "per_class.png",
    }
)
_STAGING = ".fruitlens-train-"
_OLD = ".fruitlens-old-"


def _check_replaceable(path: Path, overwrite: bool) -> None:
    entries = sorted(os.listdir(path))
    if not entries:
        return
    if not overwrite:
        raise CLIError(
            f"MODEL_DIR {path} already exists and is not empty: pass --overwrite to replace "
            "a model written by fruitlens train, or choose a new folder"
        )
    foreign = [e for e in entries if e not in MODEL_FILES]
    if foreign:
        raise CLIError(
            f"MODEL_DIR {path} holds {foreign[0]!r}, which fruitlens train did not write: "
            "refusing to replace it (choose an empty or new folder)"
        )


class ModelDir:
    """The MODEL_DIR being written: :attr:`staging` (a new folder beside it, removed by
    :meth:`abort`) is renamed into place by :meth:`commit`."""

    def __init__(self, model_dir: str, *, overwrite: bool = False) -> None:
        if not _uri.is_local(model_dir):
            raise CLIError(f"MODEL_DIR must be a local folder, got {model_dir}")
        self.path = Path(_uri.local_path(model_dir)).absolute()
        if self.path.exists() or self.path.is_symlink():
            if not self.path.is_dir() or self.path.is_symlink():
                raise CLIError(f"MODEL_DIR {self.path} exists and is not a folder")
            _check_replaceable(self.path, overwrite)
        self.overwrite = overwrite
        self.staging: Path | None = None

    def start(self) -> Path:
        """Create and return the staging folder (beside MODEL_DIR: same filesystem)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".{self.path.name}{_STAGING}"
        self.staging = Path(tempfile.mkdtemp(prefix=prefix, dir=self.path.parent))
        os.chmod(self.staging, 0o777 & ~umask())  # a normal folder, not mkdtemp's 0o700
        return self.staging

    def commit(self) -> None:
        """Put the staging folder in place of MODEL_DIR (the old one, if any, is
        checked again, moved aside, then removed)."""
        assert self.staging is not None
        old: Path | None = None
        if self.path.exists():
            _check_replaceable(self.path, self.overwrite)
            if os.listdir(self.path):
                old = Path(
                    tempfile.mkdtemp(prefix=f".{self.path.name}{_OLD}", dir=self.path.parent)
                )
                os.replace(self.path, old / "model")
            else:
                os.rmdir(self.path)
        os.replace(self.staging, self.path)
        self.staging = None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        """Remove the staging folder (what this run wrote; never MODEL_DIR)."""
        if self.staging is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            self.staging = None
