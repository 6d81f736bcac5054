"""The kubeconfig kubectl would use, read into lightkube's model, with what lightkube lacks.

lightkube 0.22 authenticates with a token, a token file, client certificates (files or inline
data), a CA (file or data) or insecure-skip-tls-verify. Added here, as kubectl does them:
- several files (`KUBECONFIG=a:b`): merged, the first file to name a cluster, user or context (or
  to set current-context) wins, missing files are skipped, and relative paths are resolved
  against the file that holds them (lightkube resolves against one file, and never `tokenFile`);
- exec plugins (`aws eks get-token`, `gke-gcloud-auth-plugin`): lightkube refuses the
  client.authentication.k8s.io/v1 ExecCredential and reports a failing plugin only at the first
  request, after a deploy has built and pushed its image. Here the plugin runs when the client is
  made, v1 or v1beta1, and again before its credential expires;
- one line naming the file and the entry for every broken kubeconfig, never a KeyError.
"""

from __future__ import annotations

import base64
import json
import math
import os
import subprocess
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from lightkube import KubeConfig
from lightkube.config.kubeconfig import SingleConfig
from lightkube.config.models import User, UserExec

from wms.errors import ConfigError

KINDS = {"clusters": "cluster", "contexts": "context", "users": "user"}
# kubectl's clientcmd resolves these against the folder of the file that holds them.
PATH_FIELDS = {
    "clusters": ("certificate-authority",),
    "users": ("client-certificate", "client-key", "tokenFile"),
}
EXEC_VERSIONS = ("client.authentication.k8s.io/v1", "client.authentication.k8s.io/v1beta1")
EXEC_TIMEOUT = 60.0


@dataclass(frozen=True)
class Kubeconfig:
    """The current context of a kubeconfig; its user may still be an exec plugin to run."""

    source: str  # the file or files it was read from, for messages
    context: SingleConfig

    @property
    def server(self) -> str:
        return str(self.context.cluster.server)

    def credentials(self) -> tuple[SingleConfig, float]:
        """The context with a user lightkube takes as it is, and when that user's credential
        expires (a `time.time()`; infinite when it does not)."""
        user = self.context.user
        if user is None or user.exec is None:
            return self.context._replace(user=user or User()), math.inf
        name = str(self.context.context.user)
        user, expires = run_exec(user.exec, f"user {name!r} of kubeconfig {self.source}")
        return self.context._replace(user=user), expires


def load(setting: str = "") -> Kubeconfig:
    """The current context of `setting` (empty: $KUBECONFIG, else ~/.kube/config), each a path or
    a list of paths joined by the OS path separator, merged as kubectl merges them."""
    source = setting or os.environ.get("KUBECONFIG", "") or "~/.kube/config"
    files = [Path(p).expanduser() for p in source.split(os.pathsep) if p]
    merged = _merged(files, source)
    where = f"kubeconfig {source}"
    name = merged["current-context"]
    if not name:
        raise ConfigError(f"{where} sets no current-context; run `kubectl config use-context NAME`")
    context = merged["contexts"].get(name)
    if context is None:
        known = ", ".join(merged["contexts"]) or "none"
        raise ConfigError(f"{where} has no context {name!r} (its current-context); contexts: {known}")
    for kind, key in (("clusters", "cluster"), ("users", "user")):
        wanted = context.get(key)
        if wanted and wanted not in merged[kind]:
            raise ConfigError(f"{where}: context {name!r} names {key} {wanted!r}, which no file defines")
    cluster = merged["clusters"].get(context.get("cluster"), {})
    if not cluster.get("server"):
        raise ConfigError(f"{where}: context {name!r} has no cluster with a server URL")
    user = merged["users"].get(context.get("user"), {})
    if bool(user.get("client-certificate") or user.get("client-certificate-data")) != bool(
        user.get("client-key") or user.get("client-key-data")
    ):
        raise ConfigError(f"{where}: user {context.get('user')!r} needs a client certificate and its key")
    for kind, entry, label in (("clusters", cluster, "cluster"), ("users", user, "user")):
        for field in PATH_FIELDS[kind]:
            if field in entry and not Path(entry[field]).is_file():
                raise ConfigError(
                    f"{where}: {label} {context.get(label)!r} has {field} {entry[field]}, which is not a "
                    "file; fix the path"
                )
    lists = {kind: [{"name": n, KINDS[kind]: e} for n, e in merged[kind].items()] for kind in KINDS}
    try:
        single = KubeConfig.from_dict({**lists, "current-context": name}, fname=files[0]).get()
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise ConfigError(f"{where} has a malformed entry ({exc}); see `kubectl config view`") from None
    assert single is not None  # a current context is set
    return Kubeconfig(source, single)


