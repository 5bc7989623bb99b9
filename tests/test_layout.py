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

import layout
from tc_lib import methods
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
    fields = RunConfig.notebook_defaults()  # every field but the method options, which come as one dict
    assert set(params) == set(fields)  # so papermill never meets an unknown parameter
    for name, info in params.items():
        assert ast.literal_eval(info["default"]) == fields[name], name
    options = {f.name for f in dataclasses.fields(RunConfig)} - set(fields)
    assert options == set(methods.OPTIONS) and fields["method_options"] == {}


def test_a_config_goes_through_the_notebook_parameters_unchanged():
    cfg = RunConfig(method="lora", lora_r=4, peft_target_modules=("query",), seed=3, output_dir="/runs")
    params = cfg.notebook_parameters()
    assert params["method_options"] == {"lora_r": 4, "peft_target_modules": ["query"]} and "lora_r" not in params
    assert RunConfig.from_namespace(params) == cfg
    with pytest.raises(ConfigError, match=r"method_options: unknown option\(s\) lora_rank \(did you mean "
                                          r"lora_rank -> lora_r\?\)"):
        RunConfig.from_namespace({"method": "lora", "method_options": {"lora_rank": 4}})
    with pytest.raises(ConfigError, match=r"lora_r also set as a variable of its own"):
        RunConfig.from_namespace({"method": "lora", "lora_r": 2, "method_options": {"lora_r": 4}})
    with pytest.raises(ConfigError, match=r"field 'lora_r': expected an integer >= 1, got 0"):
        RunConfig.from_namespace({"method": "lora", "method_options": {"lora_r": 0}})


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


def test_no_import_cycle_and_no_upward_import_against_the_floors_architecture_states():
    floors = layout.read_floors((REPO / "ARCHITECTURE.md").read_text())
    assert floors["tc_lib.report"] > floors["tc_lib.grid"] == floors["tc_lib.memory"] > 0
    assert layout.problems(PACKAGE, floors) == []
    graph = layout.imports(PACKAGE)  # the resolution sees relative imports of top-level modules
    assert {"tc_lib.config", "tc_lib.results", "tc_lib.splits"} <= graph["tc_lib.train"]
    assert "tc_lib.fonts" in graph["tc_lib.memory.answer"] and "tc_lib.grid.execute" in graph["tc_lib.report.render"]


def _plant(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_layout_check_fails_on_a_planted_cycle_an_upward_import_and_an_import_of_nothing(tmp_path):
    floors = {"pkg.room": 1, "pkg.other": 1, "pkg.cli": 2}
    clean = {"__init__.py": "", "core.py": "X = 1\n", "helper.py": "from .core import X\n",
             "room/__init__.py": "from .part import Y\n", "room/part.py": "from ..core import X\nY = X\n",
             "other/__init__.py": "", "cli.py": "from .room import part\nimport pkg.other\n"}
    pkg = _plant(tmp_path / "clean" / "pkg", clean)
    assert layout.problems(pkg, floors) == []
    assert layout.imports(pkg)["pkg.cli"] == {"pkg.room.part", "pkg.other"}
    # a cycle through a lazy import inside a function (the kind train <-> reference was)
    cyclic = _plant(tmp_path / "cycle" / "pkg", {**clean, "core.py": "X = 1\ndef f():\n    from .helper import X\n"})
    assert layout.problems(cyclic, floors) == ["import cycle: pkg.core -> pkg.helper -> pkg.core"]
    # the core reaching up into a room, and one room reaching sideways into another
    up = _plant(tmp_path / "up" / "pkg", {**clean, "helper.py": "from .core import X\nfrom .room.part import Y\n",
                                          "other/__init__.py": "from ..room import Y\n"})
    assert layout.problems(up, floors) == [
        "upward import: pkg.helper (floor 0) imports pkg.room.part (floor 1)",
        "upward import: pkg.other (floor 1) imports pkg.room (floor 1)"]
    # a lazy relative import left pointing at the old place of a module that moved into a room
    moved = _plant(tmp_path / "moved" / "pkg", {**clean, "room/part.py": "def f():\n    from .core import X\n"})
    assert layout.problems(moved, floors) == ["pkg.room.part imports .core: no such module (pkg.room.core)"]


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
