"""Listing cached checkpoints and verifying one: digests, file integrity, and whether it is the published one.

Whether a checkpoint loads and runs is checked above weights (perceiver_cli.load), which `verify` is handed.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from perceiver_cli.errors import WeightsError
from perceiver_cli.weights.folder import count_parameters, safetensors_data_end, tensor_shapes, weights_in
from perceiver_cli.weights.hub import blob_digest
from perceiver_cli.weights.imported import import_deepmind_file, imported_checkpoints, read_manifest
from perceiver_cli.weights.registry import (Checkpoint, checkpoints, find_checkpoint, identify_original,
                                            is_deepmind_file, key_list_digest, sha256_file)
from perceiver_cli.weights.resolve import (find_local, is_repo_id, locate_checkpoint, means_local,
                                          missing_message)

# Statuses: OK and NOTE pass; WARN (not the checkpoint its name says) makes verify exit 1; FAIL exit 2.
STATUSES = ("OK", "NOTE", "WARN", "FAIL")


@dataclass(frozen=True)
class Check:
    """One verification result: its status (see STATUSES), what was checked, and what was found."""

    status: str
    subject: str
    detail: str

    @property
    def failed(self) -> bool:
        """Whether this check makes the verification fail."""
        return self.status == "FAIL"

    @property
    def warns(self) -> bool:
        """Whether this check says the checkpoint is not what its name claims."""
        return self.status == "WARN"


def human_count(count: Optional[int], unit: str = "") -> str:
    """1234567 -> '1.2M' (k, M, G); None -> '-'."""
    if count is None:
        return "-"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.1f}{suffix}{unit}"
    return f"{count}{unit}"


@dataclass(frozen=True)
class Published:
    """How a checkpoint folder compares with the published checkpoint of its name."""

    params: int
    tensors: int
    matches: bool


def compare_with_published(directory: Path, entry: Checkpoint,
                           shapes: Optional[dict[str, tuple[int, ...]]] = None) -> Published:
    """Count the folder's parameters and compare its keys and shapes (`shapes` when already read) with the
    published checkpoint's."""
    shapes = tensor_shapes(directory) if shapes is None else shapes
    matches = (len(shapes) == entry.tensors and key_list_digest(shapes.items()) == entry.keys_sha256)
    return Published(count_parameters(shapes), len(shapes), matches)


def stand_in_message(entry: Checkpoint, found: Published) -> str:
    """The warning for a folder cached under a known name that is not the published checkpoint."""
    return (f"the checkpoint cached as '{entry.name}' has {human_count(found.params)} parameters in "
            f"{found.tensors} tensors, the published {entry.repo} has {human_count(entry.params)} in "
            f"{entry.tensors}: it is not the published checkpoint")


def describe_checkpoints() -> list[dict[str, Any]]:
    """One record per known or imported checkpoint: name, repo, task, params and tensors (of the cached file
    when cached, else the published counts), published_params, matches_published, cached, source, path, bytes."""
    rows = []
    for entry in checkpoints().values():
        where, source = find_local(entry.name)
        weights = weights_in(where) if where else None
        params, tensors, matches = entry.params, entry.tensors, None
        if where is not None:
            try:
                found = compare_with_published(where, entry)
                params, tensors, matches = found.params, found.tensors, found.matches
            except WeightsError:
                params, tensors, matches = None, None, False
        rows.append({
            "name": entry.name, "repo": entry.repo, "revision": entry.revision, "task": entry.task,
            "architecture": entry.architecture, "params": params, "tensors": tensors,
            "published_params": entry.params,
            "matches_published": matches, "cached": where is not None, "source": source,
            "path": str(where) if where else None, "bytes": weights.stat().st_size if weights else None,
            "deepmind_original": entry.original.file,
        })
    tasks = {entry.architecture: entry.task for entry in checkpoints().values()}
    for name, directory in imported_checkpoints().items():
        if name in checkpoints():
            continue
        manifest = read_manifest(directory) or {}
        weights = weights_in(directory)
        try:
            shapes: Optional[dict] = tensor_shapes(directory)
        except WeightsError:
            shapes = None
        rows.append({
            "name": name, "repo": None, "revision": None, "task": tasks.get(manifest.get("architecture")),
            "architecture": manifest.get("architecture"),
            "params": count_parameters(shapes) if shapes is not None else None,
            "tensors": len(shapes) if shapes is not None else None, "published_params": None,
            "matches_published": None, "cached": True, "source": "imported", "path": str(directory),
            "bytes": weights.stat().st_size if weights else None,
            "deepmind_original": (manifest.get("source") or {}).get("file"),
        })
    return rows


