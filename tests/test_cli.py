"""The CLI skeleton: help, version, usage errors and their exit codes, fast start-up."""

from __future__ import annotations

import subprocess
import sys

import pytest

from perceiver_cli.cli import main


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip().startswith("perceiver-cli ")


def test_help_lists_the_commands(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for command in ("fill-mask", "classify", "flow", "autoencode-video", "weights"):
        assert command in out


@pytest.mark.parametrize("argv", [[], ["weights"], ["classify", "--bogus"], ["no-such-command"],
                                  ["fill-mask", "x", "--top-k", "many"]])
def test_usage_errors_exit_2_without_traceback(capsys, argv):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err


def test_help_does_not_import_torch():
    code = "import sys; from perceiver_cli.cli import main; main(['--help']); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False"


@pytest.mark.parametrize("words", [["fill-mask"], ["classify"], ["flow"], ["draw-flow"], ["autoencode-video"],
                                   ["eval"], ["eval", "flow"], ["eval", "classify"], ["eval", "autoencode-video"],
                                   ["weights"], ["weights", "verify"]])
def test_every_help_is_shown_without_loading_torch_cv2_or_av(words):
    # Each subcommand's module is imported to show its help: none of them may pull the heavy libraries in.
    heavy = ("torch", "cv2", "av")
    code = (f"import sys, io, contextlib; from perceiver_cli.cli import main\n"
            f"with contextlib.redirect_stdout(io.StringIO()) as out: code = main({[*words, '--help']!r})\n"
            f"print(code, 'Usage:' in out.getvalue(), [m for m in {heavy!r} if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().split(maxsplit=2) == ["0", "True", "[]"], out


def test_every_command_help_ends_with_examples(capsys):
    for command in ("fill-mask", "classify", "flow", "draw-flow", "autoencode-video"):
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert "Examples:" in out and f"perceiver {command}" in out.split("Examples:")[1], command
