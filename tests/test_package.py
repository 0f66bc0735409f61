"""`import perceiver_cli` exposes the Python API's names (api.__all__) without importing it until one is used."""

from __future__ import annotations

import subprocess
import sys

import perceiver_cli as pc


def test_a_name_the_api_lists_is_the_packages_without_another_list(monkeypatch):
    from perceiver_cli import api

    monkeypatch.setattr(api, "__all__", [*api.__all__, "a_new_function"])
    monkeypatch.setattr(api, "a_new_function", lambda: "new", raising=False)
    assert pc.a_new_function() == "new"
    assert set(api.__all__) <= set(dir(pc))
    assert pc.flow is api.flow and pc.load_model is api.load_model


def test_submodules_private_and_unknown_names_leave_the_api_unloaded():
    code = ("import sys, perceiver_cli as pc\n"
            "from perceiver_cli import cli, kinds, choices\n"
            "print(hasattr(pc, '_private'), hasattr(pc, '__wrapped__'), 'perceiver_cli.api' in sys.modules,"
            " 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False", "False"]


def test_an_unknown_name_is_an_attribute_error():
    try:
        pc.no_such_name
    except AttributeError as error:
        assert "no_such_name" in str(error)
    else:
        raise AssertionError("perceiver_cli.no_such_name did not raise AttributeError")
