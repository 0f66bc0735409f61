"""Resolving a name or path to a checkpoint folder (config.json + model.safetensors or pytorch_model.bin).

- an existing directory is used as it is;
- a DeepMind ``.pystate``/``.pickle`` file is imported once into
  ``<perceiver-cli cache>/imported/<short name or sha256-...>/`` and that directory is used;
- a short name (language, vision-conv, vision-fourier, vision-learned, flow, multimodal) or a hub repo id
  (``deepmind/...``) is looked up in one order (`find_local`, then a download): the huggingface_hub cache
  (HF_HOME, HF_HUB_CACHE), then a checkpoint imported under that name; when online, a missing hub checkpoint is
  downloaded once; offline, the error names what is missing and the command that fetches it;
- any other name is one given to ``perceiver weights import FILE --name NAME``.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path
from typing import Optional

from perceiver_cli.errors import UsageError, WeightsError
from perceiver_cli.kinds import BY_NAME, KINDS, names_for_task
from perceiver_cli.io.location import is_remote
from perceiver_cli.weights.folder import weights_in
from perceiver_cli.weights.hub import (HubError, cached_snapshot, display_path, download_snapshot, hub_cache_dir,
                                       offline_mode)
from perceiver_cli.weights.imported import find_imported, import_deepmind_file, import_of, imported_checkpoints
from perceiver_cli.weights.registry import (DEEPMIND_SUFFIXES, Checkpoint, checkpoints, find_checkpoint,
                                            identify_original, is_deepmind_file)

_REPO_ID = re.compile(r"[\w.-]+/[\w.-]+")


def is_repo_id(text: str) -> bool:
    """Whether `text` reads as a hub repo id (owner/name), never as a path (./x/y, /x, ~/x)."""
    return bool(_REPO_ID.fullmatch(text)) and not text.startswith((".", "/", "~"))


def find_local(name_or_repo: str) -> tuple[Optional[Path], Optional[str]]:
    """The lookup order, in one place: the hub cache, then an import of that name; (folder, "hub"/"imported")
    or (None, None). Never downloads."""
    entry = find_checkpoint(name_or_repo)
    if entry is not None:
        cached = cached_snapshot(entry.repo, entry.revision)
        if cached is not None:
            return cached, "hub"
        imported = find_imported(entry.name)
        return (imported, "imported") if imported is not None else (None, None)
    imported = find_imported(name_or_repo)
    if imported is not None:
        return imported, "imported"
    if is_repo_id(name_or_repo):
        cached = cached_snapshot(name_or_repo, "main")
        if cached is not None:
            return cached, "hub"
    return None, None


def missing_message(label: str, repo: str, why: str, entry: Optional[Checkpoint], downloading: bool = False) -> str:
    """The one line for a checkpoint that is neither cached nor fetchable now, with what fixes it: the download
    command, or (when that command is what failed) how to bring the files onto this machine another way."""
    where = display_path(hub_cache_dir())
    if downloading:
        hint = (f"; to bring it onto this machine, copy a huggingface hub cache that holds {repo} into {where} "
                "(HF_HUB_CACHE) on a machine that has it, and set HF_HUB_OFFLINE=1 where there is no network")
        if entry is not None:
            hint += f", or import DeepMind's file: perceiver weights import {entry.original.file}"
    else:
        hint = f"; with network access run: perceiver weights download {entry.name if entry else repo}"
        if entry is not None:
            hint += f"  (or import DeepMind's file: perceiver weights import {entry.original.file})"
    return f"checkpoint {label} is not in the local cache ({where}) and {why}{hint}"


def ensure_downloaded(name_or_repo: str, asked: bool = False) -> tuple[Path, bool]:
    """The cached snapshot of a known checkpoint or repo id, downloading it once if needed; (dir, downloaded).
    `asked`: the user ran the download command itself, so a failure does not advise running it."""
    entry = find_checkpoint(name_or_repo)
    repo = entry.repo if entry else name_or_repo.strip()
    revision = entry.revision if entry else "main"
    label = f"'{entry.name}' ({repo})" if entry else f"'{repo}'"
    found = cached_snapshot(repo, revision)
    if found is not None:
        return found, False
    if offline_mode():
        raise WeightsError(missing_message(label, repo, "HF_HUB_OFFLINE=1 forbids downloading", entry, asked))

    def announce() -> None:
        print(f"perceiver: downloading {repo} into {display_path(hub_cache_dir())}", file=sys.stderr)

    try:
        folder = download_snapshot(repo, revision, entry.files if entry else None, announce)
    except HubError as exc:
        if exc.reason == "unreachable":
            raise WeightsError(missing_message(label, repo, str(exc), entry, asked)) from None
        raise WeightsError(f"checkpoint {label}: {exc}") from None
    return folder, True


def _written_as_path(text: str) -> bool:
    return text.startswith((".", "/", "~")) or text.endswith(("/", os.sep)) or os.path.isabs(text)


def means_local(text: str) -> bool:
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


def locate_checkpoint(name_or_path: str) -> Optional[Path]:
    """The local directory for a name, repo id or path, without downloading or importing; None if absent."""
    path = Path(name_or_path).expanduser()
    if means_local(name_or_path):
        if path.is_dir():
            return path
        if path.is_file():
            return import_of(path, None) if is_deepmind_file(path) else None
    return find_local(name_or_path)[0]


def _resolve_deepmind_file(path: Path) -> Path:
    existing = import_of(path, None)
    if existing is not None:
        return existing
    known, digest = identify_original(path)
    existing = import_of(path, digest)
    if existing is not None:
        return existing
    if known is None:
        raise WeightsError(f"{path.name} matches none of DeepMind's six published Perceiver IO files; "
                           f"if you trust it, run: perceiver weights import {path} --force --name NAME  "
                           "(then use --model NAME)")
    target_name = known.name if find_imported(known.name) is None else f"sha256-{digest[:16]}"
    return import_deepmind_file(path, name=target_name, digest=digest).directory


def resolve_checkpoint(name_or_path: str | os.PathLike) -> Path:
    """A checkpoint directory (config.json + weights) for a short name, hub repo id, directory or DeepMind file.

    A str is a name first: a known short name or repo id, or an imported checkpoint's name, is never read from
    a same-named entry of the current folder unless written as a path (see means_local). A Path is always a
    file or folder (--weights). Downloads a missing hub checkpoint once when online; imports a DeepMind file
    once into the cache. Raises WeightsError (one line, with the command to run) when it cannot.
    """
    text = os.fspath(name_or_path)
    if is_remote(text):
        from perceiver_cli.weights.remote import fetch_checkpoint_folder

        return fetch_checkpoint_folder(text)
    path = Path(text).expanduser()
    if isinstance(name_or_path, os.PathLike):
        if not path.exists():
            raise WeightsError(f"{text}: no such file or folder")
    elif not means_local(text):
        return _resolve_name(text)
    if path.is_dir():
        if not (path / "config.json").is_file() and weights_in(path) is None:
            raise WeightsError(f"{path}: not a checkpoint folder (no config.json, and no model.safetensors or "
                               "pytorch_model.bin)")
        return path  # with one of the two missing, reading it names which
    if path.is_file():
        if not is_deepmind_file(path):
            raise WeightsError(f"{path}: give the checkpoint's folder (config.json + weights), or a DeepMind "
                               f"{'/'.join(DEEPMIND_SUFFIXES[:2])} file")
        return _resolve_deepmind_file(path)
    return _resolve_name(text)


def _resolve_name(text: str) -> Path:
    """resolve_checkpoint for a short name, repo id or imported checkpoint's name."""
    found, _ = find_local(text)
    if found is not None:
        return found
    if find_checkpoint(text) is not None or is_repo_id(text):
        return ensure_downloaded(text)[0]
    if _looks_like_path(text):
        raise WeightsError(f"{text}: no such file or folder")
    known = ", ".join(checkpoints())
    others = ", ".join(name for name in imported_checkpoints() if name not in checkpoints())
    raise WeightsError(f"unknown checkpoint '{text}': use one of {known}{', ' + others if others else ''}, "
                       "a hub repo id (owner/name), a checkpoint folder or a DeepMind .pystate/.pickle file"
                       + _did_you_mean(text, [*checkpoints(), *imported_checkpoints()]))


def _did_you_mean(text: str, names: list[str]) -> str:
    """'; did you mean NAME?' for the name closest to `text`, or nothing when none is close."""
    import difflib

    close = difflib.get_close_matches(text.strip().lower(), list(dict.fromkeys(names)), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def check_model_name(text: str, task: str) -> None:
    """Refuse at once a --model that cannot run `task`: a short name of another task's kind (no cache or hub
    lookup), or a name that is no checkpoint, a repo id or a path (the command's models listed, the closest
    suggested)."""
    mine = names_for_task(task)
    kind = BY_NAME.get(text.strip().lower())
    if kind is not None:
        if kind.task != task:
            raise UsageError(f"--model {text}: the {kind.name} checkpoint runs {kind.task}, not {task}; "
                             f"{task} runs {', '.join(mine)}")
        return
    if is_repo_id(text) or _looks_like_path(text) or Path(text).expanduser().exists() \
            or find_imported(text) is not None:
        return
    raise WeightsError(f"unknown checkpoint '{text}': use one of {', '.join(mine)}, a hub repo id (owner/name), a "
                       "checkpoint folder or a name given to `perceiver weights import`"
                       + _did_you_mean(text, [*mine, *(k.name for k in KINDS), *imported_checkpoints()]))
