"""The fruitlens exception hierarchy.

Every error fruitlens raises on purpose is a :class:`FruitlensError`.  Subclasses also
derive from the closest built-in exception so that ``except ValueError`` /
``except OSError`` keep working in user code.
"""

from __future__ import annotations

__all__ = [
    "FruitlensError",
    "DecodeError",
    "ModelError",
    "RuntimeNotFoundError",
    "InferenceError",
    "PCAError",
    "InternalError",
    "OutputError",
    "FetchError",
    "CLIError",
]


class FruitlensError(Exception):
    """Base class of every fruitlens error."""


class DecodeError(FruitlensError, ValueError):
    """An image could not be decoded or was refused by a limit."""


class ModelError(FruitlensError, ValueError):
    """A model file is missing, malformed or has the wrong input/output shape."""


class RuntimeNotFoundError(FruitlensError, OSError):
    """The ONNX Runtime shared library could not be found or loaded."""


class InferenceError(FruitlensError, RuntimeError):
    """ONNX Runtime failed while running the model."""


class PCAError(FruitlensError, ValueError):
    """PCA was given inconsistent data or parameters."""


class InternalError(FruitlensError, RuntimeError):
    """fruitlens failed unexpectedly (a bug to report); the process is still usable."""


class OutputError(FruitlensError, ValueError):
    """An output folder/prefix is unsafe to write, not a fruitlens output, or incomplete."""


class FetchError(ModelError):
    """A download failed, was incomplete, or did not match its checksum."""


class CLIError(FruitlensError):
    """An error the user can fix; printed as one line, exit status 1."""
