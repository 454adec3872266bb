"""Test-only kill points for tests/test_chaos.py: the chaos test makes a job kill its own process
group at a named point (inside weights, prep, train, merge, evaluate, bundle) so that "kill it anywhere,
run the same command again" is tested at exactly those points, not wherever a timer happens to land.

Nothing happens unless $TUNEBOX_TEST_KILL_POINT equals the point's name; never set it outside the tests.
$TUNEBOX_TEST_KILL_SIGNAL picks the signal (KILL by default; INT is Ctrl-C). The train callbacks carry
a copy (tunebox/model/mf_extensions.py, _test_kill_point): that module is loaded on its own.
"""

from __future__ import annotations

import os
import signal

KILL_POINT_ENV = "TUNEBOX_TEST_KILL_POINT"
KILL_SIGNAL_ENV = "TUNEBOX_TEST_KILL_SIGNAL"


def kill_point(name: str) -> None:
    """Signal this process's whole group when the test asked for this point."""
    if os.environ.get(KILL_POINT_ENV) == name:
        os.killpg(os.getpgrp(), getattr(signal, "SIG" + os.environ.get(KILL_SIGNAL_ENV, "KILL")))
