"""Each task lives in its own modules: a task module imports the shared task machinery and its own family
(flow_truth for flow, eval_flow's flow), never another task's modules."""

from __future__ import annotations

from test_import_graph import graph

TASKS = "perceiver_cli.tasks"
# Modules every task may use: the item and result types, engines and their options, reporting (the HTML
# report's listener and pages included), input handling, evaluation runs.
SHARED = {"base", "engine", "ray_engine", "run_options", "report", "report_html", "report_pages", "packed_outputs",
          "inputs", "manifest", "manifest_store", "shards", "evaluation", "__init__"}


def family(module: str) -> str:
    """The task a tasks module belongs to: eval_flow and flow_truth are flow's, draw_flow is draw-flow's."""
    return module.removeprefix("eval_").split("_")[0] if not module.startswith("draw_") else module


def task_imports() -> list[tuple[str, str]]:
    """(module, imported module) for every import of one tasks module by another, both short names."""
    found = []
    modules = graph()
    for module, names in modules.items():
        if not module.startswith(TASKS + "."):
            continue
        here = module[len(TASKS) + 1:]
        for name in names:
            if name.startswith(TASKS + "."):
                there = name[len(TASKS) + 1:].split(".")[0]
                if there != here and f"{TASKS}.{there}" in modules:
                    found.append((here, there))
    return sorted(set(found))


def test_the_task_modules_are_seen():
    pairs = task_imports()
    assert ("flow", "flow_truth") in pairs and ("eval_flow", "flow") in pairs and ("classify", "inputs") in pairs


def test_no_task_module_imports_another_tasks_modules():
    offenders = [f"{here} imports {there}" for here, there in task_imports()
                 if here not in SHARED and there not in SHARED
                 and (family(here) != family(there) or (there.startswith("eval_") and here != there))]
    assert offenders == []


def test_the_shared_task_modules_import_no_task():
    offenders = [f"{here} imports {there}" for here, there in task_imports()
                 if here in SHARED and there not in SHARED]
    assert offenders == []
