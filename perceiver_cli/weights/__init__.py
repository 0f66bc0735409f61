"""Where checkpoints come from, one module per job:

- registry: the six published checkpoints (the one table), digests of files and key lists;
- folder: a checkpoint folder on disk (config.json, the weights file, its tensors' shapes);
- hub: the huggingface_hub cache, bounded downloads, the digests the hub promises;
- imported: DeepMind's own files imported into perceiver-cli's cache (haiku: the conversion itself);
- resolve: a name or path to a folder, in one lookup order (hub cache, then imported, then download);
- verify: listing and verifying.

weights never builds a model to run it; perceiver_cli.load does (above core and weights).
"""

from perceiver_cli.weights.imported import (ImportResult, cache_dir, find_imported, import_deepmind_file,
                                            imported_checkpoints, imported_dir)
from perceiver_cli.weights.registry import (Checkpoint, DeepMindOriginal, checkpoints, find_checkpoint,
                                            identify_original, sha256_file)
from perceiver_cli.weights.resolve import ensure_downloaded, find_local, locate_checkpoint, resolve_checkpoint

__all__ = [
    "Checkpoint", "DeepMindOriginal", "ImportResult", "cache_dir", "checkpoints", "ensure_downloaded",
    "find_checkpoint", "find_imported", "find_local", "identify_original", "import_deepmind_file",
    "imported_checkpoints", "imported_dir", "locate_checkpoint", "resolve_checkpoint", "sha256_file",
]
