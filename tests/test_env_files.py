"""The environment files agree with each other and with what the code imports."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def pins(lines) -> list[str]:
    return [line.split("#")[0].strip() for line in lines if line.split("#")[0].strip()]


def test_environment_yml_mirrors_requirements():
    requirements = pins((REPO / "requirements.txt").read_text().splitlines())
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    pip_section = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert pip_section == requirements
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9a-z.]*", p) for p in requirements)  # exact pins only
    assert "torch==2.13.0" in requirements


def test_every_imported_package_is_pinned():
    requirements = {p.split("==")[0].lower() for p in pins((REPO / "requirements.txt").read_text().splitlines())}
    import_names = {"torch": "torch", "transformers": "transformers", "peft": "peft", "adapters": "adapters",
                    "datasets": "datasets", "sklearn": "scikit-learn", "scipy": "scipy", "numpy": "numpy",
                    "pandas": "pandas", "matplotlib": "matplotlib", "papermill": "papermill", "nbconvert": "nbconvert",
                    "nbformat": "nbformat", "yaml": "pyyaml", "pooch": "pooch", "tqdm": "tqdm",
                    "accelerate": "accelerate", "safetensors": "safetensors", "tokenizers": "tokenizers",
                    "IPython": "ipykernel", "requests": "pooch", "traitlets": "nbconvert",
                    "jupyter_client": "nbclient", "huggingface_hub": "huggingface-hub"}
    stdlib_or_own = {"tc_lib", "__future__", "planted"}  # planted: the tests' helpers, which a bench reuses
    used = set()
    for path in list((REPO / "tc_lib").rglob("*.py")) + list((REPO / "bench").glob("*.py")):
        for match in re.finditer(r"^\s*(?:from|import)\s+([A-Za-z_][A-Za-z0-9_]*)", path.read_text(), re.M):
            used.add(match.group(1))
    import sys

    third_party = {m for m in used if m not in sys.stdlib_module_names and m not in stdlib_or_own and m != "_"}
    missing = sorted(m for m in third_party if import_names.get(m, m) not in requirements)
    assert not missing, f"imported but not pinned: {missing}"
