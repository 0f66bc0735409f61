"""Checkpoints imported from DeepMind's own files into perceiver-cli's cache, and the import itself.

The perceiver-cli cache is ``$PERCEIVER_CLI_CACHE``, else ``$XDG_CACHE_HOME/perceiver-cli``, else
``~/.cache/perceiver-cli``. ``perceiver weights import FILE`` writes ``imported/<name>/`` there, where
``<name>`` is the short name of the recognised DeepMind file (or ``--name``); with ``-o DIR`` and ``--name``
the name is recorded in ``imported/names.json`` and points at DIR.
"""

from __future__ import annotations

import json
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from perceiver_cli.errors import UsageError, WeightsError
from perceiver_cli.io.atomic import atomic_folder, atomic_write, check_output_folder
from perceiver_cli.weights.folder import is_complete
from perceiver_cli.weights.hub import display_path
from perceiver_cli.weights.registry import Checkpoint, identify_original, sha256_file
from perceiver_cli.core.spec import InvalidConfig, check_spec, spec_from_config
from perceiver_cli.weights import haiku

MANIFEST = "perceiver-import.json"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def cache_dir() -> Path:
    """perceiver-cli's own cache folder ($PERCEIVER_CLI_CACHE, $XDG_CACHE_HOME/perceiver-cli, ~/.cache/...)."""
    explicit = os.environ.get("PERCEIVER_CLI_CACHE")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg).expanduser() / "perceiver-cli"


def imported_dir() -> Path:
    """Where `perceiver weights import` puts converted checkpoints."""
    return cache_dir() / "imported"


def _names_file() -> Path:
    return imported_dir() / "names.json"


