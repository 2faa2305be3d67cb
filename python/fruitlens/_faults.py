"""Test-only fault injection: ``FRUITLENS_TEST_KILL=<point>`` kills (or signals) the
process when it reaches a named point of a run or of the output commit protocol.

Points are named where they are reached (``featurize``, ``parts-written``,
``before-manifest``, ``before-swap``, ``after-swap``, ``old-moved``, ``after-manifest``,
``before-cleanup``); nothing happens unless the variable names that point.
"""

from __future__ import annotations

import os
import signal
import threading

__all__ = ["KILL_ENV", "kill_point"]

#: Test-only: ``FRUITLENS_TEST_KILL=<point>`` SIGKILLs the process at that commit point.
KILL_ENV = "FRUITLENS_TEST_KILL"


def kill_point(point: str) -> None:
    """Test-only fault injection (``FRUITLENS_TEST_KILL``): ``POINT`` SIGKILLs this
    process when it reaches ``POINT``; ``POINT:SIGNAL:SECONDS`` (e.g.
    ``featurize:SIGINT:3``) sends ``SIGNAL`` that many seconds after reaching it."""
    spec = os.environ.get(KILL_ENV)
    if not spec or spec.split(":")[0] != point:
        return
    parts = spec.split(":")
    if len(parts) == 1:
        os.kill(os.getpid(), signal.SIGKILL)
        return
    signum = getattr(signal, parts[1])
    timer = threading.Timer(float(parts[2]), os.kill, (os.getpid(), signum))
    timer.daemon = True
    timer.start()