def _merged(files: list[Path], source: str) -> dict[str, Any]:
    """kubectl's merge of several kubeconfig files: the first to set a key keeps it."""
    merged: dict[str, Any] = {"current-context": "", **{kind: {} for kind in KINDS}}
    found = 0
    for file in files:
        if len(files) > 1 and not file.exists():
            continue  # kubectl skips missing files of a list
        try:
            doc = yaml.safe_load(file.read_text()) or {}
        except (OSError, yaml.YAMLError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else str(exc).splitlines()[0]
            raise ConfigError(
                f"cannot read the kubeconfig {file} ({reason}); set deploy.kubeconfig"
            ) from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{file} is not a kubeconfig (a YAML mapping); set deploy.kubeconfig")
        found += 1
        merged["current-context"] = merged["current-context"] or doc.get("current-context") or ""
        folder = Path(os.path.abspath(file)).parent
        for kind, key in KINDS.items():
            for entry in doc.get(kind) or []:
                name = entry.get("name") if isinstance(entry, dict) else None
                value = entry.get(key) if isinstance(entry, dict) else None
                if isinstance(name, str) and name not in merged[kind]:
                    value = dict(value) if isinstance(value, dict) else {}
                    merged[kind][name] = _resolved(kind, value, folder)
    if not found:
        raise ConfigError(f"none of the kubeconfig files {source} exists; set deploy.kubeconfig")
    return merged


def _resolved(kind: str, entry: dict[str, Any], folder: Path) -> dict[str, Any]:
    for field in PATH_FIELDS.get(kind, ()):
        if isinstance(entry.get(field), str) and entry[field]:
            entry[field] = str(folder / entry[field])  # an absolute path stays as it is
    plugin = entry.get("exec")
    command = plugin.get("command") if isinstance(plugin, dict) else None
    if isinstance(plugin, dict) and isinstance(command, str) and os.sep in command:  # else: on PATH
        entry["exec"] = {**plugin, "command": str(folder / command)}
    return entry


def run_exec(spec: UserExec, who: str) -> tuple[User, float]:
    """Run an exec plugin as kubectl does and return the user its ExecCredential describes, with
    the time its credential expires (infinite when it names none)."""
    if spec.apiVersion not in EXEC_VERSIONS:
        raise ConfigError(
            f"{who} runs an exec plugin with apiVersion {spec.apiVersion}; valid: {', '.join(EXEC_VERSIONS)}"
        )
    info = {"apiVersion": spec.apiVersion, "kind": "ExecCredential", "spec": {"interactive": False}}
    env = {**os.environ, **{v.name: v.value for v in spec.env or []}}
    env["KUBERNETES_EXEC_INFO"] = json.dumps(info)
    command = [spec.command, *(spec.args or [])]
    shown = " ".join(command)
    try:
        done = subprocess.run(
            command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=EXEC_TIMEOUT, check=False,
        )  # fmt: skip
    except OSError as exc:
        hint = (spec.installHint or "").strip().splitlines()[:1]
        raise ConfigError(
            f"{who} authenticates with `{shown}`, which cannot run ({exc.strerror})"
            + (f"; {hint[0]}" if hint else "; install it or fix the exec command")
        ) from None
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{who}: `{shown}` gave no credential within {EXEC_TIMEOUT:g} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip()).splitlines()[-1:] or ["no output"]
        raise ConfigError(f"{who}: `{shown}` failed with exit code {done.returncode}: {last[0]}")
    expires = math.inf
    try:
        status = json.loads(done.stdout)["status"]
        token, cert = status.get("token"), status.get("clientCertificateData")
        key = status.get("clientKeyData")
        stamp = status.get("expirationTimestamp")
        if stamp:
            expires = datetime.fromisoformat(stamp).timestamp()
    except (ValueError, KeyError, TypeError, AttributeError):
        token = cert = key = None
    if token:
        return User(token=str(token)), expires
    if cert and key:  # PEM in an ExecCredential; base64 where a kubeconfig holds it inline
        encoded = (base64.b64encode(str(pem).encode()).decode() for pem in (cert, key))
        return User(client_cert_data=next(encoded), client_key_data=next(encoded)), expires
    raise ConfigError(
        f"{who}: `{shown}` printed no ExecCredential with a status.token (or client certificate)"
    )
