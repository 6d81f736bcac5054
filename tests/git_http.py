"""Bare repositories served over HTTP by git's own `git http-backend`, behind Basic auth, as GitHub
serves them: no token, no access (a private repository); a pre-receive hook may refuse a push."""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

# GitHub's answer to a push, made with a token without the `workflows` permission, that changes
# a file under .github/workflows/ (the same words, whichever commit brought the change).
WORKFLOW_REFUSAL = """#!/bin/sh
while read old new ref; do
  [ "$REMOTE_USER" = "{allowed}" ] && continue
  base=$old
  case "$old" in 0000000000000000000000000000000000000000) base=$(git hash-object -t tree /dev/null);; esac
  changed=$(git diff --name-only "$base" "$new" -- .github/workflows/ | head -n 1)
  if [ -n "$changed" ]; then
    echo "refusing to allow a GitHub App to create or update workflow \\`$changed\\`" \\
      "without \\`workflows\\` permission" >&2
    exit 1
  fi
done
"""


@contextmanager
def serve_git(root: Path, tokens: dict[str, str], seen: list[str] | None = None) -> Iterator[str]:
    """Serve the bare repositories under `root` at the yielded URL; `tokens` maps a token to the
    user it authenticates (REMOTE_USER for the hooks). Any other request is answered 401.
    `seen`, when given, gets each request as "METHOD /path?query" (what a client's round trips are)."""
    backend = subprocess.run(
        ["git", "--exec-path"], capture_output=True, text=True, check=True
    ).stdout.strip()

    class Handle(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            if seen is not None:
                seen.append(f"{self.command} {self.path}")
            user = _user(self.headers.get("Authorization", ""), tokens)
            if user is None:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="GitHub"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            path, _, query = self.path.partition("?")
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            env = {
                **os.environ,
                "GIT_PROJECT_ROOT": str(root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "PATH_INFO": path,
                "QUERY_STRING": query,
                "REQUEST_METHOD": self.command,
                "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                "CONTENT_LENGTH": str(len(body)),
                "HTTP_CONTENT_ENCODING": self.headers.get("Content-Encoding", ""),
                "GIT_PROTOCOL": self.headers.get("Git-Protocol", ""),
                "REMOTE_USER": user,
                "REMOTE_ADDR": "127.0.0.1",
            }
            done = subprocess.run(
                [f"{backend}/git-http-backend"], input=body, env=env, capture_output=True, check=False
            )
            head, _, payload = done.stdout.partition(b"\r\n\r\n")
            headers = [line.split(":", 1) for line in head.decode().split("\r\n") if ":" in line]
            status = next((int(v.split()[0]) for k, v in headers if k.lower() == "status"), 200)
            self.send_response(status)
            for name, value in headers:
                if name.lower() != "status":
                    self.send_header(name, value.strip())
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def refuse_workflow_changes(bare: Path, allowed_user: str) -> None:
    """Make `bare` refuse, as GitHub does, a push that changes .github/workflows/ unless its token
    is `allowed_user`'s (one with the `workflows` permission)."""
    hook = bare / "hooks" / "pre-receive"
    hook.write_text(WORKFLOW_REFUSAL.replace("{allowed}", allowed_user))
    hook.chmod(0o755)


def _user(authorization: str, tokens: dict[str, str]) -> str | None:
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        _name, _, password = base64.b64decode(encoded).decode().partition(":")
    except ValueError:
        return None
    return tokens.get(password)
