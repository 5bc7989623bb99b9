"""A real one-node SLURM for the tests: munged, slurmctld and slurmd started directly (no systemd),
bound to 127.0.0.1, with two fake GPUs (character devices made with mknod). Everything lives in one
folder; the daemons are stopped by PID (their own sessions), also when a test fails."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from planted import free_port

DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd", "sbatch", "sinfo", "squeue", "scancel")
NODE = "tcnode"
PARTITION = "debug"


def missing() -> str | None:
    """Why a cluster cannot be started here (None when it can)."""
    absent = [name for name in DAEMONS if shutil.which(name) is None]
    if absent:
        return f"SLURM/munge not installed ({', '.join(absent)} missing; make sysdeps installs slurm-wlm and munge as root)"
    if os.geteuid() != 0:
        return "a test SLURM needs root (slurmd and mknod)"
    return None


class Cluster:
    def __init__(self, root: Path, *, cpus: int = 4, gpus: int = 2) -> None:
        self.root, self.cpus, self.gpus = root, cpus, gpus
        self.procs: list[subprocess.Popen] = []
        self.conf = root / "slurm.conf"
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def _write_config(self) -> None:
        r = self.root
        for sub in ("state", "spool", "log", "dev"):
            (r / sub).mkdir(parents=True, exist_ok=True)
        for i in range(self.gpus):
            device = r / "dev" / f"nvidia{i}"
            if not device.exists():
                os.mknod(device, 0o666 | 0o020000, os.makedev(195, i))  # a character device, as gres.conf wants
        (r / "gres.conf").write_text(f"NodeName={NODE} Name=gpu File={r / 'dev'}/nvidia[0-{self.gpus - 1}]\n")
        self.conf.write_text("\n".join([
            "ClusterName=tc", "SlurmctldHost=localhost(127.0.0.1)", f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}", "SlurmUser=root", "SlurmdUser=root", "AuthType=auth/munge",
            f"AuthInfo=socket={r / 'munge.socket'}", "CredType=cred/munge", "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none", "GresTypes=gpu", "SchedulerType=sched/backfill", "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core", "ReturnToService=2", "MpiDefault=none",
            "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
            "SlurmdParameters=config_overrides",  # take CPUs= from here: more slots than cores, to test throttles
            "SlurmctldTimeout=30", "SlurmdTimeout=30", "InactiveLimit=0", "KillWait=2", "MinJobAge=30",
            f"StateSaveLocation={r / 'state'}", f"SlurmdSpoolDir={r / 'spool'}",
            f"SlurmctldPidFile={r / 'slurmctld.pid'}", f"SlurmdPidFile={r / 'slurmd.pid'}",
            f"SlurmctldLogFile={r / 'log' / 'slurmctld.log'}", f"SlurmdLogFile={r / 'log' / 'slurmd.log'}",
            f"NodeName={NODE} NodeAddr=127.0.0.1 NodeHostname={socket.gethostname()} CPUs={self.cpus} "
            f"RealMemory=4000 Gres=gpu:{self.gpus} State=UNKNOWN",
            f"PartitionName={PARTITION} Nodes={NODE} Default=YES MaxTime=INFINITE State=UP", ""]))

    def _spawn(self, *cmd: str) -> None:
        log = open(self.root / "log" / f"{Path(cmd[0]).name}.out", "ab")
        self.procs.append(subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                           start_new_session=True))

    def start(self, timeout: float = 60) -> "Cluster":
        self._write_config()
        key = self.root / "munge.key"
        subprocess.run(["mungekey", "--create", f"--keyfile={key}", "--force"], check=True, capture_output=True)
        key.chmod(0o600)
        self._spawn("munged", "-F", "--force", f"--socket={self.root / 'munge.socket'}", f"--key-file={key}",
                    f"--pid-file={self.root / 'munged.pid'}", f"--log-file={self.root / 'log' / 'munged.log'}",
                    f"--seed-file={self.root / 'munge.seed'}")
        self._wait(lambda: (self.root / "munge.socket").exists(), timeout, "munged")
        self._spawn("slurmctld", "-D", "-i", "-f", str(self.conf))
        self._spawn("slurmd", "-D", "-N", NODE, "-f", str(self.conf))
        self._wait(lambda: self.run("sinfo", "-h", "-o", "%T").stdout.strip() in ("idle", "idle~"), timeout,
                   "the node to become idle")
        return self

    def run(self, *cmd: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(list(cmd), capture_output=True, text=True, env=self.env, timeout=60, **kw)

    def _wait(self, predicate, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                logs = {p.name: p.read_text(errors="replace")[-1500:] for p in (self.root / "log").glob("*")}
                raise RuntimeError(f"test SLURM: timed out waiting for {what}; logs: {logs}")
            time.sleep(0.3)

    def idle(self) -> bool:
        return self.run("squeue", "-h").stdout.strip() == ""

    def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in reversed(self.procs):
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
