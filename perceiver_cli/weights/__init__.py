"""Where checkpoints come from: the registry of the six, the hub cache, and imports of DeepMind's own files.

A name resolves to a checkpoint directory (config.json + model.safetensors or pytorch_model.bin):

- an existing directory is used as it is;
- a DeepMind ``.pystate``/``.pickle`` file is imported once into
  ``<perceiver-cli cache>/imported/sha256-<first 16 hex>/`` and that directory is used;
- a short name (language, vision-conv, vision-fourier, vision-learned, flow, multimodal) or a hub repo id
  (``deepmind/...``) is looked up in the huggingface_hub cache (HF_HOME, HF_HUB_CACHE); a short name missing
  there falls back to a checkpoint imported under that name; when online, a missing hub checkpoint is
  downloaded once; offline, the error names what is missing and the command that fetches it;
- any other name is one given to ``perceiver weights import FILE --name NAME``.

The perceiver-cli cache is ``$PERCEIVER_CLI_CACHE``, else ``$XDG_CACHE_HOME/perceiver-cli``, else
``~/.cache/perceiver-cli``. ``perceiver weights import FILE`` writes ``imported/<name>/`` there, where
``<name>`` is the short name of the recognised DeepMind file (or ``--name``), so ``--model <name>`` finds it;
with ``-o DIR`` and ``--name`` the name is recorded in ``imported/names.json`` and points at DIR.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from perceiver_cli.errors import UsageError, WeightsError
from perceiver_cli.weights.hub import (HubUnavailable, cached_snapshot, display_path, download_snapshot,
                                       hub_cache_dir, offline_mode, weights_in)

DEEPMIND_SUFFIXES = (".pystate", ".pickle", ".pkl")
MANIFEST = "perceiver-import.json"
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class DeepMindOriginal:
    """One of DeepMind's published Haiku files: its name, size and SHA-256."""

    file: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Checkpoint:
    """A known checkpoint: short name, hub repo and revision, files to fetch, task, and DeepMind's original."""

    name: str
    repo: str
    revision: str
    files: tuple[str, ...]
    task: str
    architecture: str
    params: int
    original: DeepMindOriginal
    sha256: dict[str, str] = field(default_factory=dict, compare=False, hash=False)

    @property
    def weights_file(self) -> str:
        """The weights file fetched for this checkpoint (model.safetensors where the repo has it)."""
        return next(f for f in self.files if f != "config.json")


@lru_cache(maxsize=1)
def registry() -> dict[str, Checkpoint]:
    """The six known checkpoints from registry.json, by short name."""
    data = json.loads((Path(__file__).with_name("registry.json")).read_text(encoding="utf-8"))
    out = {}
    for item in data["checkpoints"]:
        original = DeepMindOriginal(**item["deepmind_original"])
        out[item["name"]] = Checkpoint(name=item["name"], repo=item["repo"], revision=item["revision"],
                                       files=tuple(item["files"]), task=item["task"],
                                       architecture=item["architecture"], params=int(item["params"]),
                                       original=original, sha256=dict(item.get("sha256") or {}))
    return out


def find_checkpoint(name_or_repo: str) -> Optional[Checkpoint]:
    """The registry entry for a short name or a hub repo id (case-insensitive), or None."""
    key = name_or_repo.strip().lower()
    for entry in registry().values():
        if key in (entry.name, entry.repo.lower()):
            return entry
    return None


# ---------------------------------------------------------------------------------------------------------
# Files and digests.


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    """Hex SHA-256 of a file, read in 4 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while True:
            block = stream.read(chunk)
            if not block:
                return digest.hexdigest()
            digest.update(block)


def git_blob_sha1(path: Path) -> str:
    """The git object id of a file (what the hub cache names small, non-LFS blobs by)."""
    data = Path(path).read_bytes()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def identify_original(path: Path, digest: Optional[str] = None) -> tuple[Optional[Checkpoint], str]:
    """Match a file against DeepMind's six originals by size and SHA-256; returns (entry or None, sha256)."""
    digest = digest or sha256_file(path)
    size = path.stat().st_size
    for entry in registry().values():
        if entry.original.sha256 == digest and entry.original.bytes == size:
            return entry, digest
    return None, digest


