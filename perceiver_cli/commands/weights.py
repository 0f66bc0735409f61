"""`perceiver weights`: list, download, verify and import checkpoints.

Results (tables, JSON Lines, checkpoint folders) go to stdout; progress and notes go to stderr.
The weights library (and through it huggingface_hub, safetensors, torch) is imported inside each command.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer

from perceiver_cli.commands.common import JsonOption
from perceiver_cli.tasks.report import emit_json
from perceiver_cli.errors import UsageError, WeightsError
from perceiver_cli.weights.registry import SHORT_NAMES
from perceiver_cli.weights.registry import find_checkpoint
from perceiver_cli.weights.verify import (Published, describe_checkpoints, human_count, stand_in_message,
                                          verify as run_checks)
from perceiver_cli.weights.resolve import ensure_downloaded
from perceiver_cli.weights.imported import import_deepmind_file

app = typer.Typer(
    help="List, download, verify and import checkpoints.\n\n"
    f"Short names: {', '.join(SHORT_NAMES)}.",
    no_args_is_help=True,
    rich_markup_mode=None,
)


def _note(message: str) -> None:
    print(f"perceiver: {message}", file=sys.stderr)


@app.command("list")
def list_(json_lines: bool = JsonOption) -> int:
    """Show every known checkpoint: hub repo, task, parameters and size of the cached file (else the published
    count), and whether (and where) it is cached. A cached file that is not the published checkpoint of its
    name is a warning on stderr."""
    rows = describe_checkpoints()
    for row in rows:
        if row["matches_published"] is False and row["params"] is not None:
            entry = find_checkpoint(row["name"])
            found = Published(row["params"], row["tensors"], False)
            _note(f"warning: {stand_in_message(entry, found)}")
    if json_lines:
        for row in rows:
            emit_json(row)
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None, header_style="bold")
    for column in ("name", "hub repo", "task", "params", "size", "cached", "where"):
        table.add_column(column, no_wrap=column not in ("hub repo", "where"), overflow="fold")
    for row in rows:
        source = row["source"]
        table.add_row(row["name"], row["repo"] or "-", row["task"] or "-", human_count(row["params"]),
                      human_count(row["bytes"], "B"), "yes" if row["cached"] else "no",
                      f"{row['path']} ({source})" if row["cached"] else "-")
    # piped output is not cut to 80 columns: paths stay whole for grep and friends
    Console(file=sys.stdout, width=None if sys.stdout.isatty() else 240).print(table)
    return 0


@app.command("download")
def download(
    names: list[str] = typer.Argument(..., metavar="NAME...", help="Short names or hub repo ids."),
) -> int:
    """Fetch checkpoints into the huggingface_hub cache (resumable; nothing to do when already there).

    Each file is checked against the SHA-256 the hub advertises for it; a corrupted download is deleted and
    reported (exit 2). Waits are bounded by HF_HUB_ETAG_TIMEOUT and HF_HUB_DOWNLOAD_TIMEOUT (10 s each by
    default). Prints each checkpoint's folder on stdout; progress bars go to stderr.
    """
    for name in names:
        if find_checkpoint(name) is None and "/" not in name:
            raise UsageError(f"unknown checkpoint '{name}': use one of {', '.join(SHORT_NAMES)} or a hub "
                             "repo id (owner/name)")
    for name in names:
        folder, fetched = ensure_downloaded(name, asked=True)
        _note(f"{name}: {'downloaded' if fetched else 'already in the cache'}")
        print(folder, flush=True)
    return 0


@app.command("verify")
def verify(
    target: str = typer.Argument(..., metavar="NAME|PATH",
                                 help="A short name, hub repo id, checkpoint folder or DeepMind file."),
) -> int:
    """Check a checkpoint: SHA-256 digests where known, file integrity, for a known name the published key list,
    shapes and parameter count, the config's sizes, a strict load and a forward pass on a tiny input.

    Prints one OK/NOTE/WARN/FAIL line per check; exits 2 when any check fails, 1 when one warns (it is not
    the published checkpoint of its name), else 0. Never downloads.
    """
    from perceiver_cli.load import load_checks

    checks = run_checks(target, load_checks)
    for check in checks:
        print(f"{check.status:<4} {check.subject}: {check.detail}", flush=True)
    failed = [c for c in checks if c.failed]
    if failed:
        raise WeightsError(f"{target}: {len(failed)} of {len(checks)} checks failed")
    warned = [c for c in checks if c.warns]
    if warned:
        _note(f"warning: {target}: {len(warned)} of {len(checks)} checks warn")
        return 1
    return 0


@app.command("import")
def import_(
    file: Path = typer.Argument(..., metavar="FILE",
                                help="DeepMind's .pystate or .pickle file (e.g. optical_flow_checkpoint.pystate)."),
    output: Optional[Path] = typer.Option(
        None, "--output", "-o", metavar="DIR",
        help="Write the checkpoint here instead of the perceiver-cli cache (use it with --weights DIR)."),
    force: bool = typer.Option(
        False, "--force", help="Import a file whose SHA-256 matches none of DeepMind's six (a warning, not an "
        "error), and replace an existing import."),
    name: Optional[str] = typer.Option(
        None, "--name", help="The name --model will find it by (default: the short name of the recognised "
        "DeepMind file, e.g. flow)."),
) -> int:
    """Convert DeepMind's original Haiku file into a checkpoint folder (config.json + model.safetensors).

    Without -o it goes to ~/.cache/perceiver-cli/imported/NAME (or $XDG_CACHE_HOME/perceiver-cli/...), and
    every command finds it with --model NAME; a hub checkpoint of the same short name in the
    huggingface_hub cache is used first. Unpickling runs no code: only arrays and plain containers are read.
    Prints the folder on stdout.
    """
    result = import_deepmind_file(file, out_dir=output, name=name, force=force)
    use = f"--model {result.name}" if result.name else f"--weights {result.directory}"
    verb = "imported" if result.created else "already imported"
    _note(f"{verb}: {result.kind} checkpoint in {result.directory}; use it with {use}")
    print(result.directory, flush=True)
    return 0


@app.command("tiny")
def tiny(
    kind: str = typer.Argument(..., metavar="KIND", help=f"One of {', '.join(SHORT_NAMES)}."),
    directory: Path = typer.Argument(..., metavar="DIR", help="A new (or empty) folder to write it into."),
    seed: int = typer.Option(0, "--seed", metavar="N", help="Seed of the random weights."),
) -> int:
    """Write a small random checkpoint of KIND: the real input and output shapes and labels, tiny widths, random
    weights (its config says so). Every command runs on it (-w DIR) and warns once that its outputs are
    meaningless: for trying the tool, and testing pipelines and CI, offline."""
    from perceiver_cli.tiny import make_tiny

    print(make_tiny(kind, directory, seed))
    return 0
