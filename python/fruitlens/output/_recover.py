"""The hidden siblings of a local/Hadoop output (``.NAME.fruitlens-staging-<run>``,
``.NAME.fruitlens-old-<run>``), and :func:`recover`, which undoes what a run killed
mid-publish left of them."""

from __future__ import annotations

import hashlib
import os
import re
from typing import Any

from ._stores import store_for

__all__ = ["OLD_TAG", "RUN", "STAGING_TAG", "parent_and_stem", "recover", "sibling_stem"]

#: Suffixes of the hidden sibling folders of a local/Hadoop output.
STAGING_TAG = ".fruitlens-staging-"
OLD_TAG = ".fruitlens-old-"
#: A run id: 32 lower-case hex digits.
RUN = r"[0-9a-f]{32}"


def sibling_stem(name: str) -> str:
    """The output's name as used in its hidden siblings' names (``.NAME.fruitlens-...``):
    the name itself, or a digest of it when that would make a name too long (255 bytes)."""
    if len(os.fsencode(name)) <= 180:
        return name
    return "fruitlens-" + hashlib.sha256(os.fsencode(name)).hexdigest()[:40]


def parent_and_stem(store: Any, root: str) -> tuple[str, str]:
    """(parent folder of ``root``, stem of its hidden siblings' names)."""
    if store.kind == "local":
        return os.path.dirname(root), sibling_stem(os.path.basename(root))
    head, _, name = root.rpartition("/")
    return head, sibling_stem(name)


def recover(uri: str, *, _store: tuple[Any, str] | None = None) -> bool:
    """Local/Hadoop outputs: undo what a run killed mid-publish left.

    If ``OUTPUT`` is missing and an old copy ``.NAME.fruitlens-old-<run>`` exists (a run
    killed between its two renames), rename it back; then delete every leftover
    ``.NAME.fruitlens-staging-*`` / ``.NAME.fruitlens-old-*`` sibling. Returns True if
    the output was restored.
    """
    store, root = _store or store_for(uri)
    if store.kind == "object":
        return False
    parent, name = parent_and_stem(store, root)
    prefix_staging, prefix_old = f".{name}{STAGING_TAG}", f".{name}{OLD_TAG}"
    siblings = store.listdir(parent)
    restored = False
    olds = [
        s for s in siblings if s.startswith(prefix_old) and re.fullmatch(RUN, s[len(prefix_old) :])
    ]
    if olds and store.stat(root) == "missing":
        store.rename(store.join(parent, olds[0]), root)
        restored = True
    for sibling in siblings:
        for prefix in (prefix_staging, prefix_old):
            if sibling.startswith(prefix) and re.fullmatch(RUN, sibling[len(prefix) :]):
                path = store.join(parent, sibling)
                if store.stat(path) != "missing":
                    store.delete_tree(path)
    return restored
