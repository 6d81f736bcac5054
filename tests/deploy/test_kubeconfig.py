"""Every kubeconfig form a cluster hands out authenticates against the fake API server.

The server (tests.deploy.conftest.FakeCluster) answers only the bearer TOKEN or, over TLS, a
client certificate its CA signed; each test lists namespaces through KubeClient, which succeeds
only when the kubeconfig's credentials reached the server. The CA and certificates are made here
(EC keys: milliseconds); exec plugins are small Python scripts that print an ExecCredential.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
import ssl
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tests.deploy.conftest import OLD_NAMESPACES, TOKEN, FakeCluster

from wms.deploy.kube import KubeClient
from wms.errors import BackendError, ConfigError

ALL = sorted(OLD_NAMESPACES)

# Prints an ExecCredential: the token from its environment (the kubeconfig's exec env), or the
# client certificate named there; records its arguments and KUBERNETES_EXEC_INFO in calls.jsonl.
PLUGIN = """#!{python}
import datetime, json, os, pathlib, sys
here = pathlib.Path(__file__).parent
info = json.loads(os.environ["KUBERNETES_EXEC_INFO"])
with open(here / "calls.jsonl", "a") as log:
    log.write(json.dumps({{"args": sys.argv[1:], "info": info}}) + "\\n")
status = {{}}
if os.environ.get("PLUGIN_TOKEN"):
    status["token"] = os.environ["PLUGIN_TOKEN"]
else:
    status["clientCertificateData"] = pathlib.Path(os.environ["PLUGIN_CERT"]).read_text()
    status["clientKeyData"] = pathlib.Path(os.environ["PLUGIN_KEY"]).read_text()
if os.environ.get("PLUGIN_EXPIRES_IN"):
    now = datetime.datetime.now(datetime.timezone.utc)
    later = now + datetime.timedelta(seconds=int(os.environ["PLUGIN_EXPIRES_IN"]))
    status["expirationTimestamp"] = later.strftime("%Y-%m-%dT%H:%M:%SZ")
print(json.dumps({{"apiVersion": os.environ["PLUGIN_API"], "kind": "ExecCredential", "status": status}}))
"""


@dataclass
class Pki:
    """A test CA, a certificate for 127.0.0.1 and a client certificate, as PEM files in `folder`."""

    folder: Path

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    def server_context(self) -> ssl.SSLContext:
        """The API server's side: its certificate, and client certificates checked when given."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.folder / "server.crt", self.folder / "server.key")
        context.load_verify_locations(self.ca)
        context.verify_mode = ssl.CERT_OPTIONAL
        return context


def _certificate(
    name: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None
) -> tuple[x509.Certificate, x509.Name]:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0] if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if issuer is None:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    elif name == "127.0.0.1":
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(name))]), critical=False
        )
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    signer = issuer[1] if issuer else key
    return builder.sign(signer, hashes.SHA256()), subject


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert, ca_name = _certificate("wms-test-ca", ca_key, None)
    (folder / "ca.crt").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for stem, name in (("server", "127.0.0.1"), ("client", "wms-deployer")):
        key = ec.generate_private_key(ec.SECP256R1())
        cert, _ = _certificate(name, key, (ca_name, ca_key))
        (folder / f"{stem}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (folder / f"{stem}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.TraditionalOpenSSL,
                serialization.NoEncryption(),
            )
        )
    return Pki(folder)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[FakeCluster]:
    (tmp_path / "calls.log").touch()
    with FakeCluster(tmp_path / "calls.log", tmp_path, "http://127.0.0.1:9") as fake:
        yield fake


@pytest.fixture
def tls_cluster(tmp_path: Path, pki: Pki) -> Iterator[FakeCluster]:
    (tmp_path / "tls-calls.log").touch()
    with FakeCluster(
        tmp_path / "tls-calls.log", tmp_path, "http://127.0.0.1:9", pki.server_context()
    ) as fake:
        yield fake


