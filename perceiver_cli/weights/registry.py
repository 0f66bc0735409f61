"""The six published checkpoints, listed once: every other list of them (the importer's architecture and head
tables, the short names in messages) is derived from this table.

Sizes are those of the published hub files (every state_dict key and shape, as transformers' Perceiver classes
hold them); `keys_sha256` is the SHA-256 of their sorted ``key<TAB>[shape]`` lines (see `key_list_digest`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

from perceiver_cli.kinds import BY_ARCHITECTURE

# A checkpoint folder's weights file, in order of preference.
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
DEEPMIND_SUFFIXES = (".pystate", ".pickle", ".pkl")



@dataclass(frozen=True)
class DeepMindOriginal:
    """One of DeepMind's published Haiku files: its name, size and SHA-256."""

    file: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class Checkpoint:
    """A published checkpoint: its class, hub repo and revision, files, network shape and DeepMind's original.

    Its short name and task are its kind's (perceiver_cli.kinds).

    `self_heads`, `cross_heads` and `blocks` are what DeepMind's colabs build and the weights cannot tell;
    `params` counts parameters, `numel` every stored number (buffers included), `tensors` the state_dict entries.
    """

    repo: str
    revision: str
    files: tuple[str, ...]
    architecture: str
    self_heads: int
    cross_heads: int
    blocks: int
    params: int
    numel: int
    tensors: int
    keys_sha256: str
    original: DeepMindOriginal

    @property
    def name(self) -> str:
        """The short name (language, vision-learned, ..., flow, multimodal)."""
        return BY_ARCHITECTURE[self.architecture].name

    @property
    def task(self) -> str:
        """The command that runs this checkpoint."""
        return BY_ARCHITECTURE[self.architecture].task


CHECKPOINTS: tuple[Checkpoint, ...] = (
    Checkpoint("deepmind/language-perceiver", "main", ("config.json", "model.safetensors"),
               "PerceiverForMaskedLM", 8, 8, 1, 201108230, 201108230, 457,
               "3eb85f587dd216efb337a0590b167d9f291fcc4e6aabfe629226cff6610da9d8",
               DeepMindOriginal("language_perceiver_io_bytes.pickle", 804479532,
                                "4c027762184c8bc929efbce98ec680c264683b7bf3d20e7af67261cb3ede21c9")),
    Checkpoint("deepmind/vision-perceiver-learned", "main", ("config.json", "pytorch_model.bin"),
               "PerceiverForImageClassificationLearned", 8, 1, 8, 62255848, 62255848, 141,
               "12aaff85340ba169a973600412478a899868b87b9f71a698fb337aa02f45b453",
               DeepMindOriginal("imagenet_learned_position_encoding.pystate", 249037713,
                                "b76b62dc8efeeddd24fb9e7084e81abd034cd3a5de4e378525d8500b0873a5f2")),
    Checkpoint("deepmind/vision-perceiver-fourier", "main", ("config.json", "pytorch_model.bin"),
               "PerceiverForImageClassificationFourier", 8, 1, 8, 48440627, 48440627, 136,
               "accdeb7d6a657cce1c3b85d035b6d8aa5e94ddad3a6ceb3218e7a13654d5a36d",
               DeepMindOriginal("imagenet_fourier_position_encoding.pystate", 193776248,
                                "9e76f5f2fefc318acc2a79289e2e7b926ca1191534ec75920795b56a77d9bb24")),
    Checkpoint("deepmind/vision-perceiver-conv", "main", ("config.json", "pytorch_model.bin"),
               "PerceiverForImageClassificationConvProcessing", 8, 1, 8, 48646522, 48646651, 142,
               "e93079710142957ce0d762fcda6af6dd419c9fcc12d26fbf90dcdb5b0a1c78f0",
               DeepMindOriginal("imagenet_conv_preprocessing.pystate", 194601878,
                                "7ed880e697f99b1957a1fd1fa1d9ac1f3f8a1d1d567abc3119060b9a81ae94ef")),
    Checkpoint("deepmind/optical-flow-perceiver", "main", ("config.json", "model.safetensors"),
               "PerceiverForOpticalFlow", 16, 1, 1, 41057134, 41057134, 425,
               "1e0d1d2061b4f74d81fa394a4cad27bac067f2d35ee566e215b9103bba807280",
               DeepMindOriginal("optical_flow_checkpoint.pystate", 164271840,
                                "3c45151e0a4c32b71df1747627bc847678e49c99770998e949787848fb62c0ae")),
    Checkpoint("deepmind/multimodal-perceiver", "main", ("config.json", "pytorch_model.bin"),
               "PerceiverForMultimodalAutoencoding", 8, 1, 1, 19858855, 19858855, 183,
               "dd48e8ba00dc05f23891786f3dab5b05ac1f56944df9385ffc7f0ae3cb4600ab",
               DeepMindOriginal("video_autoencoding_checkpoint.pystate", 79453357,
                                "68f5492569750acac683a51ff201bc181c9e4fee94d7c2b48bae2083e0fbc092")),
)

SHORT_NAMES: tuple[str, ...] = tuple(entry.name for entry in CHECKPOINTS)


def checkpoints() -> dict[str, Checkpoint]:
    """The six published checkpoints by short name."""
    return {entry.name: entry for entry in CHECKPOINTS}


def find_checkpoint(name_or_repo: str) -> Optional[Checkpoint]:
    """The entry for a short name or a hub repo id (case-insensitive), or None."""
    key = name_or_repo.strip().lower()
    for entry in checkpoints().values():
        if key in (entry.name, entry.repo.lower()):
            return entry
    return None


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


def key_list_digest(shapes: Iterable[tuple[str, tuple[int, ...]]]) -> str:
    """SHA-256 of sorted ``key<TAB>[d0, d1, ...]`` lines: one fingerprint of a state_dict's keys and shapes."""
    text = "".join(f"{key}\t{list(shape)}\n" for key, shape in sorted((k, tuple(s)) for k, s in shapes))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def identify_original(path: Path, digest: Optional[str] = None) -> tuple[Optional[Checkpoint], str]:
    """Match a file against DeepMind's six originals by size and SHA-256; returns (entry or None, sha256)."""
    digest = digest or sha256_file(path)
    size = path.stat().st_size
    for entry in checkpoints().values():
        if entry.original.sha256 == digest and entry.original.bytes == size:
            return entry, digest
    return None, digest


def is_deepmind_file(path: Path) -> bool:
    """Whether a path looks like one of DeepMind's Haiku pickles (by its suffix)."""
    return path.suffix.lower() in DEEPMIND_SUFFIXES
