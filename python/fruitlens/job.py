"""spark-submit entry point: ``fruitlens run`` as a Spark application.

Either::

    spark-submit [spark options] "$(python -c 'import fruitlens.job as j; print(j.__file__)')" \
        INPUT OUTPUT [options]
    python -m fruitlens.job INPUT OUTPUT [options]

Inside ``spark-submit`` the session it configured is
used (``--master`` and friends belong to ``spark-submit``); run directly with
``python -m``, it behaves like ``fruitlens run``. The options are the same as
``fruitlens run --help``; the summary is printed as JSON on stdout.
"""

from __future__ import annotations

import argparse
import json
import sys

from fruitlens._args import add_run_arguments
from fruitlens._logs import guard
from fruitlens.pipeline import RunConfig, format_summary, run

__all__ = ["build_parser", "main"]

PROG = "fruitlens.job"


def build_parser() -> argparse.ArgumentParser:
    """The job's parser: ``fruitlens run``'s arguments."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="fruitlens run as a Spark application (for spark-submit): images → "
        "features → PCA → Parquet.",
    )
    return add_run_arguments(parser)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m fruitlens.job``: the summary as JSON on stdout."""
    args = build_parser().parse_args(argv)

    def run_job() -> int:
        summary = run(RunConfig.from_args(args))
        print(format_summary(summary), file=sys.stderr)
        print(json.dumps(summary))
        return 0

    return guard(run_job, prog=PROG)


if __name__ == "__main__":
    sys.exit(main())
