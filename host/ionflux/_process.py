"""Process plumbing shared by the parts that start child processes (the
nats-server the triggers start, the HTTP workers of `ionflux up`)."""

from __future__ import annotations

import signal


def die_with_parent() -> None:
    """In the child: SIGTERM when the host dies, even by SIGKILL (Linux ``PR_SET_PDEATHSIG``).

    The signal follows the thread that started the server, so ``start()`` must be
    called from a long-lived thread (the host's main thread), not a pool worker.
    """
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
