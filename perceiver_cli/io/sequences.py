"""Frame sequences for flow: which pictures follow which, and never across folders.

Rules:
- A folder is one sequence: the picture files directly in it (extensions as
  `perceiver_cli.io.images.IMAGE_EXTENSIONS`, hidden files skipped), in natural order, so
  frame_2 comes before frame_10. Its subfolders are ignored.
- With `recursive=True`, every folder below an argument (itself included) that holds pictures is
  its own sequence, in natural order of folder paths; consecutive frames are only ever paired
  inside one folder. Folders holding ground truth rather than frames are skipped: those whose
  first picture is a greyscale PNG (Sintel's `invalid/` and `occlusions/` masks) or a 16-bit
  colour PNG (KITTI flow); `.flo` files are not pictures, so a Sintel `flow/` folder holds none.
  A folder named explicitly is always a sequence, whatever its pictures look like.
- File arguments, in the order given, together form one sequence (named after the first file's
  folder); the same file twice is a valid sequence of two frames (zero motion).
- An argument with a wildcard (*, ?, [) that is not itself a path is expanded with glob, in natural
  order: the files it matches join the file sequence, the folders become sequences.
A missing argument, or a folder without pictures, is an InputError naming it.
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

from perceiver_cli.errors import InputError
from perceiver_cli.io.flowfiles import png_layout
from perceiver_cli.io.images import IMAGE_EXTENSIONS
from perceiver_cli.io.location import is_remote
from perceiver_cli.io.store import UrlPath

_DIGITS = re.compile(r"(\d+)")
_GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True)
class FrameSequence:
    """Frames of one sequence in display order; `folder` is where they live (None for files from several folders)."""

    name: str
    folder: Optional[Path]
    frames: tuple[Path, ...]

    def pairs(self, step: int = 1) -> list[tuple[Path, Path]]:
        """Frame pairs (t, t + step) for every t with both frames in this sequence."""
        return frame_pairs(self.frames, step)


def natural_key(text: str) -> tuple:
    """Sort key that orders runs of digits by value: frame_2 < frame_10; ties fall back to the text."""
    parts = _DIGITS.split(text)
    key = tuple((0, int(part), "") if index % 2 else (1, 0, part.lower()) for index, part in enumerate(parts))
    return key + ((2, 0, text),)


def natural_sorted(paths: Iterable[Path]) -> list[Path]:
    """Paths in natural order of their full path text."""
    return sorted(paths, key=lambda p: natural_key(str(p)))


def frame_pairs(frames: Iterable[Path], step: int = 1) -> list[tuple[Path, Path]]:
    """Pairs (frames[t], frames[t + step]) for t = 0, 1, ... while both exist."""
    if int(step) != step or step < 1:
        raise ValueError(f"step must be a positive whole number, got {step}")
    ordered = list(frames)
    return [(ordered[t], ordered[t + int(step)]) for t in range(len(ordered) - int(step))]


def _is_picture(entry: os.DirEntry) -> bool:
    return not entry.name.startswith(".") and Path(entry.name).suffix.lower() in IMAGE_EXTENSIONS and entry.is_file()


def pictures_in(folder: Path) -> list[Path]:
    """Picture files directly in folder (not below it), natural order, hidden files skipped."""
    if isinstance(folder, UrlPath):
        return _remote_pictures(folder)
    with os.scandir(folder) as entries:
        found = [Path(folder) / entry.name for entry in entries if _is_picture(entry)]
    return sorted(found, key=lambda p: natural_key(p.name))


def holds_ground_truth(first_picture: Path) -> bool:
    """True if a picture is a greyscale PNG (a mask) or a 16-bit colour PNG (KITTI flow), not a frame."""
    from perceiver_cli.io.store import read_bytes

    try:
        layout = png_layout(read_bytes(first_picture, limit=26))
    except (OSError, InputError):
        return False
    if layout is None:
        return False
    depth, colour = layout
    return colour in (0, 4) or depth == 16


def _subfolders(folder: Path) -> list[Path]:
    """Every folder below folder, itself first, natural order; hidden folders are not entered."""
    found = [folder]
    for root, dirnames, _ in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found.extend(Path(root) / d for d in dirnames)
    return [found[0]] + natural_sorted(found[1:])


def _folder_sequences(folder: Path, recursive: bool, label: str) -> list[FrameSequence]:
    """The sequences one folder argument gives; an InputError when it gives none."""
    if not recursive:
        frames = pictures_in(folder)
        if not frames:
            hint = "; add --recursive to read its subfolders" if any(p.is_dir() for p in folder.iterdir()) else ""
            raise InputError(f"{label}: folder holds no picture files{hint}")
        return [FrameSequence(name=folder.name or str(folder), folder=folder, frames=tuple(frames))]
    sequences = []
    for candidate in _subfolders(folder):
        frames = pictures_in(candidate)
        if not frames or (candidate != folder and holds_ground_truth(frames[0])):
            continue
        relative = candidate.relative_to(folder)
        name = (folder.name or str(folder)) if relative == Path(".") else str(Path(folder.name) / relative)
        sequences.append(FrameSequence(name=name, folder=candidate, frames=tuple(frames)))
    if not sequences:
        raise InputError(f"{label}: no folder below it holds picture files")
    return sequences


def _remote_frames(argument: str, recursive: bool) -> tuple[list[Path], list[FrameSequence]]:
    """(files, folder sequences) a URL gives: a picture object is a file; any other URL a prefix whose
    pictures directly below it are one sequence, or with `recursive` each folder below it that holds
    pictures, as the local walk gives them (one paginated listing either way)."""
    url = UrlPath(argument)
    if not argument.endswith("/") and url.suffix.lower() in IMAGE_EXTENSIONS:
        return [url], []
    root = UrlPath(argument.rstrip("/"))
    if recursive:
        return [], _remote_folder_sequences(root, argument)
    folders = _pictures_by_folder(root)
    if root not in folders:
        hint = "; add --recursive to read its subfolders" if folders else ""
        raise InputError(f"{argument}: folder holds no picture files{hint}")
    return [], [FrameSequence(name=root.name, folder=root, frames=tuple(folders[root]))]


def _pictures_by_folder(prefix: UrlPath) -> dict[UrlPath, list[UrlPath]]:
    """The pictures below a store prefix grouped by their folder, each in natural order: one listing."""
    from perceiver_cli.io.store import files_under

    folders: dict[UrlPath, list[UrlPath]] = {}
    for picture in files_under(prefix, IMAGE_EXTENSIONS):
        folders.setdefault(picture.parent, []).append(picture)
    return {folder: sorted(found, key=lambda p: natural_key(p.name)) for folder, found in folders.items()}


def _remote_pictures(prefix: UrlPath) -> list[Path]:
    """`pictures_in` for a store prefix: one paginated listing."""
    return _pictures_by_folder(prefix).get(prefix, [])


def _remote_folder_sequences(root: UrlPath, label: str) -> list[FrameSequence]:
    """`_folder_sequences` with `recursive` for a store prefix: its own pictures first, then each folder below
    in natural order, folders of ground truth skipped."""
    folders = _pictures_by_folder(root)
    ordered = ([root] if root in folders else []) + natural_sorted(f for f in folders if f != root)
    sequences = [FrameSequence(name=root.name if folder == root else f"{root.name}/{folder.relative_to(root)}",
                               folder=folder, frames=tuple(folders[folder]))
                 for folder in ordered if folder == root or not holds_ground_truth(folders[folder][0])]
    if not sequences:
        raise InputError(f"{label}: no folder below it holds picture files")
    return sequences


def frame_sequences(arguments: Iterable[str], recursive: bool = False) -> list[FrameSequence]:
    """Turn command-line arguments (files, folders, globs) into frame sequences, as the module docstring says."""
    files: list[Path] = []
    sequences: list[FrameSequence] = []
    file_slot: Optional[int] = None
    for argument in arguments:
        label = str(argument)
        path = Path(argument)
        try:
            if is_remote(label):
                matched_files, remote = _remote_frames(label, recursive)
                matched_folders = []
                sequences.extend(remote)
            elif path.is_dir():
                sequences.extend(_folder_sequences(path, recursive, label))
                continue
            elif path.is_file():
                matched_files, matched_folders = [path], []
            elif path.exists():
                raise InputError(f"{label}: not a regular file or folder")
            elif any(ch in _GLOB_CHARACTERS for ch in label):
                matches = natural_sorted(Path(m) for m in glob.glob(label, recursive=True))
                matched_folders = [m for m in matches if m.is_dir()]
                matched_files = [m for m in matches if m.is_file() and m.suffix.lower() in IMAGE_EXTENSIONS]
                if not matched_files and not matched_folders:
                    raise InputError(f"{label}: pattern matches no picture files")
            else:
                raise InputError(f"{label}: no such file or folder")
        except OSError as exc:
            raise InputError(f"{label}: cannot look at it ({exc.strerror or type(exc).__name__})") from None
        if matched_files and file_slot is None:
            # The file sequence sits where its first file was given.
            file_slot = len(sequences)
            sequences.append(FrameSequence(name="", folder=None, frames=()))
        files.extend(matched_files)
        for folder in matched_folders:
            sequences.extend(_folder_sequences(folder, recursive, str(folder)))
    if file_slot is not None:
        folders = {f.parent for f in files}
        folder = files[0].parent if len(folders) == 1 else None
        name = files[0].parent.name or str(files[0].parent)
        sequences[file_slot] = FrameSequence(name=name, folder=folder, frames=tuple(files))
    return sequences


def no_pairs_problem(sequences: Sequence[FrameSequence], step: int = 1) -> str:
    """Why `sequences` give no frame pair, naming the cause: --step past every sequence, one frame per folder,
    or too few frames (an image file, even an animated one, is one frame)."""
    longest = max((len(s.frames) for s in sequences), default=0)
    if longest >= 2:
        return f"no two frames {step} apart (--step {step}): the longest sequence has {longest} frames"
    if len(sequences) > 1:
        return (f"frames are paired within one folder, and each of the {len(sequences)} sequences found has one "
                "frame")
    return (f"flow needs at least two frames, found {longest} (an image file is one frame, even an animated "
            "one: give two images, a folder of frames, or a video)")
