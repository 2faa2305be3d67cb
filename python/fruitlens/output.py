"""fruitlens outputs: the commit protocol, the safety checks, and a reader/verifier.

An output of ``fruitlens run`` is a folder (local, HDFS, ...) or a prefix (S3, GCS) that
holds Parquet parts, ``_pca/pca.json``, ``_summary.json`` and, written **last**, the
commit marker ``_SUCCESS``: a JSON manifest ::

    {"format": "fruitlens.output", "version": 1, "run_id": "<32 hex>", "created": "...",
     "files": [{"path": "part-00000-<run>.parquet", "size": 1234}, ...,
               {"path": "_pca/pca.json", "size": 99, "sha256": "..."}],
     "aliases": {}}

``files`` lists every file of the output (relative paths) with its size (and a sha256
for the small JSON files). A previous fruitlens output is recognised by this manifest
(``fruitlens run`` outputs also have ``_summary.json``); fruitlens deletes or replaces
nothing else: a folder/prefix without it, or with files the manifest does not list, is
refused.

How a run publishes its output (``OUTPUT`` holds the complete old output or the complete
new one at every moment):

* **local folders and Hadoop filesystems** (``--io spark``): everything is written into a
  hidden sibling ``PARENT/.NAME.fruitlens-staging-<run>``, the manifest last; then the
  staging folder and ``OUTPUT`` are swapped with one ``renameat2(RENAME_EXCHANGE)``
  (Linux), and the old copy is deleted. Without an atomic exchange (other systems,
  Hadoop), ``OUTPUT`` is renamed to ``.NAME.fruitlens-old-<run>`` and the staging folder
  to ``OUTPUT``: a run killed between the two renames leaves no ``OUTPUT`` but the old
  copy, which the next run (or :func:`recover`) renames back. Leftover staging/old
  folders of that naming are removed by the next run. (A NAME too long to be part of a
  file name is replaced by ``fruitlens-<sha256 of NAME>`` there; an OUTPUT that is a
  mount point, or whose staging folder cannot be created, is refused before any work.)
* **object stores** (``s3://``, ``gs://`` through pyarrow; no rename there): the new
  parts are written under new names (``part-NNNNN-<run>.parquet``), the PCA and summary
  under ``_pca/pca-<run>.json`` and ``_summary-<run>.json``; then ONE PUT of the
  manifest switches the output from the old file set to the new one; then the fixed-name
  copies ``_pca/pca.json`` and ``_summary.json`` are written (the manifest lists them as
  ``aliases`` with their sha256) and the old run's files are deleted. Files of
  fruitlens's naming that no manifest lists are removed by the next run.

Readers that honour the manifest (:func:`verify`, :func:`read_output`,
:func:`part_uris`, ``fruitlens.PCA.load`` on an output's ``_pca/pca.json``) always see
one complete output. A reader that ignores it (``spark.read.parquet(OUTPUT)``,
``pyarrow.dataset``) sees exactly the old or the new parts on local folders; on an object
store it can see the parts of both runs while a run publishes (between its first part
and the deletion of the old parts, or after a run killed in between, until the next
run), and the fixed-name ``_pca/pca.json`` / ``_summary.json`` can be the old run's for
the moment between the manifest PUT and their own PUT.
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import posixpath
import re
import shutil
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from . import _uri
from ._errors import OutputError

__all__ = [
    "MANIFEST",
    "MANIFEST_FORMAT",
    "PCA_FILE",
    "SUMMARY_FILE",
    "Manifest",
    "OutputTarget",
    "check_paths",
    "checked_read",
    "part_uris",
    "read_output",
    "recover",
    "verify",
]

#: The commit marker: the JSON manifest, written last.
MANIFEST = "_SUCCESS"
MANIFEST_FORMAT = "fruitlens.output"
MANIFEST_VERSION = 1
PCA_FILE = "_pca/pca.json"
SUMMARY_FILE = "_summary.json"
#: Suffixes of the hidden sibling folders of a local/Hadoop output.
STAGING_TAG = ".fruitlens-staging-"
OLD_TAG = ".fruitlens-old-"
#: Test-only: ``FRUITLENS_TEST_KILL=<point>`` SIGKILLs the process at that commit point.
KILL_ENV = "FRUITLENS_TEST_KILL"
#: Test-only: ``FRUITLENS_TEST_NO_EXCHANGE=1`` uses the two-rename fallback locally.
NO_EXCHANGE_ENV = "FRUITLENS_TEST_NO_EXCHANGE"

_RUN = r"[0-9a-f]{32}"
#: Names fruitlens gives the files of an object-store output (relative to OUTPUT).
_OWN_OBJECT = re.compile(
    rf"(part-\d{{5}}-(?P<a>{_RUN})\.parquet|_pca/pca-(?P<b>{_RUN})\.json"
    rf"|_summary-(?P<c>{_RUN})\.json)"
)
#: What an output of fruitlens before manifests holds: Spark's or fruitlens's parts (and
#: Hadoop's hidden checksums), the PCA, the summary and an empty ``_SUCCESS``.
_LEGACY_FILE = re.compile(
    r"(\.?part-[^/]*\.parquet(\.crc)?|\._SUCCESS\.crc|_SUCCESS|_summary\.json"
    r"|_pca/\.?pca\.json(\.crc)?|_pca/pca\.json\.tmp)"
)
_LEGACY_SUMMARY_KEYS = {"input", "output", "images", "k", "stages"}
_SMALL = 1 << 20  # files up to this size get a sha256 in the manifest
_OBJECT_SCHEMES = {"s3": "s3", "s3a": "s3", "s3n": "s3", "gs": "gs", "gcs": "gs"}


def _kill_point(point: str) -> None:
    """Test-only fault injection (``FRUITLENS_TEST_KILL``): ``POINT`` SIGKILLs this
    process when it reaches ``POINT``; ``POINT:SIGNAL:SECONDS`` (e.g.
    ``featurize:SIGINT:3``) sends ``SIGNAL`` that many seconds after reaching it."""
    spec = os.environ.get(KILL_ENV)
    if not spec or spec.split(":")[0] != point:
        return
    import signal

    parts = spec.split(":")
    if len(parts) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
        return
    import threading

    signum = getattr(signal, parts[1])
    timer = threading.Timer(float(parts[2]), os.kill, (os.getpid(), signum))
    timer.daemon = True
    timer.start()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------------------
# Stores: the few operations the protocol needs, on local, pyarrow and Hadoop filesystems
# --------------------------------------------------------------------------------------


class _LocalStore:
    kind = "local"

    def join(self, base: str, rel: str) -> str:
        return os.path.join(base, *rel.split("/"))

    def stat(self, path: str) -> str:
        if os.path.islink(path) and not os.path.exists(path):
            return "file"
        if os.path.isdir(path):
            return "dir"
        return "file" if os.path.lexists(path) else "missing"

    def files(self, root: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for folder, dirs, names in os.walk(root, onerror=_raise):
            for name in names + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
                full = os.path.join(folder, name)
                out[os.path.relpath(full, root).replace(os.sep, "/")] = os.lstat(full).st_size
        return out

    def read(self, path: str) -> bytes:
        with open(path, "rb") as handle:
            return handle.read()

    def write(self, path: str, data: bytes) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{uuid.uuid4().hex}")
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)

    def delete_file(self, path: str) -> None:
        os.unlink(path)

    def delete_tree(self, path: str) -> None:
        if os.path.isdir(path) and not os.path.islink(path):
            shutil.rmtree(path)
        elif os.path.lexists(path):
            os.unlink(path)

    def rename(self, src: str, dst: str) -> None:
        os.rename(src, dst)

    def exchange(self, a: str, b: str) -> bool:
        if os.environ.get(NO_EXCHANGE_ENV):
            return False
        return _renameat2_exchange(a, b)

    def listdir(self, path: str) -> list[str]:
        try:
            return os.listdir(path)
        except (FileNotFoundError, NotADirectoryError):  # prepare() says what is wrong
            return []

    def mkdirs(self, path: str) -> None:
        os.makedirs(path, exist_ok=True)

    def sync_dir(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def _raise(exc: OSError) -> None:
    raise exc  # an unreadable subfolder: never take its files for absent


def _renameat2_exchange(a: str, b: str) -> bool:
    """Atomically swap two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False when the
    system or filesystem cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        func = libc.renameat2
    except (OSError, AttributeError):
        return False
    func.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    func.restype = ctypes.c_int
    at_fdcwd, rename_exchange = -100, 2
    if func(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), a)


