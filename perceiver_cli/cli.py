"""The `perceiver` command: a Typer app whose subcommands live in perceiver_cli.commands.

Heavy libraries (torch, cv2, av) are imported inside the commands that need them, so that
`perceiver --help` stays fast.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

from perceiver_cli import interrupts


def _launched_as_the_perceiver_script() -> bool:
    """Whether this process is the `perceiver` console script (its __main__ is that script's file)."""
    main_file = getattr(sys.modules.get("__main__"), "__file__", None) or ""
    return os.path.basename(main_file) in ("perceiver", "perceiver.exe", "perceiver-script.py")


if _launched_as_the_perceiver_script() and not interrupts.installed():
    interrupts.install(starting=True)  # before the imports below: Ctrl-C during start-up is "interrupted" too

import typer  # noqa: E402

from perceiver_cli import __version__
from perceiver_cli.errors import EXIT_INTERNAL, EXIT_USAGE, PerceiverError

from perceiver_cli.commands.lazy import lazy_group  # noqa: E402
from perceiver_cli.kinds import AUTOENCODE_VIDEO, CLASSIFY, FILL_MASK, FLOW  # noqa: E402


def _command(name: str, summary: str) -> tuple[str, str, str]:
    """A command whose module and function are named after it (fill-mask: commands.fill_mask.fill_mask)."""
    function = name.replace("-", "_")
    return f"perceiver_cli.commands.{function}", function, summary


# name -> (module, attribute, one-line summary). A command's module is imported only when it runs or
# shows its own help, so `perceiver --help` imports none of them (nor torch, cv2 or av).
COMMANDS = {
    FILL_MASK: _command(FILL_MASK, "Fill masked byte spans of texts."),
    CLASSIFY: _command(CLASSIFY, "Classify images into the 1000 ImageNet classes."),
    FLOW: _command(FLOW, "Optical flow between frames of images, folders or videos."),
    "draw-flow": _command("draw-flow", "Draw flow files as colour pictures (no model)."),
    AUTOENCODE_VIDEO: _command(AUTOENCODE_VIDEO, "Reconstruct videos and their sound, and name the action."),
    "eval": ("perceiver_cli.commands.eval", "app", "Score a checkpoint on a dataset, beside the paper's figures."),
    "weights": ("perceiver_cli.commands.weights", "app", "List, download, verify and import checkpoints."),
}


app = typer.Typer(
    name="perceiver",
    cls=lazy_group(COMMANDS),
    help="Run DeepMind's pretrained Perceiver IO models on your own files.\n\n"
    "Exit codes: 0 success, 1 some inputs failed (the rest ran), 2 usage or setup error, 3 internal error (a bug),"
    " 130 interrupted.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

_state = {"debug": False}


def _exception_classes(*names: str) -> tuple:
    # Recent typer releases bundle their own click (typer._click, with Exit and Abort in typer.exceptions);
    # older ones raise click's own. Catch whichever exist.
    found = []
    for module_name, attr in (n.rsplit(":", 1) for n in names):
        try:
            found.append(getattr(__import__(module_name, fromlist=[attr]), attr))
        except (ImportError, AttributeError):
            pass
    return tuple(found)


_CLICK_EXIT = _exception_classes("typer.exceptions:Exit", "click.exceptions:Exit")
_CLICK_ERROR = _exception_classes("typer._click.exceptions:ClickException", "click.exceptions:ClickException")
_CLICK_ABORT = _exception_classes("typer.exceptions:Abort", "click.exceptions:Abort")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"perceiver-cli {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: Optional[bool] = typer.Option(
        None, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
    debug: bool = typer.Option(False, "--debug", help="Show full tracebacks for errors (also after the command)."),
) -> None:
    _state["debug"] = _state["debug"] or debug


def _without_debug(args: list[str]) -> tuple[list[str], bool]:
    """args less every --debug before a `--` (accepted anywhere on the line), and whether one was there."""
    end = args.index("--") if "--" in args else len(args)
    kept = [a for a in args[:end] if a != "--debug"] + args[end:]
    return kept, len(kept) != len(args)


def _usage_error(exc) -> str:
    """A click usage error as one line, without its Usage block."""
    message = " ".join(exc.format_message().split())
    context = getattr(exc, "ctx", None)
    if context is not None and context.command_path and context.command_path != "perceiver":
        return f"{context.command_path.removeprefix('perceiver ')}: {message}"
    return message


def _reader_gone() -> int:
    """`perceiver ... | head`: the reader of our stdout went away. That is not an error of ours: exit 0 quietly,
    with stdout pointed at /dev/null so that the interpreter's last flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # stdout replaced by an object without a file descriptor
        pass
    return 0


def _no_stdout() -> int:
    """Started with standard output closed (`>&-`): results would have nowhere to go; say so, exit 2."""
    if sys.stderr is not None:
        print("perceiver: error: standard output is closed; redirect it to a file or to /dev/null",
              file=sys.stderr, flush=True)
    return EXIT_USAGE


def _interrupted(as_script: bool) -> int:
    """Remove temporary files, say so and return 130. As a script, further Ctrl-C or SIGTERM are ignored from
    here on: one still pending must not turn the orderly exit into death by signal while the interpreter
    shuts down."""
    if as_script:
        interrupts.ignore_further()
    from perceiver_cli.io.atomic import remove_leftovers

    remove_leftovers()
    print(interrupts.MESSAGE, file=sys.stderr)
    return interrupts.EXIT_INTERRUPTED


def main(argv: Optional[list[str]] = None) -> int:
    """Run the CLI; returns (and, as a console script, exits with) the exit code."""
    as_script = argv is None
    args = sys.argv[1:] if argv is None else list(argv)
    args, _state["debug"] = _without_debug(args)
    if as_script and not interrupts.installed():
        interrupts.install(starting=True)
    try:
        if as_script:
            interrupts.started()  # from here a signal raises KeyboardInterrupt, answered here or in _run
        code = _run(args, as_script) if sys.stdout is not None else _no_stdout()
    except KeyboardInterrupt:  # a signal that arrived while _run was answering another outcome
        code = _interrupted(as_script)
    if as_script and interrupts.requested() and code != interrupts.EXIT_INTERRUPTED:
        code = _interrupted(as_script)  # the signal's exception was lost on the way; the flag was not
    if as_script and code == interrupts.EXIT_INTERRUPTED:
        # Leave now: a worker thread blocked in a read (a FIFO, a stalled disk) must not hold the exit.
        # Temporary files are gone already (_interrupted); only the streams need flushing.
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):
                pass
        os._exit(code)
    if as_script:
        sys.exit(code)
    return code


def _run(args: list[str], as_script: bool) -> int:
    """Run one command line and turn every outcome into an exit code (messages on stderr)."""
    try:
        command = typer.main.get_command(app)
        code = command.main(args=args, prog_name="perceiver", standalone_mode=False)
        code = code if isinstance(code, int) else 0
        if code == 130:  # typer turns Ctrl-C inside a command into Exit(130) and, not standalone, returns it
            code = _interrupted(as_script)
    except _CLICK_EXIT as exc:
        code = exc.exit_code
        if code == 130:
            code = _interrupted(as_script)
    except _CLICK_ERROR as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # `perceiver`, `perceiver weights`: the help, exit 2
            print(exc.format_message(), file=sys.stderr)
            code = EXIT_USAGE
        else:
            print(f"perceiver: error: {_usage_error(exc)}", file=sys.stderr)
            code = EXIT_USAGE
    except (KeyboardInterrupt, *_CLICK_ABORT):
        code = _interrupted(as_script)
    except PerceiverError as exc:
        if _state["debug"]:
            import traceback

            traceback.print_exc()
        print(f"perceiver: error: {' '.join(str(exc).split())}", file=sys.stderr)
        code = exc.exit_code
    except BrokenPipeError:
        code = _reader_gone()
    except SystemExit as exc:
        # click answers a broken pipe inside a command with exit(1), which we document as "some inputs failed"
        if not isinstance(exc.__context__, BrokenPipeError):
            raise
        code = _reader_gone()
    except Exception as exc:  # what no command turned into its own words: one line; --debug adds the traceback
        if _state["debug"]:
            import traceback

            traceback.print_exc()
        code = _unexpected(exc)
    return code


def _unexpected(exc: Exception) -> int:
    """The exit code and line of an error no command put into words: the system refusing (a file operation,
    memory) is a setup error, exit 2; anything else is a bug of ours, exit 3."""
    if isinstance(exc, MemoryError):
        print("perceiver: error: out of memory: this run needs more memory than the machine gives it (a smaller "
              "--batch-size or smaller inputs need less)", file=sys.stderr)
        return EXIT_USAGE
    if isinstance(exc, OSError) and exc.strerror:
        where = " -> ".join(os.fsdecode(name) for name in (exc.filename, exc.filename2) if name is not None)
        message = f"{where}: {exc.strerror}" if where else exc.strerror
        print(f"perceiver: error: {' '.join(message.split())}", file=sys.stderr)
        return EXIT_USAGE
    detail = " ".join(str(exc).split())
    print(f"perceiver: internal error: {type(exc).__name__}: {detail} (run with --debug for the traceback)",
          file=sys.stderr)
    return EXIT_INTERNAL
