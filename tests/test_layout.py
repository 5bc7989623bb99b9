"""The house rules: the notebook↔RunConfig contract, imports pointing down with no cycle, small modules,
and a library that neither prints nor changes global logging or warnings when imported."""

from __future__ import annotations

import ast
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tc_lib.config import RunConfig
from tc_lib.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "tc_lib"
MAX_LINES = 300
# The top layer may print (it is the command line); everything else logs.
PRINTING = {"cli.py", "inference_command.py", "grid/command.py", "grid/status.py", "memory/command.py", "report/command.py"}


def modules() -> dict[str, Path]:
    return {str(p.relative_to(PACKAGE).with_suffix("")).replace("/", "."): p for p in PACKAGE.rglob("*.py")}


def test_train_notebook_parameters_are_runconfig_fields_with_its_defaults():
    import papermill as pm

    params = pm.inspect_notebook(str(REPO / "notebooks" / "train.ipynb"))
    fields = {f.name: f.default for f in dataclasses.fields(RunConfig)}
    assert set(params) == set(fields)  # every field, so papermill never meets an unknown parameter
    for name, info in params.items():
        assert ast.literal_eval(info["default"]) == fields[name], name


def test_train_notebook_imports_nothing_from_the_grid():
    nb = json.loads((REPO / "notebooks" / "train.ipynb").read_text())
    source = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    imported = {n.module for n in ast.walk(ast.parse(source)) if isinstance(n, ast.ImportFrom)}
    assert imported and not any(m.startswith("tc_lib.grid") for m in imported), imported


def test_near_miss_notebook_variable_is_an_error():
    namespace = {"method": "lora", "learning_rte": 1e-3, "In": ["x"], "_": None, "RunConfig": RunConfig}
    with pytest.raises(ConfigError, match=r"unknown field\(s\) learning_rte \(did you mean learning_rte -> "
                                          r"learning_rate\?\)"):
        RunConfig.from_namespace(namespace)
    cfg = RunConfig.from_namespace({"method": "lora", "output_dir": "outputs/runs"}, base_dir="/project")
    assert cfg.output_dir == "/project/outputs/runs" and cfg.run_dir == Path("/project/outputs/runs") / cfg.run_id


@pytest.mark.parametrize("old,new", [("precision", "torch_dtype"), ("precision", "mixed_precision"),
                                     ("lora_target_modules", "peft_target_modules")])
def test_old_config_fields_name_their_replacement(old, new):
    with pytest.raises(ConfigError, match=rf"params.yaml: field '{old}' .*{new}"):
        RunConfig.from_dict({old: "bf16"}, source="params.yaml")


def _imports(name: str, path: Path) -> set[str]:
    """tc_lib modules that `name` imports (at any depth of the file: lazy imports count too)."""
    package = name.rsplit(".", 1)[0] if path.name != "__init__.py" else name
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if package != "__init__" else []
            base = [b for b in base if b != "__init__"]
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{target}.{alias.name}" if target else alias.name
                found.add(full if full in modules() or f"{full}.__init__" in modules() else target)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tc_lib."):
            found.add(node.module[len("tc_lib."):])
    known = modules()
    return {m if m in known else f"{m}.__init__" for m in found if m and (m in known or f"{m}.__init__" in known)}


def test_no_import_cycle_and_no_upward_import():
    graph = {name: _imports(name, path) - {name} for name, path in modules().items()}
    # grid, report and memory may use the one-run core; the core never imports them or the CLI
    core = {"config", "data", "sources", "methods", "models", "train", "metrics", "results", "runs", "errors"}
    for name in core:
        upward = {m for m in graph[name] if m.split(".")[0] in ("grid", "report", "memory", "cli")}
        assert not upward, (name, upward)
    assert not any(m == "cli" for deps in graph.values() for m in deps), "nothing imports the CLI"
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for dep in graph.get(node, ()):
            if dep.endswith("__init__") and dep.rsplit(".", 1)[0] == node.rsplit(".", 1)[0]:
                continue  # a module of a package may use its package's public names
            assert state.get(dep) != 1, f"import cycle: {' -> '.join(stack + [dep])}"
            if dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_modules_are_small():
    sizes = {name: len(path.read_text().splitlines()) for name, path in modules().items()}
    assert {n: s for n, s in sizes.items() if s > MAX_LINES} == {}


def test_only_the_command_line_prints():
    for name, path in modules().items():
        rel = str(path.relative_to(PACKAGE))
        calls = [n for n in ast.walk(ast.parse(path.read_text()))
                 if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "print"]
        assert rel in PRINTING or not calls, f"{rel} prints"


def test_importing_the_library_changes_no_global_logging_or_warnings():
    code = """
import logging, warnings, importlib, pkgutil
import numpy, pandas, scipy.stats, sklearn.metrics, yaml  # what tc_lib's modules import at their top
before_filters = list(warnings.filters)
names = ["", "transformers", "adapters", "papermill", "huggingface_hub", "datasets"]
before = {n: logging.getLogger(n).level for n in names}
import tc_lib
for m in pkgutil.walk_packages(tc_lib.__path__, "tc_lib."):
    if not m.name.endswith("__main__"):
        importlib.import_module(m.name)
after = {n: logging.getLogger(n).level for n in names}
ours = [f for f in warnings.filters if f not in before_filters]
print(before == after, ours)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[0] == "True" and "[]" in out.stdout