class _ArrowStore:
    kind = "object"

    def __init__(self, fs: Any) -> None:
        self.fs = fs

    def join(self, base: str, rel: str) -> str:
        return posixpath.join(base, rel)

    def stat(self, path: str) -> str:
        import pyarrow.fs as pafs

        kind = self.fs.get_file_info(path).type
        if kind == pafs.FileType.NotFound:
            return "missing"
        return "dir" if kind == pafs.FileType.Directory else "file"

    def files(self, root: str) -> dict[str, int]:
        import pyarrow.fs as pafs

        selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
        return {
            info.path[len(root) + 1 :]: int(info.size or 0)
            for info in self.fs.get_file_info(selector)
            if info.type == pafs.FileType.File
        }

    def read(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as handle:
            return handle.read()

    def write(self, path: str, data: bytes) -> None:
        with self.fs.open_output_stream(path) as out:  # one PUT: atomic
            out.write(data)

    def delete_file(self, path: str) -> None:
        try:
            self.fs.delete_file(path)
        except FileNotFoundError:
            pass


class _HadoopStore:
    """A Hadoop filesystem through py4j (HDFS, EMRFS, s3a, ...): ``--io spark``."""

    kind = "hadoop"

    def __init__(self, spark: Any, uri: str) -> None:
        self._jvm = spark.sparkContext._jvm
        conf = spark.sparkContext._jsc.hadoopConfiguration()
        path = self._jvm.org.apache.hadoop.fs.Path(uri)
        self.fs = path.getFileSystem(conf)

    def _p(self, uri: str) -> Any:
        return self._jvm.org.apache.hadoop.fs.Path(uri)

    def join(self, base: str, rel: str) -> str:
        return base.rstrip("/") + "/" + rel

    def stat(self, path: str) -> str:
        p = self._p(path)
        if not self.fs.exists(p):
            return "missing"
        return "dir" if self.fs.getFileStatus(p).isDirectory() else "file"

    def files(self, root: str) -> dict[str, int]:
        if self.stat(root) != "dir":
            return {}
        base = self.fs.makeQualified(self._p(root)).toUri().getPath().rstrip("/") + "/"
        out: dict[str, int] = {}
        it = self.fs.listFiles(self._p(root), True)
        while it.hasNext():
            status = it.next()
            path = status.getPath().toUri().getPath()
            out[path[len(base) :] if path.startswith(base) else path] = int(status.getLen())
        return out

    def read(self, path: str) -> bytes:
        stream = self.fs.open(self._p(path))
        try:
            return bytes(self._jvm.org.apache.commons.io.IOUtils.toByteArray(stream))
        finally:
            stream.close()

    def write(self, path: str, data: bytes) -> None:
        stream = self.fs.create(self._p(path), True)
        try:
            stream.write(bytearray(data))
        finally:
            stream.close()

    def delete_file(self, path: str) -> None:
        self.fs.delete(self._p(path), False)

    def delete_tree(self, path: str) -> None:
        self.fs.delete(self._p(path), True)

    def rename(self, src: str, dst: str) -> None:
        if not self.fs.rename(self._p(src), self._p(dst)):
            raise OSError(f"could not rename {src} to {dst}")

    def exchange(self, a: str, b: str) -> bool:
        return False

    def listdir(self, path: str) -> list[str]:
        p = self._p(path)
        if not self.fs.exists(p):
            return []
        return [s.getPath().getName() for s in self.fs.listStatus(p)]

    def mkdirs(self, path: str) -> None:
        self.fs.mkdirs(self._p(path))

    def sync_dir(self, path: str) -> None:
        pass


# --------------------------------------------------------------------------------------
# Manifests
# --------------------------------------------------------------------------------------


@dataclass
class Manifest:
    """A parsed ``_SUCCESS`` manifest, plus what :func:`verify` found."""

    uri: str
    run_id: str
    created: str
    files: dict[str, dict[str, Any]]
    aliases: dict[str, str] = field(default_factory=dict)
    #: Fixed-name copies (aliases) whose content is not yet the manifest's (object
    #: stores, a run killed just after its commit); readers use the listed original.
    stale_aliases: list[str] = field(default_factory=list)
    #: Visible Parquet files present but not listed (object stores: an unfinished or
    #: interrupted publish); readers that honour the manifest skip them.
    unlisted_parts: list[str] = field(default_factory=list)

    @property
    def parts(self) -> list[str]:
        """Relative paths of the Parquet parts, sorted."""
        return sorted(p for p in self.files if _is_part(p))

    def part_uris(self) -> list[str]:
        return [_uri.join(self.uri, p) for p in self.parts]

    @property
    def pca_path(self) -> str:
        return self.aliases.get(PCA_FILE, PCA_FILE)

    @property
    def summary_path(self) -> str:
        return self.aliases.get(SUMMARY_FILE, SUMMARY_FILE)


def _is_part(rel: str) -> bool:
    return rel.endswith(".parquet") and not any(c.startswith(("_", ".")) for c in rel.split("/"))


def _parse_manifest(data: bytes, uri: str) -> Manifest | None:
    """The manifest in ``data``, or None if it is not a fruitlens manifest."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        return None
    if doc.get("version") != MANIFEST_VERSION:
        raise OutputError(
            f"{uri}: manifest version {doc.get('version')!r} is not supported by this "
            f"fruitlens (expects {MANIFEST_VERSION}): upgrade fruitlens"
        )
    try:
        files = {str(f["path"]): dict(f) for f in doc.get("files", [])}
        aliases = {str(k): str(v) for k, v in (doc.get("aliases") or {}).items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise OutputError(f"{uri}: {MANIFEST} is a damaged fruitlens manifest ({exc!r})") from exc
    unsafe = [p for p in [*files, *aliases, *aliases.values()] if not _safe_rel(p)]
    if unsafe:  # fruitlens never reads or deletes outside the output on its word
        raise OutputError(f"{uri}: {MANIFEST} lists a path outside the output: {unsafe[0]!r}")
    return Manifest(
        uri=uri,
        run_id=str(doc.get("run_id", "")),
        created=str(doc.get("created", "")),
        files=files,
        aliases=aliases,
    )


def _safe_rel(rel: str) -> bool:
    """A relative path inside an output: no leading ``/``, ``\\``, empty, ``.`` or ``..`` part."""
    return bool(rel) and "\\" not in rel and all(p not in ("", ".", "..") for p in rel.split("/"))


def _manifest_bytes(
    run_id: str, files: dict[str, dict[str, Any]], aliases: dict[str, str]
) -> bytes:
    doc = {
        "format": MANIFEST_FORMAT,
        "version": MANIFEST_VERSION,
        "run_id": run_id,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "files": [{"path": p, **files[p]} for p in sorted(files)],
        "aliases": aliases,
    }
    return (json.dumps(doc, indent=1) + "\n").encode("utf-8")


# --------------------------------------------------------------------------------------
# Resolving URIs
# --------------------------------------------------------------------------------------


def _store_for(uri: str, spark: Any = None, io: str = "auto") -> tuple[Any, str]:
    """(store, root path in that store) for an output URI."""
    if _uri.is_local(uri):
        return _LocalStore(), os.path.realpath(_uri.local_path(uri))
    scheme = _uri.scheme(uri)
    if scheme in _OBJECT_SCHEMES and (spark is None or _use_arrow(spark, uri, io)):
        from . import io as fl_io

        fs, path = fl_io.filesystem_for(uri)
        return _ArrowStore(fs), path.rstrip("/")
    if spark is None:
        raise OutputError(
            f"{uri}: {scheme}:// outputs are written through Spark's Hadoop filesystems; "
            "this reader supports local folders, s3:// and gs:// only"
        )
    return _HadoopStore(spark, uri), uri.rstrip("/")


def _use_arrow(spark: Any, uri: str, io: str) -> bool:
    from .spark import use_arrow_io

    return use_arrow_io(spark, uri, io)


_GLOB_CHARS = "*?[{"


def _identity(uri: str, pattern: bool = False) -> tuple[str, str, tuple[str, ...]]:
    """(kind, authority, path components) that two URIs share when they name the same
    place: local paths resolved (symlinks, ``..``, ``file:``, trailing ``/``); with
    ``pattern`` (INPUT), a glob (local, or any Hadoop/object-store URI) stands for the
    folder it starts from."""
    if _uri.is_local(uri):
        text = _uri.local_path(uri)
        glob = min((i for i, c in enumerate(text) if c in _GLOB_CHARS), default=-1)
        if pattern and glob >= 0 and not os.path.lexists(text):  # a glob: the folder it starts from
            text = os.path.dirname(text[:glob])
        real = os.path.realpath(text)
        return "file", "", tuple(p for p in real.split(os.sep) if p)
    kind, authority, path = _uri.split_uri(uri)
    kind = _OBJECT_SCHEMES.get(kind, kind)
    parts = tuple(p for p in path.split("/") if p)
    globbed = [i for i, p in enumerate(parts) if pattern and any(c in p for c in _GLOB_CHARS)]
    if globbed:  # Spark expands globs in object-store/Hadoop paths too
        parts = parts[: globbed[0]]
    if kind not in ("s3", "gs"):  # hdfs://nn, hdfs://nn:8020 and hdfs:/// may be one place
        authority = "*"
    return kind, authority, parts


def _mounts() -> list[tuple[tuple[str, ...], str, tuple[str, ...]]]:
    """(mount point, device, folder of that device mounted there) of every mount, in
    mount order (Linux ``/proc/self/mountinfo``; empty elsewhere)."""

    def parts(text: str) -> tuple[str, ...]:
        text = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)
        return tuple(p for p in text.split("/") if p)

    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split(" ")
        if len(fields) > 4:
            out.append((parts(fields[4]), fields[2], parts(fields[3])))
    return out


def _on_device(parts: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """A resolved local path as (device, path inside that device's filesystem), so that
    a bind mount of a folder and the folder itself compare equal; ``("", parts)`` when
    the mounts are unknown. A mount point (a filesystem root) has no parts."""
    best: tuple[tuple[str, ...], str, tuple[str, ...]] | None = None
    for mount in _mounts():
        point = mount[0]
        if parts[: len(point)] == point and (best is None or len(point) >= len(best[0])):
            best = mount  # the last mount on the longest matching point is the visible one
    if best is None:
        return "", parts
    return best[1], best[2] + parts[len(best[0]) :]


def check_paths(input_uri: str, output_uri: str) -> None:
    """Refuse an OUTPUT that is, contains or lies inside INPUT, or is a root.

    Raises:
        OutputError: with a one-line message that says how to proceed.
    """
    ikind, iauth, ipath = _identity(input_uri, pattern=True)
    okind, oauth, opath = _identity(output_uri)
    if okind in ("s3", "gs") and not opath:
        raise OutputError(
            f"output {output_uri} is a whole bucket: fruitlens writes into a folder inside "
            f"it, e.g. {output_uri.rstrip('/')}/fruitlens-output"
        )
    if not opath:
        raise OutputError(
            f"output {output_uri} is a filesystem root: choose a new folder for the output"
        )
    if okind == "file" and _is_mount_point(os.path.join(os.sep, *opath)):
        raise OutputError(
            f"output {output_uri} is a mount point: fruitlens replaces its output folder "
            "as a whole, so it writes a folder inside it, e.g. "
            f"{output_uri.rstrip('/')}/fruitlens-output"
        )
    if ikind == okind == "file":  # a bind mount of a folder is that folder
        (iauth, ipath), (oauth, opath) = _on_device(ipath), _on_device(opath)
    if ikind != okind or (iauth != oauth and "*" not in (iauth, oauth)):
        return
    n = min(len(ipath), len(opath))
    if ipath[:n] != opath[:n]:
        return
    if ipath == opath:
        how = "is the input folder"
    elif len(opath) > len(ipath):
        how = "is inside the input folder"
    else:
        how = "contains the input folder"
    raise OutputError(
        f"output {output_uri} {how} {input_uri}: fruitlens never writes over its input; "
        "choose an output folder outside the input"
    )


# --------------------------------------------------------------------------------------
# Writing an output
# --------------------------------------------------------------------------------------


class OutputTarget:
    """One run's output: :meth:`prepare`, write (parts, :meth:`write_text`), then
    :meth:`commit` (or :meth:`abort`). See the module docstring for the protocol."""

    def __init__(self, uri: str, *, spark: Any = None, io: str = "auto") -> None:
        self.uri = uri
        self.store, self.root = _store_for(uri, spark, io)
        self.run_id = uuid.uuid4().hex
        self.staged = self.store.kind != "object"
        self._old: Manifest | None = None
        self._written: list[str] = []  # object stores: files this run wrote
        self._aliases: dict[str, str] = {}
        self._committed = False  # object stores: the manifest PUT happened
        if self.staged:
            parent, name = self._parent_name()
            self.staging = self.store.join(parent, f".{name}{STAGING_TAG}{self.run_id}")
        else:
            self.staging = self.root

    def _parent_name(self) -> tuple[str, str]:
        """(parent, stem of the hidden sibling folders' names)."""
        if self.store.kind == "local":
            return os.path.dirname(self.root), _sibling_stem(os.path.basename(self.root))
        head, _, name = self.root.rpartition("/")
        return head, _sibling_stem(name)

    # -- where the writers write ----------------------------------------------------

    @property
    def data_uri(self) -> str:
        """Where the Parquet parts go (a Spark/Hadoop URI for the staging folder, or
        OUTPUT itself on an object store)."""
        if self.store.kind == "local":
            return "file:" + self.staging
        if self.store.kind == "hadoop":
            return self.staging
        return self.uri

    def _path(self, rel: str) -> str:
        return self.store.join(self.staging, rel)

    # -- checks and clean-up before any work -----------------------------------------

    def prepare(self, *, overwrite: bool) -> None:
        """Check that the output can be written (before any work); recover or clean up
        what an interrupted earlier run left. Raises :class:`OutputError`."""
        if self.store.kind == "local":
            self._check_local_place()
        self._check_existing(overwrite)
        if self.store.kind == "local":
            self._probe_staging()

    def _check_local_place(self) -> None:
        root = self.root
        if os.path.dirname(root) == root:
            raise OutputError(
                f"output {self.uri} is a filesystem root: choose a new folder for the output"
            )
        if _is_mount_point(root):
            raise OutputError(
                f"output {self.uri} is a mount point: fruitlens replaces its output folder "
                "as a whole, so it writes a folder inside it, e.g. "
                f"{self.uri.rstrip('/')}/fruitlens-output"
            )

    def _probe_staging(self) -> None:
        """Local outputs: create (and remove) the staging folder now, so that a read-only
        or missing parent, a file in the way or a name too long fail before any work."""
        parent = os.path.dirname(self.staging)
        try:
            os.makedirs(parent, exist_ok=True)
            os.mkdir(self.staging)
            os.rmdir(self.staging)
        except OSError as exc:
            where = exc.filename or parent
            why = "a file is in the way" if isinstance(exc, FileExistsError) else exc.strerror
            message = f"cannot write the output {self.uri}: {why or exc} ({where})"
            raise OutputError(message) from exc

    def _first_file(self) -> dict[str, int]:
        """Local OUTPUT without a manifest at its top: the first file found in it, if
        any (so that a big folder that is not an output, e.g. ``~``, is refused at
        once instead of after listing all of it)."""
        for folder, dirs, names in os.walk(self.root, onerror=_raise):
            found = names + [d for d in dirs if os.path.islink(os.path.join(folder, d))]
            if found:
                rel = os.path.relpath(os.path.join(folder, found[0]), self.root)
                return {rel.replace(os.sep, "/"): 0}
        return {}

    def _check_existing(self, overwrite: bool) -> None:
        store = self.store
        if store.kind == "object":
            self._check_bucket()
        else:
            recover(self.uri, _store=(store, self.root))
        kind = store.stat(self.root)
        if kind == "file":
            raise OutputError(f"output {self.uri} is a file, not a folder: choose a folder")
        if kind == "dir" and store.kind == "local" and MANIFEST not in store.listdir(self.root):
            files = self._first_file()
        else:
            files = store.files(self.root) if kind == "dir" else {}
        if store.kind == "object":
            files = self._clean_orphans(files)
        if not files:
            return  # nothing there (or an empty folder): nothing to replace
        if MANIFEST not in files:
            raise OutputError(
                f"output {self.uri} exists and is not a fruitlens output (no _SUCCESS "
                "manifest): fruitlens replaces only its own outputs; choose a new output "
                "folder, or delete it yourself"
            )
        manifest = _parse_manifest(store.read(self._at_root(MANIFEST)), self.uri)
        if manifest is None:
            manifest = self._legacy_manifest(files)
        if manifest is None:
            raise OutputError(
                f"output {self.uri} has a _SUCCESS that is not a fruitlens manifest (an "
                "older fruitlens or another tool wrote it): choose a new output folder, "
                "or delete it yourself"
            )
        known = set(manifest.files) | set(manifest.aliases) | {MANIFEST}
        foreign = sorted(f for f in files if f not in known)
        if foreign:
            raise OutputError(
                f"output {self.uri} holds files fruitlens did not write (e.g. "
                f"{foreign[0]!r}): move them away first, or choose a new output folder"
            )
        if not overwrite:
            raise OutputError(
                f"output {self.uri} exists (a fruitlens output of run {manifest.run_id}): "
                "pass --overwrite to replace it, or choose a new output folder"
            )
        self._old = manifest

    def _legacy_manifest(self, files: dict[str, int]) -> Manifest | None:
        """An output of fruitlens before manifests (empty ``_SUCCESS``), recognised by its
        ``_summary.json`` and a layout of only the files fruitlens/Spark wrote there;
        None for anything else."""
        if SUMMARY_FILE not in files or files.get(MANIFEST, 0) != 0:
            return None
        try:
            summary = json.loads(self.store.read(self._at_root(SUMMARY_FILE)).decode("utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            return None
        if not isinstance(summary, dict) or not _LEGACY_SUMMARY_KEYS <= set(summary):
            return None
        if not all(_LEGACY_FILE.fullmatch(rel) for rel in files):
            return None
        listed = {rel: {"size": size} for rel, size in files.items() if rel != MANIFEST}
        return Manifest(uri=self.uri, run_id="legacy", created="", files=listed, aliases={})

    def _at_root(self, rel: str) -> str:
        return self.store.join(self.root, rel)

    def _check_bucket(self) -> None:
        bucket = self.root.split("/", 1)[0]
        if "/" not in self.root:
            raise OutputError(
                f"output {self.uri} is a whole bucket: fruitlens writes into a folder inside "
                f"it, e.g. {self.uri.rstrip('/')}/fruitlens-output"
            )
        try:
            kind = self.store.stat(bucket)
        except OSError as exc:
            raise OutputError(f"cannot access the output bucket {bucket!r}: {_first(exc)}") from exc
        if kind == "missing":
            raise OutputError(
                f"the output bucket {bucket!r} does not exist (or is not visible with these "
                f"credentials): create it first, e.g. `aws s3 mb s3://{bucket}`"
            )

    def _clean_orphans(self, files: dict[str, int]) -> dict[str, int]:
        """Object stores: delete files of fruitlens's naming that no manifest lists
        (left by a killed run), but only when nothing foreign is there; return the rest."""
        listed: set[str] = set()
        if MANIFEST in files:
            manifest = _parse_manifest(self.store.read(self._at_root(MANIFEST)), self.uri)
            if manifest is None:
                return files
            listed = set(manifest.files) | set(manifest.aliases) | {MANIFEST}
        own = set(listed and (PCA_FILE, SUMMARY_FILE))  # an earlier run's fixed-name copies
        orphans = [
            rel for rel in files if rel not in listed and (_OWN_OBJECT.fullmatch(rel) or rel in own)
        ]
        if any(rel not in listed and rel not in orphans for rel in files):
            return files  # foreign files: prepare() refuses, nothing is deleted
        for rel in orphans:
            self.store.delete_file(self._at_root(rel))
        return {rel: size for rel, size in files.items() if rel in listed}

    # -- writing --------------------------------------------------------------------

    def part_name(self, index: int) -> str:
        return f"part-{index:05d}-{self.run_id}.parquet"

    def write_parquet(
        self,
        batches: Iterable[Any],
        *,
        schema: Any = None,
        rows_per_file: int = 1_000_000,
        compression: str = "zstd",
    ) -> list[str]:
        """Write Arrow batches as Parquet parts of this run (streamed); returns their
        relative paths."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if rows_per_file < 1:
            raise ValueError(f"rows_per_file must be at least 1, got {rows_per_file}")
        fs = self._arrow_fs()
        names: list[str] = []
        writer = None
        rows_in_file = 0
        file_schema = None

        def open_writer(sch: Any) -> Any:
            name = self.part_name(len(names))
            names.append(name)
            self._written.append(name)
            lists = (pa.types.is_list, pa.types.is_large_list, pa.types.is_fixed_size_list)
            dictionary = [f.name for f in sch if not any(is_(f.type) for is_ in lists)]
            return pq.ParquetWriter(
                self._path(name),
                sch,
                filesystem=fs,
                compression=compression,
                use_dictionary=dictionary,
            )

        if self.store.kind == "local":
            self.store.mkdirs(self.staging)
        try:
            for batch in _iter_batches(batches):
                if file_schema is None:
                    file_schema = batch.schema
                elif not batch.schema.equals(file_schema):
                    if batch.num_rows == 0:
                        continue
                    batch = pa.Table.from_batches([batch]).cast(file_schema).to_batches()[0]
                offset = 0
                while offset < batch.num_rows:
                    if writer is None:
                        writer = open_writer(file_schema)
                        rows_in_file = 0
                    take = min(batch.num_rows - offset, rows_per_file - rows_in_file)
                    writer.write_batch(batch.slice(offset, take))
                    offset += take
                    rows_in_file += take
                    if rows_in_file >= rows_per_file:
                        writer.close()
                        writer = None
            if writer is None and not names and (file_schema or schema) is not None:
                writer = open_writer(file_schema or schema)
        finally:
            if writer is not None:
                writer.close()
        _kill_point("parts-written")
        return names

    def _arrow_fs(self) -> Any:
        if self.store.kind == "object":
            return self.store.fs
        if self.store.kind == "local":
            import pyarrow.fs as pafs

            return pafs.LocalFileSystem()
        raise OutputError("the arrow writer cannot write to a Hadoop filesystem: use Spark")

    def write_text(self, rel: str, text: str) -> None:
        """Write a small file of the output (``_pca/pca.json``, ``_summary.json``)."""
        if self.store.kind == "object" and rel in (PCA_FILE, SUMMARY_FILE):
            stem, ext = posixpath.splitext(rel)
            real = f"{stem}-{self.run_id}{ext}"
            self._aliases[rel] = real
            rel = real
        self._written.append(rel)
        self.store.write(self._path(rel), text.encode("utf-8"))

    # -- publishing -----------------------------------------------------------------

    def commit(self) -> Manifest:
        """Write the manifest (last), publish, delete the old output's files."""
        store = self.store
        if self.staged:
            for junk in (MANIFEST, "._SUCCESS.crc"):  # Spark's own empty marker
                if store.stat(self._path(junk)) != "missing":
                    store.delete_file(self._path(junk))
            files = store.files(self.staging) if store.stat(self.staging) == "dir" else {}
        else:
            every = store.files(self.root)
            files = {rel: every[rel] for rel in self._written if rel in every}
            missing = [rel for rel in self._written if rel not in every]
            if missing:
                raise OutputError(f"{self.uri}: written files are missing: {missing[:3]}")
        entries: dict[str, dict[str, Any]] = {}
        for rel, size in files.items():
            entry: dict[str, Any] = {"size": size}
            if size <= _SMALL and rel.endswith(".json"):
                entry["sha256"] = _sha256(store.read(self._path(rel)))
            entries[rel] = entry
        alias_sha = {alias: entries[real]["sha256"] for alias, real in self._aliases.items()}
        _kill_point("before-manifest")
        store.write(self._path(MANIFEST), _manifest_bytes(self.run_id, entries, self._aliases))
        self._committed = not self.staged  # object stores: this run's files are OUTPUT now
        if self.staged:
            if store.kind == "local":
                store.sync_dir(self.staging)
            _kill_point("before-swap")
            self._swap()
        else:
            _kill_point("after-manifest")
            for alias, real in self._aliases.items():  # the fixed-name copies
                data = store.read(self._path(real))
                if _sha256(data) == alias_sha[alias]:
                    store.write(self._path(alias), data)
            _kill_point("before-cleanup")
            if self._old is not None:
                keep = set(entries) | set(self._aliases) | {MANIFEST}
                for rel in sorted(set(self._old.files) | set(self._old.aliases)):
                    if rel not in keep:
                        store.delete_file(self._at_root(rel))
        return verify(self.uri, _store=(store, self.root))

    def _swap(self) -> None:
        store = self.store
        parent, name = self._parent_name()
        if store.stat(self.root) == "missing":
            store.rename(self.staging, self.root)
            _kill_point("after-swap")
            return
        if store.exchange(self.staging, self.root):
            if store.kind == "local":
                store.sync_dir(parent)
            _kill_point("after-swap")
            store.delete_tree(self.staging)  # now the old output
            return
        old = store.join(parent, f".{name}{OLD_TAG}{self.run_id}")
        store.rename(self.root, old)
        _kill_point("old-moved")
        store.rename(self.staging, self.root)
        _kill_point("after-swap")
        store.delete_tree(old)

    def abort(self) -> None:
        """Remove what this run wrote (never anything else), unless it is already the
        committed output; put the old output back if this run had moved it away. Best
        effort."""
        try:
            if self.staged:
                if self.store.stat(self.staging) != "missing":
                    self.store.delete_tree(self.staging)
                parent, name = self._parent_name()
                old = self.store.join(parent, f".{name}{OLD_TAG}{self.run_id}")
                if self.store.stat(self.root) == "missing" and self.store.stat(old) != "missing":
                    self.store.rename(old, self.root)  # interrupted between the two renames
            elif not self._committed:
                for rel in self._written:
                    self.store.delete_file(self._path(rel))
        except Exception:  # clean-up must not hide the original error
            pass


def _first(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _iter_batches(data: Any) -> Iterator[Any]:
    import pyarrow as pa

    if isinstance(data, pa.Table):
        yield from data.to_batches()
    elif isinstance(data, pa.RecordBatch):
        yield data
    else:
        for item in data:
            if isinstance(item, pa.Table):
                yield from item.to_batches()
            else:
                yield item


def _sibling_stem(name: str) -> str:
    """The output's name as used in its hidden siblings' names (``.NAME.fruitlens-...``):
    the name itself, or a digest of it when that would make a name too long (255 bytes)."""
    if len(os.fsencode(name)) <= 180:
        return name
    return "fruitlens-" + hashlib.sha256(os.fsencode(name)).hexdigest()[:40]


def _is_mount_point(path: str) -> bool:
    """True if the resolved local ``path`` is where a filesystem (or a bind mount) is
    mounted: it cannot be renamed or swapped."""
    parts = tuple(p for p in path.split(os.sep) if p)
    return os.path.ismount(path) or any(point == parts for point, _, _ in _mounts())


def recover(uri: str, *, _store: tuple[Any, str] | None = None) -> bool:
    """Local/Hadoop outputs: undo what a run killed mid-publish left.

    If ``OUTPUT`` is missing and an old copy ``.NAME.fruitlens-old-<run>`` exists (a run
    killed between its two renames), rename it back; then delete every leftover
    ``.NAME.fruitlens-staging-*`` / ``.NAME.fruitlens-old-*`` sibling. Returns True if
    the output was restored.
    """
    store, root = _store or _store_for(uri)
    if store.kind == "object":
        return False
    if store.kind == "local":
        parent, name = os.path.dirname(root), os.path.basename(root)
    else:
        parent, _, name = root.rpartition("/")
    name = _sibling_stem(name)
    prefix_staging, prefix_old = f".{name}{STAGING_TAG}", f".{name}{OLD_TAG}"
    siblings = store.listdir(parent)
    restored = False
    olds = [
        s for s in siblings if s.startswith(prefix_old) and re.fullmatch(_RUN, s[len(prefix_old) :])
    ]
    if olds and store.stat(root) == "missing":
        store.rename(store.join(parent, olds[0]), root)
        restored = True
    for sibling in siblings:
        for prefix in (prefix_staging, prefix_old):
            if sibling.startswith(prefix) and re.fullmatch(_RUN, sibling[len(prefix) :]):
                path = store.join(parent, sibling)
                if store.stat(path) != "missing":
                    store.delete_tree(path)
    return restored


# --------------------------------------------------------------------------------------
# Reading and verifying
# --------------------------------------------------------------------------------------


def verify(uri: str, *, _store: tuple[Any, str] | None = None) -> Manifest:
    """Check that ``uri`` is a complete fruitlens output; return its manifest.

    Every file the ``_SUCCESS`` manifest lists must exist with its size (and sha256 for
    the JSON files). Works on local folders, ``file:``, ``s3://`` and ``gs://``.

    Raises:
        OutputError: no manifest, not a fruitlens manifest, or a listed file missing or
            different (an interrupted or concurrent run).
    """
    store, root = _store or _store_for(uri)
    if store.stat(store.join(root, MANIFEST)) == "missing":
        raise OutputError(f"{uri} is not a committed fruitlens output: no {MANIFEST} manifest")
    manifest = _parse_manifest(store.read(store.join(root, MANIFEST)), uri)
    if manifest is None:
        raise OutputError(f"{uri}: {MANIFEST} is not a fruitlens manifest")
    present = store.files(root)
    for rel, entry in manifest.files.items():
        if rel not in present:
            raise OutputError(f"{uri} is incomplete: {rel} is missing")
        if present[rel] != entry.get("size"):
            raise OutputError(
                f"{uri} is inconsistent: {rel} has {present[rel]} bytes, the manifest "
                f"says {entry.get('size')}"
            )
        if "sha256" in entry and _sha256(store.read(store.join(root, rel))) != entry["sha256"]:
            raise OutputError(f"{uri} is inconsistent: {rel} does not match its manifest")
    for alias, real in manifest.aliases.items():
        if real not in manifest.files:
            raise OutputError(f"{uri}: manifest alias {alias} names an unlisted file")
        sha = manifest.files[real].get("sha256")
        if alias not in present or _sha256(store.read(store.join(root, alias))) != sha:
            manifest.stale_aliases.append(alias)
    manifest.unlisted_parts = sorted(p for p in present if _is_part(p) and p not in manifest.files)
    return manifest


def part_uris(uri: str) -> list[str]:
    """URIs of the Parquet parts of the committed output at ``uri`` (verified), e.g. for
    ``spark.read.parquet(*fruitlens.output.part_uris(out))``."""
    return verify(uri).part_uris()


def read_output(uri: str, columns: list[str] | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """Read a committed output: ``(table, pca, summary)`` — a ``pyarrow.Table`` of the
    parts the manifest lists, the fitted :class:`fruitlens.PCA` and the summary dict."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ._core import PCA

    store, root = _store_for(uri)
    manifest = verify(uri, _store=(store, root))
    fs = store.fs if store.kind == "object" else None
    tables = [
        pq.read_table(store.join(root, rel), columns=columns, filesystem=fs)
        for rel in manifest.parts
    ]
    table = pa.concat_tables(tables) if tables else None
    pca = PCA.from_json(store.read(store.join(root, manifest.pca_path)).decode("utf-8"))
    summary = json.loads(store.read(store.join(root, manifest.summary_path)).decode("utf-8"))
    return table, pca, summary


def checked_read(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a local file; if it lies inside a fruitlens output whose manifest
    lists it (or it is a fixed-name copy of a listed file), checked against the manifest
    (the listed original is read when the copy is stale).

    Raises:
        OutputError: the file belongs to an output but does not match its manifest.
    """
    path = os.fspath(path)
    real = os.path.realpath(path)
    folder = os.path.dirname(real)
    candidates = [(folder, os.path.basename(real))]
    if os.path.basename(folder) == "_pca":
        candidates.insert(0, (os.path.dirname(folder), "_pca/" + os.path.basename(real)))
    for root, rel in candidates:
        marker = os.path.join(root, MANIFEST)
        if not os.path.isfile(marker):
            continue
        with open(marker, "rb") as handle:
            manifest = _parse_manifest(handle.read(), root)
        if manifest is None:
            break  # an older fruitlens or Spark's empty marker: nothing to check against
        listed = manifest.aliases.get(rel, rel)
        entry = manifest.files.get(listed)
        if entry is None:
            raise OutputError(
                f"{path} is not part of the committed output {root} (its {MANIFEST} "
                "manifest does not list it): the output is incomplete or being replaced"
            )
        with open(os.path.join(root, *listed.split("/")), "rb") as handle:
            data = handle.read()
        if "sha256" in entry and _sha256(data) != entry["sha256"]:
            raise OutputError(
                f"{path} does not match the {MANIFEST} manifest of {root}: the output is "
                "incomplete or being replaced; run fruitlens again"
            )
        return data
    with open(path, "rb") as handle:
        return handle.read()
