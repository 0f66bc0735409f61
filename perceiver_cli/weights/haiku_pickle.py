"""Reading DeepMind's Haiku parameter pickles without running anything they hold.

Each pickle holds Haiku's two-level mapping ``{module path: {parameter name: array}}``, bare or wrapped as
``{'params': ..., 'state': ...}``. :class:`RestrictedUnpickler` resolves only the few globals that numpy
arrays and plain containers need, and anything else is refused before it is called. What the parameters
mean (which network, which hub key) is perceiver_cli.weights.haiku's business.
"""

from __future__ import annotations

import collections
import pickle
from pathlib import Path
from typing import Any, BinaryIO, Callable, Mapping, Optional

import numpy as np

from perceiver_cli.errors import WeightsError

HaikuParams = dict[str, dict[str, Any]]

def _plain_mapping(data: Any = None, *rest: Any) -> dict:
    """Stand-in for Haiku's FlatMapping/FlatMap/frozendict: they pickle as Class(plain mapping)."""
    if rest or (data is not None and not isinstance(data, Mapping)):
        raise WeightsError("refusing to unpickle a Haiku mapping that does not reduce to a plain dict")
    return dict(data or {})


def _latin1_bytes(text: str, encoding: str = "latin1") -> bytes:
    """Stand-in for _codecs.encode, which protocol-2 pickles use for bytes; only latin-1 is meaningful."""
    if not isinstance(text, str) or encoding.lower().replace("_", "-") not in ("latin1", "latin-1"):
        raise WeightsError("refusing to unpickle _codecs.encode with anything but latin-1 text")
    return text.encode("latin-1")


def _allowed_globals() -> dict[tuple[str, str], Callable]:
    try:  # numpy 2 moved the implementation to numpy._core; old pickles still name numpy.core
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray
    allowed: dict[tuple[str, str], Callable] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("_codecs", "encode"): _latin1_bytes,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
        allowed[(module, "scalar")] = multiarray.scalar
    for name in ("FlatMapping", "FlatMap", "frozendict"):
        allowed[("haiku._src.data_structures", name)] = _plain_mapping
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that builds numpy arrays and plain containers, and refuses every other global."""

    _allowed: Optional[dict[tuple[str, str], Callable]] = None

    def find_class(self, module: str, name: str) -> Callable:
        """Resolve only allow-listed globals; anything else is refused before it can be called."""
        if RestrictedUnpickler._allowed is None:
            RestrictedUnpickler._allowed = _allowed_globals()
        target = RestrictedUnpickler._allowed.get((module, name))
        if target is None:
            raise WeightsError(f"refusing to unpickle {module}.{name}: not a plain array container")
        return target

    def persistent_load(self, pid: Any) -> Any:
        """Persistent ids would hand control to the caller's resolver; DeepMind's files have none."""
        raise WeightsError("refusing to unpickle a persistent id: not a plain array container")


def restricted_load(stream: BinaryIO, source: str = "pickle") -> Any:
    """Unpickle `stream` with :class:`RestrictedUnpickler`; every failure is a one-line WeightsError."""
    try:
        return RestrictedUnpickler(stream).load()
    except WeightsError as exc:
        raise WeightsError(f"{source}: {exc}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
            KeyError, MemoryError, OverflowError) as exc:
        raise WeightsError(f"{source}: not a readable parameter pickle ({type(exc).__name__}: "
                           f"{str(exc)[:120]})") from None


def _as_array(value: Any, where: str, source: str):
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray) or value.dtype.kind not in "biuf":
        raise WeightsError(f"{source}: {where} is a {type(value).__name__}"
                           f"{' of ' + str(value.dtype) if isinstance(value, np.ndarray) else ''}, "
                           "not a numeric array")
    return value


def _two_level(mapping: Any, what: str, source: str) -> HaikuParams:
    if not isinstance(mapping, Mapping):
        raise WeightsError(f"{source}: the {what} are a {type(mapping).__name__}, not a mapping of modules")
    out: HaikuParams = {}
    for module, params in mapping.items():
        if not isinstance(module, str) or not isinstance(params, Mapping):
            raise WeightsError(f"{source}: the {what} are not a mapping of module name -> parameters")
        out[module] = {str(name): _as_array(value, f"{module}/{name}", source) for name, value in params.items()}
    return out


def split_params_and_state(obj: Any, source: str = "pickle") -> tuple[HaikuParams, HaikuParams]:
    """Accept a bare params mapping or ``{'params': ..., 'state': ...}``; returns (params, state)."""
    if isinstance(obj, Mapping) and "params" in obj and set(obj) <= {"params", "state"}:
        return _two_level(obj["params"], "params", source), _two_level(obj.get("state") or {}, "state", source)
    return _two_level(obj, "params", source), {}


def read_haiku_file(path: Path) -> HaikuParams:
    """Read a DeepMind Haiku pickle safely; returns params and state merged as {module: {name: array}}."""
    try:
        with open(path, "rb") as stream:
            obj = restricted_load(stream, str(path))
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read ({exc.strerror or exc})") from None
    params, state = split_params_and_state(obj, str(path))
    merged = {module: dict(values) for module, values in params.items()}
    for module, values in state.items():
        clash = set(values) & set(merged.get(module, {}))
        if clash:
            raise WeightsError(f"{path}: {module}/{sorted(clash)[0]} is both a parameter and a state entry")
        merged.setdefault(module, {}).update(values)
    return merged
