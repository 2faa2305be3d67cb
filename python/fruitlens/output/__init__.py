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

An incremental run (``fruitlens run --incremental``) may keep parts of the previous
output as they are (:meth:`OutputTarget.reuse`): a hard link (or a copy) in the staging
folder, or on object stores the same object, listed in the new manifest as well (so
neither the commit nor an abort deletes it).

Readers that honour the manifest (:func:`verify`, :func:`read_output`,
:func:`part_uris`, ``fruitlens.PCA.load`` on an output's ``_pca/pca.json``) always see
one complete output. A reader that ignores it (``spark.read.parquet(OUTPUT)``,
``pyarrow.dataset``) sees exactly the old or the new parts on local folders; on an object
store it can see the parts of both runs while a run publishes (between its first part
and the deletion of the old parts, or after a run killed in between, until the next
run), and the fixed-name ``_pca/pca.json`` / ``_summary.json`` can be the old run's for
the moment between the manifest PUT and their own PUT.

Layout: the manifest format is :mod:`fruitlens._manifest` (also read by
``fruitlens.PCA.load``); here ``_stores`` (local, pyarrow and Hadoop stores),
``_checks`` (where an output may go), ``_existing`` (what is at OUTPUT before a run),
``_recover`` (hidden siblings), ``_parts`` (Parquet parts), ``_target``
(:class:`OutputTarget`: write, commit, abort) and ``_read`` (:func:`verify`, readers).
"""

from __future__ import annotations

from .._faults import KILL_ENV as KILL_ENV
from .._manifest import (
    MANIFEST,
    MANIFEST_FORMAT,
    PCA_FILE,
    SUMMARY_FILE,
    Manifest,
    checked_read,
)
from .._manifest import MANIFEST_VERSION as MANIFEST_VERSION
from ._checks import check_paths
from ._read import part_uris, read_output, verify
from ._recover import OLD_TAG as OLD_TAG
from ._recover import STAGING_TAG as STAGING_TAG
from ._recover import recover
from ._stores import NO_EXCHANGE_ENV as NO_EXCHANGE_ENV
from ._target import OutputTarget

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
