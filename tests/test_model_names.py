"""--model names: a misspelt one lists the command's own models once and suggests the closest; a short name of
another task's checkpoint is refused at once, before any cache or hub lookup."""

from __future__ import annotations

import pytest


def test_a_misspelt_model_lists_the_commands_models_once_and_suggests_the_closest(run_main, tmp_path):
    code, out, err = run_main("classify", tmp_path / "x.jpg", "-m", "vison-conv")
    assert code == 2 and out == ""
    assert err == ("perceiver: error: unknown checkpoint 'vison-conv': use one of vision-conv, vision-fourier, "
                   "vision-learned, a hub repo id (owner/name), a checkpoint folder or a name given to "
                   "`perceiver weights import`; did you mean vision-conv?\n")


@pytest.mark.parametrize("command, inputs, model, runs", [
    ("fill-mask", ["a [MASK]"], "vision-conv", "classify"),
    ("classify", ["x.jpg"], "flow", "flow"),
    ("flow", ["a.png", "b.png"], "multimodal", "autoencode-video"),
])
def test_a_short_name_of_another_tasks_checkpoint_is_refused_without_any_lookup(run_main, monkeypatch, command,
                                                                                 inputs, model, runs):
    from perceiver_cli.weights import resolve

    def no_lookup(*args, **kwargs):
        raise AssertionError("the cache or the hub was consulted")

    for name in ("find_local", "find_imported", "cached_snapshot", "ensure_downloaded", "imported_checkpoints"):
        monkeypatch.setattr(resolve, name, no_lookup)
    code, out, err = run_main(command, *inputs, "-m", model)
    assert code == 2 and out == ""
    assert err.startswith(f"perceiver: error: --model {model}: the {model} checkpoint runs {runs}, not {command}; ")
    assert err.count("\n") == 1
