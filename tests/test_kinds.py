"""The kinds' rows (perceiver_cli.kinds) are the one place a kind is spelt out, and what derives from them runs."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from perceiver_cli.kinds import KINDS, input_widths
from tiny_models import make_tiny_checkpoint

PACKAGE = Path(__file__).resolve().parents[1] / "perceiver_cli"


def _string_literals(path: Path) -> set[str]:
    """The string constants of a module, docstrings left out."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings}


# "flow" is also a task's and command's name (spelt once beside the rows, kinds.FLOW) and Sintel's folder name.
@pytest.mark.parametrize("name", [kind.name for kind in KINDS])
def test_a_kind_name_is_spelt_in_at_most_three_modules(name):
    spelt = sorted(str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py") if name in _string_literals(path))
    assert "kinds.py" in spelt and len(spelt) <= 3, spelt


def test_every_task_of_the_rows_is_a_command_and_a_task_named_after_it():
    from perceiver_cli.cli import COMMANDS
    from perceiver_cli.tasks.autoencode import AutoencodeTask
    from perceiver_cli.tasks.classify import ClassifyTask
    from perceiver_cli.tasks.fill_mask import FillMaskTask
    from perceiver_cli.tasks.flow import FlowTask

    tasks = {task.name: task for task in (FillMaskTask, ClassifyTask, FlowTask, AutoencodeTask)}
    assert sorted(tasks) == sorted({kind.task for kind in KINDS}) and set(tasks) <= set(COMMANDS)
    for name, task in tasks.items():
        assert task.default_model == next(kind.name for kind in KINDS if kind.task == name)


@pytest.mark.parametrize("kind", KINDS, ids=[kind.name for kind in KINDS])
def test_each_kind_loads_and_runs_its_example_input_as_verify_does(kind, tmp_path):
    from perceiver_cli.load import load_checks, model_from_directory

    make_tiny_checkpoint(kind.name, tmp_path)
    checks = load_checks(tmp_path)
    assert [(c.status, c.subject) for c in checks] == [("OK", "config"), ("OK", "load"), ("OK", "run"),
                                                       ("NOTE", "compute")], checks
    model = model_from_directory(tmp_path)
    assert model.spec.kind == kind.name and type(model).__name__ == kind.model
    # the encoder reads tokens as wide as the row says
    assert model.perceiver.encoder.cross_attention.attention.self.layernorm2.weight.shape[0] == \
        input_widths(model.spec)["tokens"]
