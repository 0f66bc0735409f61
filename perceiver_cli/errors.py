"""Errors a user can cause, each with its documented exit code.

Exit codes: 0 success, 1 some inputs failed (the rest ran), 2 usage or setup error, 3 internal error, 130 interrupted.
"""

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3


class PerceiverError(Exception):
    """A problem the user can fix; printed as one line, never with a traceback."""

    exit_code = EXIT_USAGE


class UsageError(PerceiverError):
    """Bad options, bad arguments or a setup problem (missing weights, wrong model class)."""

    exit_code = EXIT_USAGE


class InputError(PerceiverError):
    """One input item (a file, a line of text) could not be processed; a batch goes on past it."""

    exit_code = EXIT_SOME_FAILED


class WeightsError(UsageError):
    """Weights that cannot be found, trusted or loaded."""