def is_deepmind_file(path: Path) -> bool:
    """Whether a path looks like one of DeepMind's Haiku pickles (by its suffix)."""
    return path.suffix.lower() in DEEPMIND_SUFFIXES


# ---------------------------------------------------------------------------------------------------------
# The perceiver-cli cache and imported checkpoints.


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


def _write_json_atomically(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            json.dump(obj, stream, indent=2, ensure_ascii=False)
            stream.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_manifest(directory: Path) -> Optional[dict[str, Any]]:
    """The import record of a checkpoint directory made by `perceiver weights import`, or None."""
    try:
        data = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _complete(directory: Path) -> bool:
    return (directory / "config.json").is_file() and weights_in(directory) is not None


def imported_checkpoints() -> dict[str, Path]:
    """Every imported checkpoint by name: folders under imported/ and names recorded in names.json."""
    found: dict[str, Path] = {}
    root = imported_dir()
    if root.is_dir():
        for child in sorted(root.iterdir()):
            if child.is_dir() and not child.name.startswith(".") and _complete(child):
                found[child.name] = child
    for name, target in _read_names().items():
        if name not in found and _complete(Path(target)):
            found[name] = Path(target)
    return found


def find_imported(name: str) -> Optional[Path]:
    """The directory of a checkpoint imported under `name`, or None."""
    return imported_checkpoints().get(name)


def _import_for_source(path: Path, digest: Optional[str]) -> Optional[Path]:
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

    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".tmp"))
    try:
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
        if directory.exists():
            if not replace:
                raise WeightsError(f"{directory} already exists")
            shutil.rmtree(directory)
        os.replace(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _check_against_core(state: dict[str, Any], config: dict[str, Any], source: str) -> None:
    """Refuse converted weights that the network their config describes would not load strictly."""
    import torch

    from perceiver_cli.core import build_model, spec_from_config

    with torch.device("meta"):
        model = build_model(spec_from_config(config), "transformers")
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    ours = {key: tuple(value.shape) for key, value in state.items()}
    problems = []
    for label, keys in (("missing", sorted(set(expected) - set(ours))), ("unexpected", sorted(set(ours) - set(expected))),
                        ("of the wrong shape", sorted(k for k in set(ours) & set(expected) if ours[k] != expected[k]))):
        if keys:
            problems.append(f"{len(keys)} {label}: {', '.join(keys[:2])}{' ...' if len(keys) > 2 else ''}")
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
    from perceiver_cli.weights.haiku import convert_haiku_file

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
    previous = read_manifest(target) if target.exists() else None
    if previous is not None and (previous.get("source") or {}).get("sha256") == digest and _complete(target):
        if out_dir is not None and name:
            _register_name(name, target)
        kind = str(previous.get("kind"))
        return ImportResult(target, name, kind, digest, known, created=False)
    if target.exists() and any(target.iterdir()) and not force:
        raise WeightsError(f"{target} already holds something else; choose another "
                           f"{'-o DIR' if out_dir is not None else '--name'} or add --force to replace it")
    if not quiet:
        print(f"perceiver: converting {source.name} into {display_path(target)}", file=sys.stderr)
    kind, state, config = convert_haiku_file(source)
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


def _register_name(name: str, directory: Path) -> None:
    names = _read_names()
    names[name] = str(Path(directory).resolve())
    _write_json_atomically(_names_file(), names)


# ---------------------------------------------------------------------------------------------------------
# Resolving a name.


def _missing_message(label: str, repo: str, why: str, entry: Optional[Checkpoint]) -> str:
    where = display_path(hub_cache_dir())
    fetch = f"perceiver weights download {entry.name if entry else repo}"
    hint = f"; with network access run: {fetch}"
    if entry is not None:
        hint += f"  (or import DeepMind's file: perceiver weights import {entry.original.file})"
    return f"checkpoint {label} is not in the local cache ({where}) and {why}{hint}"


def locate_checkpoint(name_or_path: str) -> Optional[Path]:
    """The local directory for a name, repo id or path, without downloading or importing; None if absent."""
    path = Path(name_or_path).expanduser()
    if _means_local(name_or_path):
        if path.is_dir():
            return path
        if path.is_file():
            return _import_for_source(path, None) if is_deepmind_file(path) else None
    entry = find_checkpoint(name_or_path)
    if entry is not None:
        return cached_snapshot(entry.repo, entry.revision) or find_imported(entry.name)
    imported = find_imported(name_or_path)
    if imported is not None:
        return imported
    if "/" in name_or_path:
        return cached_snapshot(name_or_path, "main")
    return None


def _written_as_path(text: str) -> bool:
    return text.startswith((".", "/", "~")) or text.endswith(("/", os.sep)) or os.path.isabs(text)


def _means_local(text: str) -> bool:
    """Whether a name-or-path `text` is the local file or folder of that name: it exists and is written as a
    path (./flow, flow/, /abs, ~/x) or is not the name of a known or imported checkpoint. A bare short name or
    repo id means the checkpoint even when the current folder holds an entry of that name (an output folder
    called `flow` must not stand in for the flow model)."""
    if not Path(text).expanduser().exists():
        return False
    return _written_as_path(text) or (find_checkpoint(text) is None and find_imported(text) is None)


def _looks_like_path(text: str) -> bool:
    suffixes = DEEPMIND_SUFFIXES + (".safetensors", ".bin", ".json")
    return "/" in text or os.sep in text or text.startswith((".", "~")) or Path(text).suffix.lower() in suffixes


def ensure_downloaded(name_or_repo: str) -> tuple[Path, bool]:
    """The cached snapshot of a known checkpoint or repo id, downloading it once if needed; (dir, downloaded)."""
    entry = find_checkpoint(name_or_repo)
    repo = entry.repo if entry else name_or_repo.strip()
    revision = entry.revision if entry else "main"
    label = f"'{entry.name}' ({repo})" if entry else f"'{repo}'"
    found = cached_snapshot(repo, revision)
    if found is not None:
        return found, False
    if offline_mode():
        raise WeightsError(_missing_message(label, repo, "HF_HUB_OFFLINE=1 forbids downloading", entry))
    def announce() -> None:
        print(f"perceiver: downloading {repo} into {display_path(hub_cache_dir())}", file=sys.stderr)

    try:
        folder = download_snapshot(repo, revision, entry.files if entry else None, announce)
    except HubUnavailable as exc:
        raise WeightsError(_missing_message(label, repo, f"the hub cannot be reached ({exc})", entry)) from None
    return folder, True


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """A checkpoint directory (config.json + weights) for a short name, hub repo id, directory or DeepMind file.

    A str is a name first: a known short name or repo id, or an imported checkpoint's name, is never read from
    a same-named entry of the current folder unless written as a path (see _means_local). A Path is always a
    file or folder (--weights). Downloads a missing hub checkpoint once when online; imports a DeepMind file
    once into the cache. Raises WeightsError (one line, with the command to run) when it cannot.
    """
    text = str(name_or_path)
    path = Path(text).expanduser()
    if isinstance(name_or_path, Path):
        if not path.exists():
            raise WeightsError(f"{text}: no such file or folder")
    elif not _means_local(text):
        return _resolve_name(text)
    if path.is_dir():
        if not (path / "config.json").is_file() and weights_in(path) is None:
            raise WeightsError(f"{path}: not a checkpoint folder (no config.json, and no model.safetensors or "
                               "pytorch_model.bin)")
        return path  # with one of the two missing, reading it names which (core.loading)
    if path.is_file():
        if not is_deepmind_file(path):
            raise WeightsError(f"{path}: give the checkpoint's folder (config.json + weights), or a DeepMind "
                               f"{'/'.join(DEEPMIND_SUFFIXES[:2])} file")
        existing = _import_for_source(path, None)
        if existing is not None:
            return existing
        known, digest = identify_original(path)
        existing = _import_for_source(path, digest)
        if existing is not None:
            return existing
        if known is None:
            raise WeightsError(f"{path.name} matches none of DeepMind's six published Perceiver IO files; "
                               f"if you trust it, run: perceiver weights import {path} --force --name NAME  "
                               "(then use --model NAME)")
        target_name = known.name if find_imported(known.name) is None else f"sha256-{digest[:16]}"
        return import_deepmind_file(path, name=target_name, digest=digest).directory
    return _resolve_name(text)


def _resolve_name(text: str) -> Path:
    """resolve_checkpoint for a short name, repo id or imported checkpoint's name."""
    entry = find_checkpoint(text)
    if entry is not None:
        cached = cached_snapshot(entry.repo, entry.revision)
        if cached is not None:
            return cached
        imported = find_imported(entry.name)
        if imported is not None:
            return imported
        return ensure_downloaded(entry.name)[0]
    imported = find_imported(text)
    if imported is not None:
        return imported
    if re.fullmatch(r"[\w.-]+/[\w.-]+", text) and not text.startswith((".", "/")):
        return ensure_downloaded(text)[0]
    if _looks_like_path(text):
        raise WeightsError(f"{text}: no such file or folder")
    known = ", ".join(registry())
    others = ", ".join(imported_checkpoints())
    raise WeightsError(f"unknown checkpoint '{text}': use one of {known}{', ' + others if others else ''}, "
                       "a hub repo id (owner/name), a checkpoint folder or a DeepMind .pystate/.pickle file")


# ---------------------------------------------------------------------------------------------------------
# Listing and verifying.


def describe_checkpoints() -> list[dict[str, Any]]:
    """One record per known or imported checkpoint: name, repo, task, params, cached, where, size."""
    rows = []
    for entry in registry().values():
        hub = cached_snapshot(entry.repo, entry.revision)
        imported = find_imported(entry.name)
        where = hub or imported
        weights = weights_in(where) if where else None
        rows.append({
            "name": entry.name, "repo": entry.repo, "revision": entry.revision, "task": entry.task,
            "architecture": entry.architecture, "params": entry.params,
            "cached": where is not None, "source": "hub" if hub else ("imported" if imported else None),
            "path": str(where) if where else None,
            "bytes": weights.stat().st_size if weights else None,
            "deepmind_original": entry.original.file,
        })
    for name, directory in imported_checkpoints().items():
        if name in registry():
            continue
        manifest = read_manifest(directory) or {}
        weights = weights_in(directory)
        arch = manifest.get("architecture")
        task = next((e.task for e in registry().values() if e.architecture == arch), None)
        rows.append({
            "name": name, "repo": None, "revision": None, "task": task, "architecture": arch, "params": None,
            "cached": True, "source": "imported", "path": str(directory),
            "bytes": weights.stat().st_size if weights else None,
            "deepmind_original": (manifest.get("source") or {}).get("file"),
        })
    return rows


@dataclass(frozen=True)
class Check:
    """One verification result: status OK, WARN or FAIL, what was checked, and what was found."""

    status: str
    subject: str
    detail: str

    @property
    def failed(self) -> bool:
        """Whether this check makes the verification fail (WARN does not)."""
        return self.status == "FAIL"


def _blob_digest_check(path: Path) -> Optional[Check]:
    """Compare a hub-cache file with the digest its blob is named by (sha256 for LFS, git sha1 otherwise)."""
    if not path.is_symlink():
        return None
    blob = Path(os.path.realpath(path)).name
    if re.fullmatch(r"[0-9a-f]{64}", blob):
        actual = sha256_file(path)
        kind = "sha256 (the hub's LFS digest)"
    elif re.fullmatch(r"[0-9a-f]{40}", blob):
        actual = git_blob_sha1(path)
        kind = "git blob id (the hub's digest)"
    else:
        return None
    if actual == blob:
        return Check("OK", path.name, f"{kind} matches {blob[:12]}...")
    return Check("FAIL", path.name, f"{kind} is {actual[:12]}..., the hub says {blob[:12]}...: the file is "
                                    "corrupted; delete it and run perceiver weights download again")


def _weights_file_check(path: Path) -> Check:
    """Read a weights file's structure without running code (safetensors header, or a torch zip)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(str(path), framework="numpy") as handle:
                count = len(list(handle.keys()))
            expected_end = _safetensors_data_end(path)
            if expected_end != path.stat().st_size:
                raise ValueError(f"the header describes {expected_end} bytes, the file has {path.stat().st_size}")
            return Check("OK", path.name, f"a complete safetensors file of {count} tensors")
        import zipfile

        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
        if bad is not None:
            raise ValueError(f"member {bad} fails its CRC")
        return Check("OK", path.name, "a complete torch zip archive")
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Check("FAIL", path.name, f"truncated or corrupted ({reason[:160]})")


def _safetensors_data_end(path: Path) -> int:
    with open(path, "rb") as stream:
        header_len = int.from_bytes(stream.read(8), "little")
        header = json.loads(stream.read(header_len))
    ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    return 8 + header_len + max(ends, default=0)


def _strict_load_check(directory: Path) -> Check:
    try:
        from perceiver_cli.core import load_model

        model = load_model(Path(directory), device="cpu")
    except Exception as exc:  # WeightsError/UsageError carry the reason; anything else is a broken file too
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return Check("FAIL", "load", f"does not load strictly: {reason[:240]}")
    tensors = len(model.state_dict())
    return Check("OK", "load", f"loads strictly ({tensors} tensors, every one used)")


def _directory_checks(directory: Path, entry: Optional[Checkpoint]) -> list[Check]:
    checks: list[Check] = []
    manifest = read_manifest(directory)
    recorded = dict(entry.sha256) if entry else {}
    recorded.update((manifest or {}).get("files") or {})
    for name in ("config.json",) + tuple(n for n in ("model.safetensors", "pytorch_model.bin")):
        path = directory / name
        if not path.exists():
            continue
        blob = _blob_digest_check(path)
        if blob is not None:
            checks.append(blob)
        if name in recorded:
            actual = sha256_file(path)
            ok = actual == recorded[name]
            checks.append(Check("OK" if ok else "FAIL", name, f"sha256 {'matches' if ok else 'differs from'} "
                                f"the recorded {recorded[name][:12]}..."
                                + ("" if ok else f" (it is {actual[:12]}...)")))
        if name != "config.json":
            checks.append(_weights_file_check(path))
    if weights_in(directory) is None:
        checks.append(Check("FAIL", directory.name, "no model.safetensors or pytorch_model.bin"))
    if manifest is not None:
        source = manifest.get("source") or {}
        if source.get("deepmind_original"):
            checks.append(Check("OK", "source", f"imported from {source.get('file')}, whose sha256 matched "
                                "DeepMind's published digest"))
        else:
            checks.append(Check("WARN", "source", f"imported with --force from {source.get('file')}, which "
                                "matches none of DeepMind's published digests"))
    checks.append(_strict_load_check(directory))
    return checks


def verify(name_or_path: str) -> list[Check]:
    """Verify a checkpoint by name or path: digests where known, file integrity, and a strict load."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_file() and _means_local(text):
        if not is_deepmind_file(path):
            raise WeightsError(f"{path}: give a checkpoint folder or a DeepMind .pystate/.pickle file")
        known, digest = identify_original(path)
        checks = [Check("OK", path.name, f"sha256 and size match DeepMind's {known.original.file}") if known
                  else Check("FAIL", path.name, f"sha256 {digest[:12]}... and {path.stat().st_size} bytes match "
                             "none of DeepMind's six published files")]
        with tempfile.TemporaryDirectory(prefix="perceiver-verify-") as tmp:
            try:
                result = import_deepmind_file(path, out_dir=Path(tmp) / "checkpoint", force=True, quiet=True,
                                              digest=digest)
            except WeightsError as exc:
                return checks + [Check("FAIL", "convert", str(exc))]
            checks.append(Check("OK", "convert", f"reads safely and converts as a {result.kind} checkpoint"))
            checks.append(_strict_load_check(result.directory))
        return checks
    directory = locate_checkpoint(text)
    if directory is None:
        entry = find_checkpoint(text)
        if entry is not None or ("/" in text and not path.exists()):
            label = f"'{entry.name}' ({entry.repo})" if entry else f"'{text}'"
            message = _missing_message(label, entry.repo if entry else text, "verify never downloads", entry)
            raise WeightsError(message)
        raise WeightsError(f"{text}: no such checkpoint, folder or file")
    return _directory_checks(directory, find_checkpoint(text))


__all__ = [
    "Check", "Checkpoint", "DeepMindOriginal", "ImportResult", "cache_dir", "describe_checkpoints",
    "ensure_downloaded", "find_checkpoint", "find_imported", "identify_original", "import_deepmind_file",
    "imported_checkpoints", "imported_dir", "locate_checkpoint", "registry", "resolve_checkpoint",
    "sha256_file", "verify",
]