def kubeconfig(path: Path, server: str, user: dict[str, Any] | None, **cluster: Any) -> Path:
    """A kubeconfig with one context, `user` as its user (None: a context without one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    context: dict[str, Any] = {"cluster": "c", **({"user": "u"} if user is not None else {})}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "ctx",
                "contexts": [{"name": "ctx", "context": context}],
                "clusters": [{"name": "c", "cluster": {"server": server, **cluster}}],
                "users": [{"name": "u", "user": user}] if user is not None else [],
            }
        )
    )
    return path


def plugin(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "get-token"
    script.write_text(PLUGIN.format(python=sys.executable))
    script.chmod(0o755)
    return script


def exec_user(api: str, command: str, **env: str) -> dict[str, Any]:
    variables = [{"name": "PLUGIN_API", "value": api}, *({"name": k, "value": v} for k, v in env.items())]
    return {"exec": {"apiVersion": api, "command": command, "args": ["--cluster", "c"], "env": variables}}


def names(path: Path | str = "") -> list[str]:
    return sorted(n.name for n in KubeClient.from_kubeconfig(str(path)).namespaces(""))


def plugin_calls(folder: Path) -> list[dict[str, Any]]:
    log = folder / "calls.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.mark.parametrize("version", ["v1", "v1beta1"])
def test_an_exec_plugin_user_authenticates_with_the_token_it_prints(
    cluster: FakeCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, version: str
) -> None:
    api = f"client.authentication.k8s.io/{version}"
    plugin(tmp_path / "conf" / "bin")
    # a command with a folder in it is found beside the kubeconfig, wherever wms runs
    config = kubeconfig(
        tmp_path / "conf" / "config", cluster.url, exec_user(api, "./bin/get-token", PLUGIN_TOKEN=TOKEN)
    )
    monkeypatch.chdir(tmp_path)
    assert names(config) == ALL
    (call,) = plugin_calls(tmp_path / "conf" / "bin")
    assert call["args"] == ["--cluster", "c"]
    assert call["info"] == {"apiVersion": api, "kind": "ExecCredential", "spec": {"interactive": False}}


def test_an_exec_credential_is_renewed_only_when_it_is_about_to_expire(
    cluster: FakeCluster, tmp_path: Path
) -> None:
    api = "client.authentication.k8s.io/v1beta1"
    for folder, expires_in in (("hour", "3600"), ("soon", "30")):
        script = plugin(tmp_path / folder)
        user = exec_user(api, str(script), PLUGIN_TOKEN=TOKEN, PLUGIN_EXPIRES_IN=expires_in)
        client = KubeClient.from_kubeconfig(str(kubeconfig(tmp_path / folder / "config", cluster.url, user)))
        for _ in range(2):
            assert sorted(n.name for n in client.namespaces("")) == ALL
    assert len(plugin_calls(tmp_path / "hour")) == 1  # once, when the client was made
    assert len(plugin_calls(tmp_path / "soon")) == 3  # and before each call: it expires within a minute


def test_a_token_file_user_authenticates_over_tls(tls_cluster: FakeCluster, pki: Pki, tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "token").write_text(TOKEN + "\n")
    (tmp_path / "conf" / "ca.crt").write_bytes(pki.ca.read_bytes())
    # both paths relative: against the kubeconfig's folder
    config = kubeconfig(
        tmp_path / "conf" / "config",
        tls_cluster.url,
        {"tokenFile": "token"},
        **{"certificate-authority": "ca.crt"},
    )
    assert names(config) == ALL


def _pem64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


CERT_USERS: dict[str, Callable[[Pki, Path], tuple[dict[str, Any], dict[str, Any]]]] = {
    # (user, cluster) of a kubeconfig whose user has no token, only a client certificate
    "files": lambda pki, _: (
        {"client-certificate": str(pki.folder / "client.crt"), "client-key": str(pki.folder / "client.key")},
        {"certificate-authority": str(pki.ca)},
    ),
    "inline data": lambda pki, _: (
        {
            "client-certificate-data": _pem64(pki.folder / "client.crt"),
            "client-key-data": _pem64(pki.folder / "client.key"),
        },
        {"certificate-authority-data": _pem64(pki.ca)},
    ),
    "from an exec plugin": lambda pki, folder: (
        exec_user(
            "client.authentication.k8s.io/v1",
            str(plugin(folder)),
            PLUGIN_CERT=str(pki.folder / "client.crt"),
            PLUGIN_KEY=str(pki.folder / "client.key"),
        ),
        {"certificate-authority": str(pki.ca)},
    ),
}


@pytest.mark.parametrize("form", CERT_USERS)
def test_a_client_certificate_user_authenticates(
    tls_cluster: FakeCluster, pki: Pki, tmp_path: Path, form: str
) -> None:
    user, cluster = CERT_USERS[form](pki, tmp_path / "plugin")
    assert names(kubeconfig(tmp_path / "config", tls_cluster.url, user, **cluster)) == ALL


def test_insecure_skip_tls_verify_trusts_any_server_certificate(
    tls_cluster: FakeCluster, tmp_path: Path
) -> None:
    insecure = kubeconfig(
        tmp_path / "insecure", tls_cluster.url, {"token": TOKEN}, **{"insecure-skip-tls-verify": True}
    )
    assert names(insecure) == ALL
    with pytest.raises(BackendError, match="CERTIFICATE_VERIFY_FAILED"):  # the test CA is not a known one
        names(kubeconfig(tmp_path / "verified", tls_cluster.url, {"token": TOKEN}))


def test_the_fake_api_server_refuses_other_credentials(
    tls_cluster: FakeCluster, pki: Pki, tmp_path: Path
) -> None:
    ca = {"certificate-authority": str(pki.ca)}
    for name, user in (("wrong-token", {"token": "not-" + TOKEN}), ("no-user", None)):
        with pytest.raises(BackendError, match="could not list namespaces: 401 Unauthorized"):
            names(kubeconfig(tmp_path / name, tls_cluster.url, user, **ca))


def test_several_kubeconfig_files_merge_as_kubectl_merges_them(
    tls_cluster: FakeCluster, pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # a: where the user lives (its token file beside it) and which context is current
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    (first / "token").write_text(TOKEN)
    (first / "config").write_text(
        yaml.safe_dump({"current-context": "work", "users": [{"name": "me", "user": {"tokenFile": "token"}}]})
    )
    # b: the context and the cluster (its CA beside it), and entries that a overrides
    second.mkdir()
    (second / "ca.crt").write_bytes(pki.ca.read_bytes())
    (second / "config").write_text(
        yaml.safe_dump(
            {
                "current-context": "elsewhere",
                "contexts": [
                    {"name": "work", "context": {"cluster": "c", "user": "me"}},
                    {"name": "elsewhere", "context": {"cluster": "gone", "user": "me"}},
                ],
                "clusters": [
                    {"name": "c", "cluster": {"server": tls_cluster.url, "certificate-authority": "ca.crt"}}
                ],
                "users": [{"name": "me", "user": {"token": "not-" + TOKEN}}],
            }
        )
    )
    files = [tmp_path / "missing", first / "config", second / "config"]
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join(map(str, files)))
    assert names() == ALL  # a's user and current context, b's context and cluster, the missing one skipped
    monkeypatch.setenv("KUBECONFIG", os.pathsep.join(map(str, reversed(files))))
    with pytest.raises(ConfigError, match="context 'elsewhere' names cluster 'gone', which no file defines"):
        names()


def _missing_file(folder: Path, url: str) -> Path:
    return folder / "nowhere" / "config"


def _unknown_user(folder: Path, url: str) -> Path:
    path = kubeconfig(folder / "config", url, {"token": TOKEN})
    path.write_text(path.read_text().replace("user: u", "user: ghost"))
    return path


def _exec_not_found(folder: Path, url: str) -> Path:
    hint = "wms-no-such-plugin comes with the cloud's CLI"
    user = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "command": "wms-no-such-plugin",
        "installHint": hint,
    }
    return kubeconfig(folder / "config", url, {"exec": user})


def _exec_failing(folder: Path, url: str) -> Path:
    (folder / "fail").write_text(
        f"#!{sys.executable}\nimport sys\nsys.exit('token expired: run `aws sso login`')\n"
    )
    (folder / "fail").chmod(0o755)
    user = {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": "./fail"}
    return kubeconfig(folder / "config", url, {"exec": user})


def _no_current_context(folder: Path, url: str) -> Path:
    path = kubeconfig(folder / "config", url, {"token": TOKEN})
    path.write_text(path.read_text().replace("current-context: ctx", ""))
    return path


def _missing_ca_file(folder: Path, url: str) -> Path:
    return kubeconfig(folder / "config", url, {"token": TOKEN}, **{"certificate-authority": "ca.crt"})


BROKEN: dict[str, tuple[Callable[[Path, str], Path], str]] = {
    "missing file": (
        _missing_file,
        r"cannot read the kubeconfig \S*nowhere/config \(No such file or directory\)",
    ),
    "unknown user": (_unknown_user, "context 'ctx' names user 'ghost', which no file defines"),
    "exec command not found": (
        _exec_not_found,
        r"authenticates with `wms-no-such-plugin`, which cannot run \(No such file or directory\); "
        "wms-no-such-plugin comes with the cloud's CLI",
    ),
    "exec exiting non-zero": (
        _exec_failing,
        r"`\S*/fail` failed with exit code 1: token expired: run `aws sso login`",
    ),
    "no current context": (_no_current_context, "sets no current-context"),
    "missing CA file": (
        _missing_ca_file,
        r"cluster 'c' has certificate-authority \S*/ca.crt, which is not a file",
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_a_broken_kubeconfig_is_one_clear_line(cluster: FakeCluster, tmp_path: Path, case: str) -> None:
    write, message = BROKEN[case]
    path = write(tmp_path, cluster.url)
    with pytest.raises(ConfigError, match=message) as raised:
        KubeClient.from_kubeconfig(str(path))
    assert "\n" not in str(raised.value)
    assert not cluster.log.read_text()  # nothing reached the API server
