"""Slow-header clients (slowloris) against `wms serve`: how many sockets they hold, and whether
a normal client is still answered.

Run: .venv/bin/python benchmarks/serve_slow_headers.py [--rate 50] [--seconds 40] [--nofile 1024]
     [--header-timeout 10 1000000]

For each serve.header_timeout_seconds given (1000000: as good as none, what `wms serve` had
before the setting), starts `wms serve` (the CLI, as the pod runs it) with its open-files limit
at `--nofile` (1024: a Linux login session's usual soft limit; a k3s pod gets 1048576), then opens `--rate`
connections a second that each send the start of a request and then one header byte every 2 s,
never ending the headers. Every second a normal client asks GET /health (3 s timeout), and the
server's open descriptors (/proc/PID/fd) and resident memory are read. With no header
deadline the slow sockets pile up until the server cannot accept any more and the normal client
waits in vain; with serve.header_timeout_seconds each is closed once its deadline passes, so
the count levels off near rate x deadline. Results go to benchmarks/results/serve_slow_headers.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_latency import _free_port, wait_ready
from serve_memory import MODELS, SRC, _model

RESULTS = Path(__file__).resolve().parent / "results" / "serve_slow_headers.json"
DRIP_SECONDS = 2


def _start(folder: Path, workdir: Path, port: int, nofile: int, deadline: float) -> subprocess.Popen[bytes]:
    code = "from wms.cli.main import run; run()"
    args = [sys.executable, "-c", code, "serve", "--model", str(folder), "--port", str(port)]
    env = {**os.environ, "WMS_SERVE__HEADER_TIMEOUT_SECONDS": str(deadline)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))  # this checkout

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    return subprocess.Popen(args, cwd=workdir, env=env, stdout=subprocess.DEVNULL, preexec_fn=limit)


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return round(int(status.split("VmRSS:")[1].split()[0]) / 1024, 1)


class SlowClients:
    """Connections that never finish their headers: one byte each every DRIP_SECONDS."""

    def __init__(self, port: int) -> None:
        self.port, self.open, self.closed_by_server = port, [], 0
        self.stop = threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._drip, daemon=True).start()

    def add(self, count: int) -> None:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
            sock.setblocking(False)
            with self._lock:
                self.open.append(sock)

    def _drip(self) -> None:
        while not self.stop.wait(DRIP_SECONDS):
            with self._lock:
                alive = []
                for sock in self.open:
                    try:
                        if sock.recv(4096) == b"":  # the server closed it (after any answer)
                            raise ConnectionResetError
                    except BlockingIOError:
                        pass
                    except OSError:
                        self.closed_by_server += 1
                        sock.close()
                        continue
                    try:
                        sock.send(b"X")
                        alive.append(sock)
                    except OSError:
                        self.closed_by_server += 1
                        sock.close()
                self.open = alive

    def close(self) -> None:
        self.stop.set()
        with self._lock:
            for sock in self.open:
                sock.close()


def _run(folder: Path, workdir: Path, args: argparse.Namespace, deadline: float) -> dict[str, Any]:
    port = _free_port()
    proc = _start(folder, workdir, port, args.nofile, deadline)
    slow = SlowClients(port)
    rows = []
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, "wms serve")
        started = time.monotonic()
        for second in range(args.seconds):
            slow.add(args.rate)
            try:
                health: int | str = httpx.get(f"http://127.0.0.1:{port}/health", timeout=3).status_code
            except httpx.HTTPError as exc:
                health = type(exc).__name__
            row = {
                "second": second,
                "opened": args.rate * (second + 1),
                "closed_by_server": slow.closed_by_server,
                "server_fds": len(os.listdir(f"/proc/{proc.pid}/fd")),
                "server_rss_mb": _rss_mb(proc.pid),
                "health": health,
            }
            print(json.dumps(row), flush=True)
            rows.append(row)
            time.sleep(max(0.0, started + second + 1 - time.monotonic()))
    finally:
        slow.close()
        proc.terminate()
        proc.wait(timeout=30)
    failed = [r for r in rows if r["health"] != 200]
    summary = {
        "header_timeout_seconds": deadline,
        "first_failed_health": failed[0] if failed else None,
        "most_server_fds": max(r["server_fds"] for r in rows),
        "failed_health_checks": len(failed),
    }
    print(json.dumps(summary), flush=True)
    return {**summary, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=50, help="slow connections opened a second")
    parser.add_argument("--seconds", type=int, default=40)
    parser.add_argument("--nofile", type=int, default=1024, help="the server's open-files limit")
    parser.add_argument("--header-timeout", type=float, nargs="+", default=[10, 1_000_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder, workdir = Path(tmp) / "model", Path(tmp) / "work"
        folder.mkdir()
        workdir.mkdir()
        _model(folder, *MODELS["default"])
        runs = [_run(folder, workdir, args, deadline) for deadline in args.header_timeout]
    RESULTS.parent.mkdir(exist_ok=True)
    record = {
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "rate": args.rate,
        "nofile": args.nofile,
        "drip_seconds": DRIP_SECONDS,
        "runs": runs,
    }
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
