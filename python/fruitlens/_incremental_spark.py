"""The featurize pass of ``fruitlens run --incremental`` on Spark (``--engine spark``,
``--master``, ``--remote`` (Spark Connect), or a given session): the new and changed
images are read and embedded by Spark's tasks; their rows come back to the driver,
which spills them in listing order as the native pass does
(:class:`fruitlens._native_embed.Featurized`), so that the rest of the incremental run
(:mod:`fruitlens._incremental`) is the same on both engines.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pyarrow as pa

from . import spark as fl_spark
from ._errors import FruitlensError
from ._lineage import OUTPUT_SCHEMA
from ._listing import ImageRef
from ._native_embed import ROW_NAMES, Featurized
from ._pca import PCAStats
from ._session import SqlConf, stop_session
from .spark._featurize import featurize_refs

if TYPE_CHECKING:
    from .pipeline import RunConfig

__all__ = ["LazySession", "featurize_on_spark"]


class LazySession:
    """The Spark session of an incremental run on Spark: ``spark`` (given), else made by
    ``start()`` (``(session, created)``, as ``fruitlens._session.get_session``) on the
    first call, so that a run with nothing to embed starts no JVM. :meth:`stop` stops
    it if it was created here; :attr:`spark` is None until then."""

    def __init__(self, spark: Any, start: Callable[[], tuple[Any, bool]]) -> None:
        self.spark, self.start = spark, start
        self.created = False

    def __call__(self) -> Any:
        if self.spark is None:
            self.spark, self.created = self.start()
        return self.spark

    def stop(self) -> None:
        if self.created:
            stop_session(self.spark)


#: The spilled rows' schema (:data:`ROW_NAMES`, the output's types).
_ROW_SCHEMA = pa.schema([OUTPUT_SCHEMA.field(name) for name in ROW_NAMES])


def featurize_on_spark(
    spark: Any, config: RunConfig, todo: list[ImageRef], spill: str, model: str, progress: Any
) -> Featurized | None:
    """The featurize pass over ``todo`` on Spark: the tasks read and embed the files,
    the rows come back to this driver a partition at a time (``collect_arrow_batches``)
    and are spilled, counted and (``--refit``) their PCA statistics gathered here, then
    put in listing order (without holding them all: a second spill when Spark returned
    them in another order). Every image gives exactly one row, or nothing is written."""
    if not todo:
        return None
    where = {r.path: i for i, r in enumerate(todo)}
    df = featurize_refs(
        spark,
        todo,
        model=model,
        size=config.size,
        batch_size=config.batch_size,
        threads=config.threads,
        resize=config.resize,
        partitions=config.partitions,
    ).select(*ROW_NAMES)
    out = Featurized(spill + ".unordered", [])
    positions: list[np.ndarray] = []
    with SqlConf(spark, {"spark.sql.session.timeZone": "UTC"}):
        with pa.ipc.new_file(out.spill, _ROW_SCHEMA) as writer:
            for batch in fl_spark.collect_arrow_batches(df):
                batch = pa.Table.from_batches([batch]).cast(_ROW_SCHEMA).to_batches()[0]
                paths = batch.column(0).to_pylist()
                positions.append(np.array([where.get(p, -1) for p in paths], np.int64))
                writer.write_batch(batch)
                out.count(batch)
                features = batch.column(2)
                if config.refit and len(features) > features.null_count:
                    out.stats = out.stats or PCAStats(len(features.drop_null()[0]))
                    out.stats.update(features)
                progress.add(batch.num_rows)
    at = np.concatenate(positions) if positions else np.zeros(0, np.int64)
    if len(at) != len(todo) or (at < 0).any() or len(np.unique(at)) != len(todo):
        raise FruitlensError(
            f"Spark gave {len(at)} rows for {len(todo)} images (lost, repeated or unknown "
            "paths): nothing written"
        )
    out.order = list(range(len(positions)))
    if (np.diff(at) > 0).all():  # in listing order already (the usual case)
        os.replace(out.spill, spill)
        out.spill = spill
        return out
    with pa.memory_map(out.spill) as source:  # mapped; 1,024 rows in memory at a time
        table = pa.ipc.open_file(source).read_all()
        permutation = np.argsort(at, kind="stable")
        with pa.ipc.new_file(spill, _ROW_SCHEMA) as writer:
            for start in range(0, len(permutation), 1024):
                rows = table.take(pa.array(permutation[start : start + 1024]))
                writer.write_batch(rows.combine_chunks().to_batches()[0])
        out.order = list(range(-(-len(permutation) // 1024)))
    os.remove(out.spill)
    out.spill = spill
    return out
