"""Run leases: a run being executed is claimed by a file created exclusively beside its record
(`lease.json`), renewed by a heartbeat, so that two drivers on one grid never execute a run twice.

A lease is stale — and the next claimant takes it over — when its holder is a process on this host that
no longer exists, or when its heartbeat is older than TC_LEASE_TIMEOUT_S (default 120 s; holders on other
hosts are judged by the heartbeat alone). Take-over renames the stale file away first: of two claimants
racing for it only one rename succeeds. The output folder must be storage every node sees the same way.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LEASE_FILE = "lease.json"


def heartbeat_s() -> float:
    return float(os.environ.get("TC_LEASE_HEARTBEAT_S", "10"))


def timeout_s() -> float:
    return float(os.environ.get("TC_LEASE_TIMEOUT_S", "120"))


def read_lease(run_dir: Path) -> dict[str, Any] | None:
    """The lease's content plus its heartbeat (the file's mtime), or None when there is none."""
    path = Path(run_dir) / LEASE_FILE
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        info["heartbeat"] = path.stat().st_mtime
    except (OSError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    try:  # a zombie (killed, not yet reaped — common when its parent died too) holds nothing
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def is_stale(info: dict[str, Any], *, now: float | None = None) -> bool:
    now = time.time() if now is None else now
    if info.get("host") == socket.gethostname() and isinstance(info.get("pid"), int) and not _pid_alive(info["pid"]):
        return True
    return now - float(info.get("heartbeat", 0)) > timeout_s()


@dataclass
class Lease:
    """A held lease; `release()` (or the holder's death) ends it."""

    path: Path
    owner: str
    info: dict[str, Any]
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _beat(self) -> None:
        while not self._stop.wait(heartbeat_s()):
            current = read_lease(self.path.parent)
            if current is None or current.get("owner") != self.owner:
                logger.warning("lease %s was taken over; this holder stops renewing it", self.path)
                return
            try:
                os.utime(self.path)
            except OSError as err:
                logger.warning("cannot renew lease %s: %s", self.path, err)

    def start(self) -> "Lease":
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.path.parent.name}", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        self._stop.set()
        current = read_lease(self.path.parent)
        if current is not None and current.get("owner") == self.owner:
            self.path.unlink(missing_ok=True)


def _take_over(path: Path, stale: dict[str, Any]) -> None:
    """Move a stale lease away; if what was moved is not the stale one (someone claimed it meanwhile),
    put it back."""
    grave = path.with_name(f".{LEASE_FILE}.{uuid.uuid4().hex}")
    try:
        os.rename(path, grave)
    except FileNotFoundError:
        return
    try:
        moved = json.loads(grave.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        moved = {}
    if moved.get("owner") != stale.get("owner"):
        try:
            os.link(grave, path)  # fails if a third claimant already created one: theirs stands
        except FileExistsError:
            pass
    grave.unlink(missing_ok=True)


def _own_retry(current: dict[str, Any], details: dict[str, Any]) -> bool:
    """The lease was left by an earlier attempt of the same scheduler task (its worker died on another
    host, where no pid can be checked): a retry may take it over at once."""
    return details.get("task") is not None and current.get("task") == details["task"]


def acquire(run_dir: Path, **details: Any) -> Lease | None:
    """Claim the run; None when a live lease is held by someone else. `details` (executor, attempt, ...)
    are stored in the lease for `status` to show."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LEASE_FILE
    owner = uuid.uuid4().hex
    info = {"owner": owner, "host": socket.gethostname(), "pid": os.getpid(), "since": time.time(), **details}
    for _ in range(5):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            current = read_lease(run_dir)
            if current is not None and not is_stale(current) and not _own_retry(current, details):
                return None
            if current is not None:
                logger.info("taking over the stale lease of %s (held by %s pid %s)", run_dir.name,
                            current.get("host"), current.get("pid"))
                _take_over(path, current)
            else:  # unreadable: being written right now, or torn by a crash — look again shortly
                time.sleep(0.05)
                current = read_lease(run_dir)
                if current is None and path.exists() and time.time() - path.stat().st_mtime > 1:
                    _take_over(path, {})
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(info, fh)
        return Lease(path, owner, info).start()
    return None
