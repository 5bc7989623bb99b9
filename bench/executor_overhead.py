"""What an executor costs per run, side by side in one process on the same grid: N runs of a notebook
that only writes its record (no training), executed (a) by the local pool (`--jobs 2`) and (b) by an
embedded Ray (2 CPUs, one per run). Prints start-up seconds (Ray: `ray.init` until the cluster answers),
seconds per run after start-up, the resident memory of the Ray processes, and the ratio b/a.

Run: `OMP_NUM_THREADS=1 .venv/bin/python bench/executor_overhead.py --runs 8`.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' fast notebook


def rss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.extend(children.get(pid, []))
        todo.extend(children.get(pid, []))
    return out


def main(argv: list[str] | None = None) -> int:
    from planted import write_fast_notebook

    from tc_lib.config import RunConfig
    from tc_lib.grid.local import run_grid
    from tc_lib.grid.ray_exec import RayResources, connect, run_grid_ray

    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--runs", type=int, default=8)
    parser.add_argument("--workdir", help="folder for the grids' runs (default: a new temporary folder)")
    args = parser.parse_args(argv)
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="tc_bench_"))
    root.mkdir(parents=True, exist_ok=True)
    notebook = write_fast_notebook(root / "fast.ipynb")
    os.environ.update(TC_TEST_LOG=str(root / "log"), TC_TEST_SLEEP="0")

    def grid(name: str) -> list[RunConfig]:
        return [RunConfig(seed=s, output_dir=str(root / name), num_threads=1) for s in range(1, args.runs + 1)]

    start = time.perf_counter()
    outcome = run_grid(grid("local"), jobs=2, notebook=notebook)
    local_s = time.perf_counter() - start
    assert len(outcome.succeeded) == args.runs, outcome

    start = time.perf_counter()
    ray = connect(RayResources())
    startup_s = time.perf_counter() - start
    memory = rss_mib(descendants(os.getpid()))
    ray.shutdown()
    start = time.perf_counter()
    outcome = run_grid_ray(grid("ray"), RayResources(cpus_per_run=1), notebook=notebook)
    ray_s = time.perf_counter() - start
    assert len(outcome.succeeded) == args.runs, outcome

    print(f"{args.runs} runs of a notebook that only writes its record, 2 at a time, "
          f"{os.environ.get('OMP_NUM_THREADS', 'default')} OpenMP thread(s), {os.cpu_count()} CPUs")
    print(f"(a) local pool --jobs 2:   {local_s:6.1f} s in all, {local_s / args.runs:5.2f} s/run")
    print(f"(b) embedded Ray (2 CPUs): {ray_s:6.1f} s in all, {ray_s / args.runs:5.2f} s/run; "
          f"start-up {startup_s:.1f} s, per run after start-up {(ray_s - startup_s) / args.runs:5.2f} s; "
          f"Ray processes {memory:.0f} MiB resident")
    print(f"ratio b/a (s/run): {ray_s / local_s:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
