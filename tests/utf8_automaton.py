"""Running core.text's UTF-8 automaton over bytes, as the constrained search does one byte at a time."""

from __future__ import annotations

from perceiver_cli.core.text import UTF8_TRANSITIONS


def is_valid_utf8(data: bytes) -> bool:
    """Whether the automaton accepts `data` (it should agree with bytes.decode('utf-8'))."""
    state = 0
    for byte in data:
        state = int(UTF8_TRANSITIONS[state, byte])
        if state == len(UTF8_TRANSITIONS):  # the dead state, one past the live ones
            return False
    return state == 0
