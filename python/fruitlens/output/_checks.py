"""Where an output may go: never the input, inside it or around it (through symbolic
links, ``..``, ``file:`` URIs, globs or bind mounts), never a bucket or filesystem root,
never a mount point."""

from __future__ import annotations

import os
import re

from .. import _uri
from .._common import GLOB_CHARS, has_glob
from .._errors import OutputError

__all__ = ["check_paths", "identity", "is_mount_point", "mounts", "on_device"]

#: Object-store schemes that name the same store (``s3a://b/x`` is ``s3://b/x``).
_SAME_STORE = {"s3a": "s3", "s3n": "s3", "gcs": "gs"}


def identity(uri: str, pattern: bool = False) -> tuple[str, str, tuple[str, ...]]:
    """(kind, authority, path components) that two URIs share when they name the same
    place: local paths resolved (symlinks, ``..``, ``file:``, trailing ``/``); with
    ``pattern`` (INPUT), a glob (local, or any Hadoop/object-store URI) stands for the
    folder it starts from."""
    if _uri.is_local(uri):
        text = _uri.local_path(uri)
        glob = min((i for i, c in enumerate(text) if c in GLOB_CHARS), default=-1)
        if pattern and glob >= 0 and not os.path.lexists(text):  # a glob: the folder it starts from
            text = os.path.dirname(text[:glob])
        real = os.path.realpath(text)
        return "file", "", tuple(p for p in real.split(os.sep) if p)
    kind, authority, path = _uri.split_uri(uri)
    kind = _SAME_STORE.get(kind, kind)
    parts = tuple(p for p in path.split("/") if p)
    globbed = [i for i, p in enumerate(parts) if pattern and has_glob(p)]
    if globbed:  # Spark expands globs in object-store/Hadoop paths too
        parts = parts[: globbed[0]]
    if kind not in ("s3", "gs"):  # hdfs://nn, hdfs://nn:8020 and hdfs:/// may be one place
        authority = "*"
    return kind, authority, parts


def _mount_parts(text: str) -> tuple[str, ...]:
    text = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), text)
    return tuple(p for p in text.split("/") if p)


def mounts() -> list[tuple[tuple[str, ...], str, tuple[str, ...]]]:
    """(mount point, device, folder of that device mounted there) of every mount, in
    mount order (Linux ``/proc/self/mountinfo``; empty elsewhere)."""
    try:
        with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        fields = line.split(" ")
        if len(fields) > 4:
            out.append((_mount_parts(fields[4]), fields[2], _mount_parts(fields[3])))
    return out


def on_device(parts: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """A resolved local path as (device, path inside that device's filesystem), so that
    a bind mount of a folder and the folder itself compare equal; ``("", parts)`` when
    the mounts are unknown. A mount point (a filesystem root) has no parts."""
    best: tuple[tuple[str, ...], str, tuple[str, ...]] | None = None
    for mount in mounts():
        point = mount[0]
        if parts[: len(point)] == point and (best is None or len(point) >= len(best[0])):
            best = mount  # the last mount on the longest matching point is the visible one
    if best is None:
        return "", parts
    return best[1], best[2] + parts[len(best[0]) :]


def is_mount_point(path: str) -> bool:
    """True if the resolved local ``path`` is where a filesystem (or a bind mount) is
    mounted: it cannot be renamed or swapped."""
    parts = tuple(p for p in path.split(os.sep) if p)
    return os.path.ismount(path) or any(point == parts for point, _, _ in mounts())


def _check_place(output_uri: str, okind: str, opath: tuple[str, ...]) -> None:
    """Refuse a bucket, a filesystem root or a mount point as OUTPUT."""
    if okind in ("s3", "gs") and not opath:
        raise OutputError(
            f"output {output_uri} is a whole bucket: fruitlens writes into a folder inside "
            f"it, e.g. {output_uri.rstrip('/')}/fruitlens-output"
        )
    if not opath:
        raise OutputError(
            f"output {output_uri} is a filesystem root: choose a new folder for the output"
        )
    if okind == "file" and is_mount_point(os.path.join(os.sep, *opath)):
        raise OutputError(
            f"output {output_uri} is a mount point: fruitlens replaces its output folder "
            "as a whole, so it writes a folder inside it, e.g. "
            f"{output_uri.rstrip('/')}/fruitlens-output"
        )


def check_paths(input_uri: str, output_uri: str) -> None:
    """Refuse an OUTPUT that is, contains or lies inside INPUT, or is a root.

    Raises:
        OutputError: with a one-line message that says how to proceed.
    """
    ikind, iauth, ipath = identity(input_uri, pattern=True)
    okind, oauth, opath = identity(output_uri)
    _check_place(output_uri, okind, opath)
    if ikind == okind == "file":  # a bind mount of a folder is that folder
        (iauth, ipath), (oauth, opath) = on_device(ipath), on_device(opath)
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
