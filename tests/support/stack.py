"""The whole stack as separate processes that a test can kill -9 and start again.

Temporal (the dev server on a SQLite file, so a restart keeps every saga), the participants,
workers and the REST API each run in a process of their own, as ``sagas`` commands where there
is one. The chaos suites (tests/test_chaos.py) break them while sagas run and judge the outcome
with the consistency checker.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from engine._embedded import temporal_binary
from tests.support.processes import ROOT, Background, free_port


class Temporal:
    """``temporal server start-dev`` on a SQLite file: killed -9, it comes back with its sagas."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.database = folder / "temporal.sqlite"
        self.log = folder / "temporal.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            temporal_binary(), "server", "start-dev", "--headless",
            "--ip", "127.0.0.1", "--port", str(self.port),
            "--db-filename", str(self.database), "--namespace", "default",
            "--log-level", "error",
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not _listening(self.port):
            assert self.proc.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "temporal did not start"
            time.sleep(0.2)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Stack:
    """Temporal, participants, a worker and the API, wired by environment as a user wires them."""

    folder: Path
    database_url: str | None = None
    settings: dict[str, str] = field(default_factory=dict)
    temporal: Temporal = field(init=False)
    env: dict[str, str] = field(init=False)
    api_url: str = field(init=False)
    participants_url: str = field(init=False)
    processes: dict[str, Background] = field(init=False, default_factory=dict)
    restarts: dict[str, int] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.temporal = Temporal(self.folder)
        participants_port, api_port = free_port(), free_port()
        self.participants_url = f"http://127.0.0.1:{participants_port}"
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "SAGAS_DATA_DIR": str(self.folder / "data"),
            "SAGAS_TEMPORAL_ADDRESS": self.temporal.address,
            "SAGAS_TEMPORAL_USE_ENV_CONFIG": "false",
            "SAGAS_TASK_QUEUE": "chaos",
            "SAGAS_PARTICIPANTS_PORT": str(participants_port),
            "SAGAS_PARTICIPANTS_URL": self.participants_url,
            "SAGAS_API_PORT": str(api_port),
            "SAGAS_LOG_FORMAT": "json",
            "SAGAS_LOG_LEVEL": "WARNING",
            **({"SAGAS_DATABASE_URL": self.database_url} if self.database_url else {}),
            **self.settings,
        }

    def start(self, *names: str) -> None:
        """Start (or start again) the named processes: participants, worker, api."""
        for name in names:
            count = self.restarts.get(name, -1) + 1
            self.restarts[name] = count
            args = {
                "participants": ["participants"],
                "worker": ["worker", "-m", "workflows"],
                "api": ["api"],
            }[name]
            process = Background(args, self.env, self.folder / f"{name}.{count}.log")
            self.processes[name] = process
        for name in names:
            self.processes[name].wait_for("ready", timeout=60)

    def kill(self, name: str) -> None:
        """SIGKILL: no shutdown hook runs, as when a machine dies."""
        proc = self.processes[name].proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)

    def stop(self, name: str) -> None:
        self.processes[name].stop()

    def logs(self, name: str) -> str:
        return "\n".join(
            path.read_text(errors="replace") for path in sorted(self.folder.glob(f"{name}.*.log"))
        )

    def close(self) -> None:
        for process in self.processes.values():
            process.stop()
        self.temporal.stop()


@contextmanager
def running_stack(
    folder: Path, *, database_url: str | None = None, **settings: str
) -> Iterator[Stack]:
    stack = Stack(folder, database_url=database_url, settings=settings)
    try:
        stack.temporal.start()
        stack.start("participants", "worker", "api")
        yield stack
    finally:
        stack.close()


async def sleep_until(deadline: float) -> None:
    await asyncio.sleep(max(0.0, deadline - time.monotonic()))
