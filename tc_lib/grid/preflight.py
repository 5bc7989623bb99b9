"""Before a grid starts: everything its runs need, checked once — the data (fetched when missing, with
the pinned checksums), every model, the notebook kernel, the output folder and the device. A grid whose
runs would all fail on one of these never starts: one error names what is missing and what to do."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..config import RunConfig
from ..device import cuda_problem, emulated_bf16, resolve_autocast, uses_bf16
from ..errors import ConfigError, DataError, TcError
from ..methods import REFERENCE_MODEL, REFERENCES
from ..precision import AUTO

KERNEL = "python3"  # the kernel every run's notebook executes in (grid.execute)


@dataclass(frozen=True)
class Finding:
    check: str  # data | model | kernel | output | device
    ok: bool
    detail: str
    changed: bool = False  # the preflight did something (downloaded data): worth a line in a real run

    def line(self) -> str:
        return f"{'ok' if self.ok else 'PROBLEM':>7}  {self.check:<7} {self.detail}"


def _data(configs: Sequence[RunConfig], *, fetch: bool, progressbar: bool) -> list[Finding]:
    from ..data import files_for
    from ..sources import data_root, fetch_files, mirror_url, verify_files

    names = sorted({name for cfg in configs for name in cfg.datasets})
    files = files_for(names)
    root, env = data_root().resolve(), os.environ.get("TC_DATA_DIR")
    where = f"{root} (TC_DATA_DIR={env})" if env else f"{root} (TC_DATA_DIR not set)"
    rows = verify_files(files, root=root)
    wrong = [row for row in rows if row["status"] == "wrong"]
    if wrong:
        return [Finding("data", False, row["detail"]) for row in wrong]
    missing = [f for f, row in zip(files, rows) if row["status"] == "missing"]
    if not missing:
        return [Finding("data", True, f"{len(files)} files of {', '.join(names)} verified in {where}")]
    listed = ", ".join(f.relpath for f in missing)
    if not fetch:
        return [Finding("data", True, f"{len(missing)} of {len(files)} files missing in {where}, fetched before the "
                                      f"first run from {mirror_url()}: {listed}")]
    try:
        fetch_files(missing, root=root, progressbar=progressbar)
    except DataError as err:
        return [Finding("data", False, f"{len(missing)} of {len(files)} data files missing in {where}: {listed}; "
                                       f"fetching them failed: {err}. On a machine with internet run `python -m "
                                       f"tc_lib data fetch {' '.join(names)}`, or set TC_DATA_DIR to a folder that "
                                       "holds them, or TC_DATA_MIRROR to a mirror of the raw files")]
    return [Finding("data", True, f"{len(missing)} files downloaded and verified (sha256) into {where}, "
                                  f"{len(files) - len(missing)} were present", changed=True)]


def _models(configs: Sequence[RunConfig]) -> list[Finding]:
    from ..models import check_model

    found = []
    for name in dict.fromkeys(cfg.model for cfg in configs if cfg.model != REFERENCE_MODEL):
        try:
            found.append(Finding("model", True, f"{name}: {check_model(name)}"))
        except ConfigError as err:
            found.append(Finding("model", False, str(err)))
    return found


def _kernel() -> list[Finding]:
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        return [Finding("kernel", False, f"no Jupyter kernel {KERNEL!r}: the runs' notebooks cannot start; "
                                         "install ipykernel in this environment (make venv)")]
    python = sys.executable if spec.argv[0] in ("python", "python3") else spec.argv[0]  # jupyter's own substitution
    return [Finding("kernel", True, f"{KERNEL} ({python})")]


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _outputs(configs: Sequence[RunConfig]) -> list[Finding]:
    found = []
    for folder in dict.fromkeys(Path(cfg.output_dir).resolve() for cfg in configs):
        base = _nearest_existing(folder)
        if not base.is_dir():
            found.append(Finding("output", False, f"output_dir {folder}: {base} is a file, not a folder"))
        elif not os.access(base, os.W_OK | os.X_OK):
            found.append(Finding("output", False, f"output_dir {folder}: {base} is not writable by this user"))
        else:
            found.append(Finding("output", True, f"{folder} writable"))
    return found


def _device(configs: Sequence[RunConfig], *, local: bool) -> list[Finding]:
    """Where a local grid's runs will train, said before they start; `device: cuda` that cannot be had
    (and fp16 or emulated bf16) is one error here, never a grid of failed or CPU-bound runs."""
    import torch

    if not local:  # the runs' nodes, not this one, have the GPUs: each run checks its own (train.py)
        return [Finding("device", True, "checked by each run on the node that runs it")]
    encoders = [cfg for cfg in configs if cfg.method not in REFERENCES]
    problem = cuda_problem()
    if problem is None:
        names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
        bf16 = [cfg.run_id for cfg in encoders if uses_bf16(cfg) and cfg.device != "cpu"]
        emulated = emulated_bf16(range(torch.cuda.device_count())) if bf16 else None
        if emulated:
            return [Finding("device", False, f"bf16 is emulated on {emulated}; {len(bf16)} runs ask for it "
                                             f"(first {bf16[0]}); use mixed_precision: fp16")]
        return [Finding("device", True, f"device auto/cuda -> cuda: {torch.cuda.device_count()} visible "
                                        f"({', '.join(names)}), torch {torch.__version__}"
                                        + _auto_autocast(encoders, "cuda"))]
    cuda = [cfg.run_id for cfg in configs if cfg.device == "cuda"]
    if cuda:
        return [Finding("device", False, f"device: cuda, but {problem}; {len(cuda)} runs ask for it "
                                         f"(first {cuda[0]}); use device: auto or cpu to train on the CPU")]
    fp16 = [cfg.run_id for cfg in encoders if cfg.mixed_precision == "fp16"]
    if fp16:
        return [Finding("device", False, f"mixed_precision: fp16 needs a CUDA device and {problem}; {len(fp16)} "
                                         f"runs ask for it (first {fp16[0]}); use bf16 or no")]
    if not encoders:
        return [Finding("device", True, "cpu (TF-IDF reference runs only)")]
    auto = sum(cfg.device == "auto" for cfg in encoders)
    where = f"device auto -> cpu ({problem})" if auto else "cpu (device: cpu)"
    return [Finding("device", True, where + _auto_autocast(encoders, "cpu"))]


def _auto_autocast(encoders: Sequence[RunConfig], device: str) -> str:
    """What `mixed_precision: auto` becomes on this machine's `device`, when some run asks for it."""
    if not any(cfg.mixed_precision == AUTO for cfg in encoders):
        return ""
    used = resolve_autocast(AUTO, device)
    return f"; mixed_precision auto -> {used} ({'native' if used == 'bf16' else 'no native'} bf16 on this {device})"


def preflight(configs: Sequence[RunConfig], *, fetch: bool = True, progressbar: bool = False,
              local: bool = True) -> list[Finding]:
    """Every finding, the data first; with `fetch`, missing data files are downloaded (sha256-checked)."""
    if not configs:
        return []
    found = _models(configs) + _kernel() + _outputs(configs) + _device(configs, local=local)
    fetch = fetch and all(f.ok for f in found)  # no download for a grid that cannot start anyway
    return _data(configs, fetch=fetch, progressbar=progressbar) + found


def require(found: Sequence[Finding]) -> None:
    """One TcError listing every problem among `found`; nothing when all are ok."""
    problems = [f for f in found if not f.ok]
    if problems:
        detail = " | ".join(f"{f.check}: {f.detail}" for f in problems)
        raise TcError(f"preflight: {len(problems)} problem(s), no run was started — {detail}")
