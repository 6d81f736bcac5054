"""The DNS lookups the production address makes per request, with a pod's resolver set as
Kubernetes sets it (ndots:5) and as the wms-entry chart sets it (ndots:1).

Run: .venv/bin/python benchmarks/address_dns.py [--requests 100]

The proxy (`python -m wms.deploy.proxy`) opens a connection per request, so it looks its
upstream's name up per request: wms-model.model-<v>.svc.cluster.local, as the chart's ConfigMap
writes it. For each setting this starts, in a network and mount namespace of its own
(`unshare`, no root needed), a stand-in for the cluster's DNS on 127.0.0.1:53 that knows only
that name and counts every question, an /etc/resolv.conf as the kubelet writes it for a pod in
namespace `wms` (its search domains, the node's `ec2.internal` among them), a small HTTP server
as the model, and the real proxy in front of it. It then sends GET /ready through the proxy and
counts the questions per request. The stand-in answers at once, so the times measure only the
work on this machine: in a cluster each question is also a round trip to CoreDNS.
Results go to benchmarks/results/address_dns.json.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import platform
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import httpx
from serve_latency import _percentiles, wait_ready  # type: ignore[import-not-found]

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "address_dns.json"
UPSTREAM = "wms-model.model-3.svc.cluster.local"
SEARCH = "wms.svc.cluster.local svc.cluster.local cluster.local ec2.internal"
MODEL_PORT, PROXY_PORT = 8080, 8000


def _question(packet: bytes) -> tuple[str, int, int]:
    """The name, type and end offset of a DNS query's one question."""
    labels, at = [], 12
    while packet[at]:
        labels.append(packet[at + 1 : at + 1 + packet[at]].decode())
        at += 1 + packet[at]
    (qtype,) = struct.unpack("!H", packet[at + 1 : at + 3])
    return ".".join(labels), qtype, at + 5


def _answer(packet: bytes) -> bytes:
    """127.0.0.1 for UPSTREAM's A record, no data for its AAAA, NXDOMAIN for any other name."""
    name, qtype, end = _question(packet)
    known = name.lower() == UPSTREAM
    rcode = 0 if known else 3
    answers = b""
    if known and qtype == 1:
        answers = struct.pack("!HHHIH", 0xC00C, 1, 1, 30, 4) + socket.inet_aton("127.0.0.1")
    header = packet[:2] + struct.pack("!HHHHH", 0x8180 | rcode, 1, 1 if answers else 0, 0, 0)
    return header + packet[12:end] + answers


def serve_dns(asked: Counter[str]) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 53))
        while True:
            packet, client = sock.recvfrom(512)
            name, qtype, _ = _question(packet)
            asked[f"{name} {'A' if qtype == 1 else 'AAAA' if qtype == 28 else qtype}"] += 1
            sock.sendto(_answer(packet), client)


class Ready(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"status": "ready"}'
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        pass


def child(requests: int) -> dict:
    """Inside the namespaces: the stand-ins, the proxy, and the requests through it."""
    asked: Counter[str] = Counter()
    threading.Thread(target=serve_dns, args=(asked,), daemon=True).start()
    model = http.server.ThreadingHTTPServer(("127.0.0.1", MODEL_PORT), Ready)
    threading.Thread(target=model.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory() as tmp:
        upstream = Path(tmp) / "upstream.json"
        upstream.write_text(json.dumps({"url": f"http://{UPSTREAM}:{MODEL_PORT}", "version": "3"}))
        command = [sys.executable, "-m", "wms.deploy.proxy", "--port", str(PROXY_PORT)]
        proxy = subprocess.Popen(
            [*command, "--upstream-file", str(upstream)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            proxied = f"http://127.0.0.1:{PROXY_PORT}"
            wait_ready(proxied, proxy, "proxy")  # through the proxy to the model: a warm-up too
            with httpx.Client(base_url=proxied, timeout=10) as client:
                asked.clear()
                times = []
                for _ in range(requests):
                    start = time.perf_counter()
                    client.get("/ready").raise_for_status()
                    times.append(time.perf_counter() - start)
                one = dict(asked)
        finally:
            proxy.terminate()
            proxy.wait(timeout=10)
    model.shutdown()
    return {
        "questions_per_request": sum(one.values()) / requests,
        "asked_per_request": {name: count / requests for name, count in sorted(one.items())},
        **_percentiles(times),
    }


def run_with(ndots: int, requests: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="wms-dns-bench-") as tmp:
        resolv = Path(tmp) / "resolv.conf"
        resolv.write_text(f"nameserver 127.0.0.1\nsearch {SEARCH}\noptions ndots:{ndots}\n")
        inner = (
            f"ip link set lo up && mount --bind {resolv} /etc/resolv.conf && "
            f"exec {sys.executable} {Path(__file__).resolve()} --child --requests {requests}"
        )
        done = subprocess.run(
            ["unshare", "--map-root-user", "--mount", "--net", "sh", "-c", inner],
            capture_output=True, text=True, timeout=300, check=False,
            env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        )  # fmt: skip
    if done.returncode != 0:
        why = done.stderr.strip()[-300:]
        sys.exit(
            f"error: the namespaces could not be set up (unshare, ip, mount need user namespaces): {why}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=100, help="timed requests through the proxy")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.requests)))
        return

    results = {f"ndots:{n}": run_with(n, args.requests) for n in (5, 1)}
    for name, result in results.items():
        questions, p50 = result["questions_per_request"], result["p50_ms"]
        print(f"{name}: {questions:g} DNS question(s) a request, p50 {p50} ms")
        for question, count in result["asked_per_request"].items():
            print(f"    {count:g} x {question}")
    RESULTS.write_text(
        json.dumps(
            {
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                "upstream": UPSTREAM,
                "search": SEARCH,
                "requests": args.requests,
                "results": results,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {RESULTS.relative_to(REPO)}")


if __name__ == "__main__":
    main()
