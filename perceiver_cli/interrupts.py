"""Ctrl-C and SIGTERM for the `perceiver` command: the run stops at the next safe point, whatever it was doing.

`install(starting=True)` is the first thing the command does. From then on a signal sets a flag that nothing can
lose, and also raises KeyboardInterrupt in the main thread (so a long computation stops at once) unless the
code is inside `deferred()` (a few lines that must not be cut in two, such as creating a temporary file and
recording it), where it is raised when the block ends. A KeyboardInterrupt swallowed somewhere (a finaliser,
a library's callback) still leaves the flag set: `check()` at safe points raises it again, and the command's
exit code is 130 whatever happened after. Until the command's own error handling is in place (`started()`),
a signal prints "perceiver: interrupted" and exits 130 at once: nothing has been written yet.
Used as a library (no `install`), Python's own Ctrl-C behaviour is unchanged.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Iterator

MESSAGE = "perceiver: interrupted"
EXIT_INTERRUPTED = 130
SIGNALS = (signal.SIGINT, signal.SIGTERM)

_state = {"installed": False, "starting": False, "requested": False, "deferred": 0}


def _handler(signum, frame) -> None:  # noqa: ARG001
    _state["requested"] = True
    if _state["starting"]:
        os.write(2, (MESSAGE + "\n").encode())
        os._exit(EXIT_INTERRUPTED)
    if _state["deferred"]:
        return
    raise KeyboardInterrupt


def install(starting: bool = True) -> None:
    """Handle SIGINT and SIGTERM as described above (main thread only); `starting`: exit at once until started()."""
    _state["starting"] = starting
    _state["installed"] = True
    for signum in SIGNALS:
        signal.signal(signum, _handler)


def started() -> None:
    """The command's error handling is in place: from now on a signal raises KeyboardInterrupt."""
    _state["starting"] = False


def installed() -> bool:
    """Whether `install` has run in this process."""
    return _state["installed"]


def requested() -> bool:
    """Whether SIGINT or SIGTERM has arrived since `install`."""
    return _state["requested"]


def check() -> None:
    """A safe point: raise KeyboardInterrupt if a signal has arrived, even one whose exception was lost."""
    if _state["requested"]:
        raise KeyboardInterrupt


def ignore_further() -> None:
    """Ignore later signals while the interpreter exits (one more must not turn exit 130 into death by signal)."""
    for signum in SIGNALS:
        signal.signal(signum, signal.SIG_IGN)


@contextmanager
def deferred() -> Iterator[None]:
    """A block that a signal does not cut in two: the KeyboardInterrupt is raised when it ends. Only the main
    thread is ever cut by a signal, so elsewhere the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _state["deferred"] += 1
    try:
        yield
    finally:
        _state["deferred"] -= 1
        if _state["installed"] and _state["deferred"] == 0 and _state["requested"]:
            raise KeyboardInterrupt
