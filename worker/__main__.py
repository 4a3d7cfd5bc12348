"""Entry point of ``embed-worker`` and ``python -m worker``.

Until the worker installs its own handlers (after imports and settings are loaded), SIGTERM means
nothing is in flight: exit at once, cleanly (code 0), instead of dying of the signal.
"""

import signal
import sys

signal.signal(signal.SIGTERM, lambda _signum, _frame: sys.exit(0))


def entry() -> int:
    from worker.cli import main

    return main()


if __name__ == "__main__":
    sys.exit(entry())
