"""The HTTP side of a prediction: reading the request body under its size limit, taking
the image out of a multipart form, and the JSON errors with their status codes.

Errors are values (:class:`ApiError`), not exceptions: a bad request is an expected
outcome that becomes a 4xx reply ``{"error": {"kind": ..., "message": ...}}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = [
    "FILE_FIELDS",
    "STATUS_BY_KIND",
    "ApiError",
    "error_of_row",
    "image_of_body",
    "read_body",
]

#: The multipart form fields that may hold the image, in order of preference.
FILE_FIELDS = ("file", "image")

#: HTTP status of each error kind. Decode kinds are those of the core
#: (``"<kind>: <detail>"`` of :meth:`fruitlens.Classifier.predict`'s ``error``).
STATUS_BY_KIND = {
    # the request
    "empty": 400,
    "null": 400,
    "bad_multipart": 400,
    "bad_request": 400,
    "not_found": 404,
    "method_not_allowed": 405,
    # limits: body bytes, pixel budget
    "too_many_bytes": 413,
    "too_many_pixels": 413,
    # the image
    "unknown_format": 415,
    "unsupported": 415,
    "truncated": 422,
    "corrupt": 422,
    "internal": 422,  # the decoder failed on this image (a caught panic): still this image's
    # the server
    "inference": 500,
    "loading": 503,
    "load_failed": 503,
    "overloaded": 503,
}

#: Status of a decode error kind not listed above (a newer core): the image's fault.
DEFAULT_IMAGE_STATUS = 422


@dataclass(frozen=True)
class ApiError:
    """An error reply: ``kind`` (machine-readable) and ``message`` (for people)."""

    kind: str
    message: str

    @property
    def status(self) -> int:
        return STATUS_BY_KIND.get(self.kind, DEFAULT_IMAGE_STATUS)

    def body(self) -> dict[str, Any]:
        return {"error": {"kind": self.kind, "message": self.message}}


def error_of_row(error: str) -> ApiError:
    """The reply for a row the classifier failed: ``"truncated: JPEG ends early"`` →
    kind ``truncated``, message ``JPEG ends early``."""
    kind, sep, detail = error.partition(":")
    kind = kind.strip()
    if not sep or not kind or " " in kind:
        return ApiError("corrupt", error)
    return ApiError(kind, detail.strip() or error)


def _too_large(size: int | None, max_body: int) -> ApiError:
    got = f"{size} bytes" if size is not None else "more than that"
    return ApiError(
        "too_many_bytes", f"the request body is too large: the limit is {max_body} bytes, got {got}"
    )


async def read_body(request: Any, max_body: int) -> bytes | ApiError:
    """The body of a Starlette ``request``, refused as soon as it passes ``max_body`` bytes
    (before reading anything when ``Content-Length`` says so)."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            size = int(declared)
        except ValueError:
            return ApiError("bad_request", f"invalid Content-Length {declared!r}")
        if size > max_body:
            return _too_large(size, max_body)
    chunks: list[bytes] = []
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_body:
            return _too_large(None, max_body)
        chunks.append(chunk)
    return b"".join(chunks)


_EMPTY = (
    "the request body is empty: POST the image bytes as the body, or a multipart form "
    "with the image in a field named 'file' or 'image'"
)


def image_of_body(body: bytes, content_type: str | None) -> bytes | ApiError:
    """The image bytes of a request: the body itself, or the ``file``/``image`` field of a
    ``multipart/form-data`` body."""
    if content_type and content_type.lower().lstrip().startswith("multipart/"):
        image = _image_of_multipart(body, content_type)
    else:
        image = body
    if isinstance(image, bytes) and not image:
        return ApiError("empty", _EMPTY if image is body else "the uploaded file is empty")
    return image


class _Parts:
    """Collects the parts of a multipart body in memory (it is already under the limit)."""

    def __init__(self) -> None:
        self.parts: list[tuple[str | None, bool, bytearray]] = []  # (name, is file, data)
        self._header = bytearray()
        self._value = bytearray()
        self._disposition = b""
        self.ended = False

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._begin,
            "on_part_data": lambda data, start, end: self.parts[-1][2].extend(data[start:end]),
            "on_header_field": lambda data, start, end: self._header.extend(data[start:end]),
            "on_header_value": lambda data, start, end: self._value.extend(data[start:end]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_end": self._end,
        }

    def _begin(self) -> None:
        self._disposition = b""
        self.parts.append((None, False, bytearray()))

    def _header_end(self) -> None:
        if bytes(self._header).lower() == b"content-disposition":
            self._disposition = bytes(self._value)
        self._header.clear()
        self._value.clear()

    def _headers_finished(self) -> None:
        from python_multipart.multipart import parse_options_header

        _, options = parse_options_header(self._disposition)
        name = options.get(b"name")
        self.parts[-1] = (
            name.decode("utf-8", "replace") if name is not None else None,
            b"filename" in options,
            self.parts[-1][2],
        )

    def _end(self) -> None:
        self.ended = True


def _image_of_multipart(body: bytes, content_type: str) -> bytes | ApiError:
    try:
        from python_multipart.exceptions import FormParserError
        from python_multipart.multipart import MultipartParser, parse_options_header
    except ImportError:  # pragma: no cover - the serve extra installs it
        return ApiError("bad_multipart", "multipart uploads need python-multipart installed")
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        return ApiError(
            "bad_multipart",
            f"expected multipart/form-data with a boundary, got Content-Type {content_type!r}",
        )
    parts = _Parts()
    try:
        parser = MultipartParser(boundary, parts.callbacks())
        parser.write(body)
        parser.finalize()
    except (FormParserError, ValueError) as exc:
        return ApiError("bad_multipart", f"invalid multipart body: {exc}")
    if not parts.ended:
        return ApiError("bad_multipart", "invalid multipart body: it ends before its last boundary")
    return _pick_file(parts.parts)


def _pick_file(parts: list[tuple[str | None, bool, bytearray]]) -> bytes | ApiError:
    by_name = {name: data for name, _is_file, data in parts if name is not None}
    for field in FILE_FIELDS:
        if field in by_name:
            return bytes(by_name[field])
    files = [data for _name, is_file, data in parts if is_file]
    if len(files) == 1:
        return bytes(files[0])
    names = sorted(str(name) for name, _f, _d in parts)
    return ApiError(
        "bad_multipart",
        f"no image in the form: send it in a field named 'file' or 'image' (fields: {names})",
    )
