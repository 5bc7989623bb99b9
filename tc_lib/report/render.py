"""Rendering the report: execute notebooks/report.ipynb with papermill, export HTML (code hidden) and PDF."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

from ..errors import TcError

REPO = Path(__file__).resolve().parents[2]
REPORT_NOTEBOOK = REPO / "notebooks" / "report.ipynb"
TEMPLATES = Path(__file__).resolve().parent / "templates"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def execute_report(*, runs_dir: Path, out_dir: Path, notebook: Path = REPORT_NOTEBOOK, params: Sequence[Path] = (),
                   memory_dir: Path = Path("outputs/memory"), exports: Sequence[str] = ()) -> Path:
    import papermill as pm

    from ..grid.execute import guarded_kernel_manager  # IPC sockets, no SIGINT at shutdown: a quiet console

    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / "report.ipynb"
    parameters = {"runs_dir": str(runs_dir.resolve()), "params_files": [str(Path(p).resolve()) for p in params],
                  "memory_dir": str(memory_dir.resolve()), "exports": list(exports)}
    try:
        pm.execute_notebook(str(notebook), str(executed), parameters=parameters,
                            kernel_name="python3", progress_bar=False, cwd=str(notebook.parent), start_timeout=180,
                            kernel_manager_class=guarded_kernel_manager(os.getcwd()))
    except pm.PapermillExecutionError as err:
        raise TcError(f"report notebook failed in cell {err.exec_count}: {err.ename}: {err.evalue} "
                      f"(see {executed})") from None
    return executed


def to_html(executed: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="cjk_lab", extra_template_basedirs=[str(TEMPLATES)], exclude_input=True,
                            exclude_input_prompt=True, exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nbformat.read(executed, as_version=4))
    html_path = executed.with_suffix(".html")
    html_path.write_text(body, encoding="utf-8")
    return html_path


def chromium() -> str:
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise TcError("PDF export needs Chromium: run `make sysdeps` (Debian: apt-get install chromium fonts-noto-cjk)")


def to_pdf(html_path: Path) -> Path:
    """Print the HTML with headless Chromium (fonts come from the system: install fonts-noto-cjk)."""
    pdf_path = html_path.with_suffix(".pdf")
    with tempfile.TemporaryDirectory(prefix="tc_chromium_") as profile:
        cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
               "--no-first-run", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", f"--user-data-dir={profile}", "--no-pdf-header-footer",
               "--virtual-time-budget=10000", f"--print-to-pdf={pdf_path}", html_path.resolve().as_uri()]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
    if done.returncode != 0 or not pdf_path.is_file() or pdf_path.stat().st_size == 0:
        raise TcError(f"Chromium could not print {html_path} to PDF: {done.stderr.strip().splitlines()[-1:]}")
    return pdf_path


def build_report(*, runs_dir: Path, out_dir: Path, pdf: bool = False, params: Sequence[Path] = (),
                 memory_dir: Path = Path("outputs/memory")) -> list[Path]:
    """report.ipynb, .html (and .pdf), with the exported results.csv / results.xlsx beside them."""
    from .export import write_export

    if not runs_dir.is_dir():
        raise TcError(f"{runs_dir}: no runs folder; run a grid first (python -m tc_lib run params/quick.yaml)")
    for path in params:
        if not Path(path).is_file():
            raise TcError(f"--params {path}: no such file")
    exports = write_export(runs_dir, csv=out_dir / "results.csv", xlsx=out_dir / "results.xlsx", params=params)
    executed = execute_report(runs_dir=runs_dir, out_dir=out_dir, params=params, memory_dir=memory_dir,
                              exports=[p.name for p in exports])
    html = to_html(executed)
    outputs = [*exports, executed, html]
    if pdf:
        outputs.append(to_pdf(html))
    return outputs