def _blob_digest_check(path: Path) -> Optional[Check]:
    """Compare a hub-cache file with the digest its blob is named by (sha256 for LFS, git sha1 otherwise)."""
    found = blob_digest(path)
    if found is None:
        return None
    kind, promised, actual = found
    what = f"{kind} (the hub's digest)" if kind == "git blob id" else f"{kind} (the hub's LFS digest)"
    if actual == promised:
        return Check("OK", path.name, f"{what} matches {promised[:12]}...")
    return Check("FAIL", path.name, f"{what} is {actual[:12]}..., the hub says {promised[:12]}...: the file is "
                                    "corrupted; delete it and run perceiver weights download again")


def _weights_file_check(path: Path) -> Check:
    """Read a weights file's structure without running code (safetensors header, or a torch zip)."""
    try:
        if path.suffix == ".safetensors":
            count = len(tensor_shapes(path.parent))
            expected_end = safetensors_data_end(path)
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


def _published_check(directory: Path, entry: Checkpoint) -> Optional[Check]:
    try:
        found = compare_with_published(directory, entry)
    except WeightsError:
        return None  # the integrity check already says the file cannot be read
    if not found.matches:
        return Check("WARN", "published", stand_in_message(entry, found))
    return Check("OK", "published", f"its {found.tensors} keys and shapes and {human_count(found.params)} "
                                    f"parameters are those of the published {entry.repo}")


def _directory_checks(directory: Path, entry: Optional[Checkpoint]) -> list[Check]:
    checks: list[Check] = []
    manifest = read_manifest(directory)
    recorded = dict((manifest or {}).get("files") or {})
    digest_checked = False
    for name in ("config.json", "model.safetensors", "pytorch_model.bin"):
        path = directory / name
        if not path.exists():
            continue
        blob = _blob_digest_check(path)
        if blob is not None:
            checks.append(blob)
            digest_checked = digest_checked or name != "config.json"
        if name in recorded:
            actual = sha256_file(path)
            ok = actual == recorded[name]
            digest_checked = digest_checked or name != "config.json"
            checks.append(Check("OK" if ok else "FAIL", name, f"sha256 {'matches' if ok else 'differs from'} "
                                f"the recorded {recorded[name][:12]}..."
                                + ("" if ok else f" (it is {actual[:12]}...)")))
        if name != "config.json":
            checks.append(_weights_file_check(path))
    if weights_in(directory) is None:
        checks.append(Check("FAIL", directory.name, "no model.safetensors or pytorch_model.bin"))
    elif not digest_checked:
        checks.append(Check("NOTE", "digest", "no digest of this weights file is recorded anywhere (not a hub "
                                              "download, not an import), so none could be checked"))
    if entry is not None and weights_in(directory) is not None:
        published = _published_check(directory, entry)
        if published is not None:
            checks.append(published)
    if manifest is not None:
        source = manifest.get("source") or {}
        if source.get("deepmind_original"):
            checks.append(Check("OK", "source", f"imported from {source.get('file')}, whose sha256 matched "
                                "DeepMind's published digest"))
        else:
            checks.append(Check("WARN", "source", f"imported with --force from {source.get('file')}, which "
                                "matches none of DeepMind's published digests"))
    return checks


def verify(name_or_path: str, load_checks: Callable[[Path], list[Check]]) -> list[Check]:
    """Verify a checkpoint by name or path: digests, file integrity, the published key list and size for a
    known name, then `load_checks(folder)` (that it loads strictly and runs). Never downloads."""
    text = str(name_or_path)
    path = Path(text).expanduser()
    if path.is_file() and means_local(text):
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
            checks.extend(load_checks(result.directory))
        return checks
    directory = locate_checkpoint(text)
    if directory is None:
        entry = find_checkpoint(text)
        if entry is not None or is_repo_id(text):
            label = f"'{entry.name}' ({entry.repo})" if entry else f"'{text}'"
            raise WeightsError(missing_message(label, entry.repo if entry else text, "verify never downloads",
                                               entry))
        if path.exists():
            raise WeightsError(f"{text}: not a checkpoint folder or a DeepMind .pystate/.pickle file")
        raise WeightsError(f"{text}: no such file or folder" if "/" in text or path.suffix else
                           f"{text}: no such checkpoint, file or folder")
    entry = None if means_local(text) else find_checkpoint(text)
    return _directory_checks(directory, entry) + load_checks(directory)
