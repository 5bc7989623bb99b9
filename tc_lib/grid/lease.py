"""Run leases: a run being executed is claimed by a file created exclusively beside its record
(`lease.json`), renewed by a heartbeat, so that two drivers on one grid never execute a run twice.

The holder is the process that runs the notebook, named by host, pid and the pid's start time. A lease
is stale — and the next claimant takes it over — when its holder is a process on this host that no longer
exists (or whose pid now belongs to another process); a live holder on this host is never overtaken.
Holders on other hosts are judged by the heartbeat alone: stale when it is older than
TC_LEASE_TIMEOUT_S (default 120 s), or further in the future than that (a clock that is off). A lease
file that holds no lease (null, a list, fields of the wrong type) is stale at once, with a warning.
Take-over renames the stale file away first: of two claimants racing for it only one rename succeeds.
The output folder must be storage every node sees the same way.
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

from ..errors import ConfigError

logger = logging.getLogger(__name__)

LEASE_FILE = "lease.json"


# the fields a lease must have, and their types; anything else makes the file unusable (stale)
FIELDS = {"owner": str, "host": str, "pid": int, "since": (int, float)}


def _seconds(name: str, default: str) -> float:
    text = os.environ.get(name, default)
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 and value < float("inf")):
        raise ConfigError(f"{name}={text!r}: expected a number of seconds > 0 (default {default})")
    return value


def heartbeat_s() -> float:
    return _seconds("TC_LEASE_HEARTBEAT_S", "10")


def timeout_s() -> float:
    return _seconds("TC_LEASE_TIMEOUT_S", "120")


def check_settings() -> None:
    """TC_LEASE_TIMEOUT_S and TC_LEASE_HEARTBEAT_S read as numbers, before a grid starts (one line if not)."""
    timeout_s(), heartbeat_s()


def process_start(pid: int) -> int | None:
    """When `pid` started (clock ticks since boot, Linux /proc): tells a holder from a later process
    that was given the same pid."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def read_lease(run_dir: Path) -> dict[str, Any] | None:
    """The lease's content plus its heartbeat (the file's mtime), or None when there is none (or it is
    being written). A file that holds no lease gives {"heartbeat", "unusable": why}."""
    path = Path(run_dir) / LEASE_FILE
    try:
        if not path.is_file():  # a FIFO or a folder in its place is not read
            return ({"heartbeat": path.lstat().st_mtime, "unusable": "not a regular file", "file": str(path)}
                    if path.exists() else None)
        heartbeat = path.stat().st_mtime
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(info, dict):
        return {"heartbeat": heartbeat, "unusable": f"holds {type(info).__name__}, not a lease", "file": str(path)}
    wrong = [key for key, kind in FIELDS.items()
             if not isinstance(info.get(key), kind) or isinstance(info.get(key), bool)]
    if not wrong and info["pid"] <= 0:  # kill(0) would signal a process group: never "alive"
        wrong = ["pid"]
    if not wrong and not info["since"] <= time.time() + timeout_s():  # claimed in the future, or NaN
        wrong = ["since"]
    if wrong:
        return {"heartbeat": heartbeat, "unusable": f"field(s) {', '.join(wrong)} missing or of the wrong type",
                "file": str(path), "owner": info.get("owner")}  # the owner: what a take-over compares
    return {**info, "heartbeat": heartbeat, "file": str(path)}


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
    if info.get("unusable"):
        logger.warning("%s: %s, taken as stale", info["file"], info["unusable"])
        return True
    if info.get("host") == socket.gethostname():  # the pid decides: a live holder here is never overtaken
        started = info.get("pid_start")
        return not _pid_alive(info["pid"]) or (started is not None and process_start(info["pid"]) != started)
    age = now - float(info["heartbeat"])
    if age < -timeout_s():
        logger.warning("%s: the heartbeat of %s pid %s is %.0f s in the future (a clock is off), taken as stale",
                       info.get("file"), info.get("host"), info.get("pid"), -age)
        return True
    return age > timeout_s()


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
    try:  # never read a pipe or a device that stood in the lease's place: it could block for ever
        moved = json.loads(grave.read_text(encoding="utf-8")) if grave.is_file() else {}
    except (OSError, ValueError, RecursionError):
        moved = {}
    if (moved.get("owner") if isinstance(moved, dict) else None) != stale.get("owner"):
        try:
            os.link(grave, path)  # fails if a third claimant already created one: theirs stands
        except FileExistsError:
            pass
    if grave.is_dir():
        import shutil

        shutil.rmtree(grave, ignore_errors=True)
    else:
        grave.unlink(missing_ok=True)


def _own_retry(current: dict[str, Any], details: dict[str, Any]) -> bool:
    """The lease was left by an earlier attempt of the same scheduler task whose worker died on another
    host, where no pid can be checked: a retry may take it over at once. (The task id names the driver
    too: two drivers' tasks never share one. On this host the pid decides instead.)"""
    return (details.get("task") is not None and current.get("task") == details["task"]
            and current.get("host") != socket.gethostname())


def acquire(run_dir: Path, **details: Any) -> Lease | None:
    """Claim the run; None when a live lease is held by someone else. `details` (executor, attempt, ...)
    are stored in the lease for `status` to show."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LEASE_FILE
    owner = uuid.uuid4().hex
    info = {"owner": owner, "host": socket.gethostname(), "pid": os.getpid(), "pid_start": process_start(os.getpid()),
            "since": time.time(), **details}
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