def _read_names() -> dict[str, str]:
    try:
        data = json.loads(_names_file().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _register_name(name: str, directory: Path) -> None:
    names = _read_names()
    names[name] = str(Path(directory).resolve())
    _names_file().parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(_names_file(), "w", encoding="utf-8") as stream:
        json.dump(names, stream, indent=2, ensure_ascii=False)
        stream.write("\n")


def read_manifest(directory: Path) -> Optional[dict[str, Any]]:
    """The import record of a checkpoint directory made by `perceiver weights import`, or None."""
    try:
        data = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def imported_checkpoints() -> dict[str, Path]:
    """Every imported checkpoint by name: folders under imported/ and names recorded in names.json."""
    found: dict[str, Path] = {}
    root = imported_dir()
    if root.is_dir():
        for child in sorted(root.iterdir()):
            if child.is_dir() and not child.name.startswith(".") and is_complete(child):
                found[child.name] = child
    for name, target in _read_names().items():
        if name not in found and is_complete(Path(target)):
            found[name] = Path(target)
    return found


def find_imported(name: str) -> Optional[Path]:
    """The directory of a checkpoint imported under `name`, or None."""
    return imported_checkpoints().get(name)


def import_of(path: Path, digest: Optional[str]) -> Optional[Path]:
    """An existing import of this very file: same path, size and mtime, or (given) the same SHA-256."""
    stat = path.stat()
    for directory in imported_checkpoints().values():
        source = (read_manifest(directory) or {}).get("source") or {}
        same_file = (source.get("path") == str(path.resolve()) and source.get("bytes") == stat.st_size
                     and source.get("mtime_ns") == stat.st_mtime_ns)
        if same_file or (digest is not None and source.get("sha256") == digest):
            return directory
    return None


@dataclass
class ImportResult:
    """What `import_deepmind_file` did: where the checkpoint is, what it is, and whether it was new."""

    directory: Path
    name: Optional[str]
    kind: str
    sha256: str
    known: Optional[Checkpoint]
    created: bool


def _write_checkpoint(directory: Path, state: dict[str, Any], config: dict[str, Any],
                      manifest: dict[str, Any], replace: bool) -> None:
    """Write config.json + model.safetensors + the manifest into `directory` atomically; consumes `state`."""
    from safetensors.numpy import save_file

    if directory.exists() and not replace:
        raise WeightsError(f"{directory} already exists")
    with atomic_folder(directory) as tmp:
        (tmp / "config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n",
                                         encoding="utf-8")
        # safetensors copies from each array's memory as it lies: transposed views must be made contiguous.
        # Popping each view as it is copied lets its source array go, so memory stays near one model's size.
        dense = {}
        for key in list(state):
            value = state.pop(key)
            dense[key] = value if value.flags.c_contiguous else value.copy(order="C")
            del value
        save_file(dense, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        del dense
        manifest["files"] = {name: sha256_file(tmp / name) for name in ("config.json", "model.safetensors")}
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")


def _check_against_core(state: dict[str, Any], config: dict[str, Any], source: str) -> None:
    """Refuse converted weights that the network their config describes would not load strictly."""
    import torch

    from perceiver_cli.core.loading import state_dict_problems
    from perceiver_cli.core.models import build_model

    try:
        spec = spec_from_config(config)
        check_spec(spec)
    except InvalidConfig as exc:
        raise WeightsError(f"{source}: {exc}") from None
    with torch.device("meta"):
        model = build_model(spec, "transformers")
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    problems = state_dict_problems(expected, {key: tuple(value.shape) for key, value in state.items()})
    if problems:
        kind = config["architectures"][0]
        raise WeightsError(f"{source}: the converted weights do not fit a {kind} ({'; '.join(problems)})")


def _warn(message: str) -> None:
    print(f"perceiver: warning: {message}", file=sys.stderr)


def import_deepmind_file(source: Path, out_dir: Optional[Path] = None, name: Optional[str] = None,
                         force: bool = False, quiet: bool = False, digest: Optional[str] = None) -> ImportResult:
    """Convert a DeepMind Haiku pickle into a checkpoint directory (config.json + model.safetensors).

    Without `out_dir` it goes to imported/<name> in the perceiver-cli cache, where `name` defaults to the
    short name of the matching DeepMind file. A file matching none of the six published digests is refused
    unless `force` (then a warning); `force` also replaces an existing, different import. `digest` is the
    file's SHA-256 when the caller has already computed it.
    """
    source = Path(source)
    if not source.is_file():
        raise WeightsError(f"{source}: no such file")
    if name is not None and not _NAME_RE.fullmatch(name):
        raise UsageError(f"--name '{name}': use letters, digits, '.', '_' or '-' (no '/'), at most 64")
    known, digest = identify_original(source, digest)
    size = source.stat().st_size
    if known is None:
        what = (f"{source.name} ({size} bytes, sha256 {digest[:12]}...) matches none of DeepMind's six "
                "published Perceiver IO files")
        if not force:
            raise WeightsError(f"{what}; if you trust it, run: perceiver weights import {source} --force")
        if not quiet:
            _warn(f"{what}; importing it anyway (--force)")
    name = name or (known.name if known else None)
    if out_dir is None:
        name = name or f"sha256-{digest[:16]}"
        target = imported_dir() / name
    else:
        target = Path(out_dir)
    check_output_folder(target)
    previous = read_manifest(target) if target.exists() else None
    if previous is not None and (previous.get("source") or {}).get("sha256") == digest and is_complete(target):
        if out_dir is not None and name:
            _register_name(name, target)
        return ImportResult(target, name, str(previous.get("kind")), digest, known, created=False)
    if target.exists() and any(target.iterdir()) and not force:
        raise WeightsError(f"{target} already holds something else; choose another "
                           f"{'-o DIR' if out_dir is not None else '--name'} or add --force to replace it")
    if not quiet:
        print(f"perceiver: converting {source.name} into {display_path(target)}", file=sys.stderr)
    kind, state, config = haiku.convert_haiku_file(source)
    if known is not None and known.architecture != config["architectures"][0]:
        raise WeightsError(f"{source}: its digest is DeepMind's {known.original.file}, but it holds a {kind} "
                           "network")
    _check_against_core(state, config, str(source))
    stat = source.stat()
    manifest = {
        "name": name,
        "kind": kind,
        "architecture": config["architectures"][0],
        "source": {"file": source.name, "path": str(source.resolve()), "bytes": stat.st_size,
                   "mtime_ns": stat.st_mtime_ns, "sha256": digest,
                   "deepmind_original": known.name if known else None},
    }
    _write_checkpoint(target, state, config, manifest, replace=True)
    if out_dir is not None and name:
        _register_name(name, target)
    return ImportResult(target, name, kind, digest, known, created=True)
