"""Shell completion of option values (after `perceiver --install-completion`): each option's choices, read from
their one home when the shell asks, so the command line's start-up stays light."""

from __future__ import annotations

from typing import Callable, Iterable, Union

Values = Union[Iterable[str], Callable[[], Iterable[str]]]


def _names(values: Values) -> list[str]:
    """The choices as typed: a callable is asked now; a leading dot (a suffix) is dropped."""
    found = values() if callable(values) else values
    return list(dict.fromkeys(value.lstrip(".") for value in found))


def choices(values: Values) -> Callable[[str], list[str]]:
    """Completion of one value among `values`."""
    def complete(incomplete: str) -> list[str]:
        return [value for value in _names(values) if value.startswith(incomplete)]

    return complete


def comma_list(values: Values) -> Callable[[str], list[str]]:
    """Completion of the last item of a comma-separated list of `values`, each at most once."""
    def complete(incomplete: str) -> list[str]:
        done, _, last = incomplete.rpartition(",")
        taken = set(done.split(",")) if done else set()
        prefix = f"{done}," if done else ""
        return [prefix + value for value in _names(values) if value.startswith(last) and value not in taken]

    return complete


def numerics() -> list[str]:
    """The --numerics choices (core.spec's table, plain data)."""
    from perceiver_cli.core.spec import NUMERICS

    return list(NUMERICS)


def flow_styles() -> tuple[str, ...]:
    """The --style choices."""
    from perceiver_cli.io.flowviz import FLOW_STYLES

    return FLOW_STYLES


def legend_corners() -> tuple[str, ...]:
    """The --legend choices."""
    from perceiver_cli.io.flowviz import LEGEND_CORNERS

    return LEGEND_CORNERS
