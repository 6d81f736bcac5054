"""`wms deploy status` against the fake cluster: what serves, against what main's pointer names.

The scheduled heal in release-deploy.yaml deploys only when this says the two differ, so each
case an operator meets is here: a new empty cluster, a version put there by hand, a deploy that
never finished, code on main that never reached the pods, and the quiet case where all agrees.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.deploy.conftest import FakeCluster

from wms.config import ServeSettings
from wms.serve.app import create_app
from wms.serve.model import ModelCard, load_folder


def _main_names(root: Path, version: str) -> None:
    pointer = root / "models" / "production_current.json"
    pointer.parent.mkdir(exist_ok=True)
    pointer.write_text(json.dumps({"action": "promote", "from_version": "0", "to_version": version}))


def _git(root: Path, *args: str) -> str:
    command = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    return subprocess.run(command, cwd=root, check=True, capture_output=True, text=True).stdout


def _outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def test_a_new_empty_cluster_serves_nothing_and_is_out_of_sync(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any], github_files: tuple[Path, Path]
) -> None:
    root, cluster = cluster_project
    _main_names(root, "1")
    cluster.namespaces = {"kube-system": "2026-01-01T00:00:00Z"}  # a replaced node: nothing installed
    result = cli("deploy", "status", "--check")
    assert result.exit_code == 1, result.output
    assert "served: nothing (no ready pod answers /ready) in namespace model-1" in result.output
    assert "OUT OF SYNC" in result.output and "Traceback" not in result.output
    output, summary = github_files
    assert _outputs(output) == {"in_sync": "false", "wanted": "1", "served": ""}
    assert "OUT OF SYNC" in summary.read_text()
    # Without --check it reports and exits 0: the workflow reads `in_sync`, and a failure to ask stays red.
    assert cli("deploy", "status").exit_code == 0


def test_a_release_left_without_ready_pods_serves_nothing(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any]
) -> None:
    root, cluster = cluster_project
    _main_names(root, "1")
    cluster.namespaces["model-1"] = "2026-04-01T00:00:00Z"  # the namespace is there, its pod never got ready
    result = cli("deploy", "status", "--check")
    assert result.exit_code == 1 and "served: nothing" in result.output, result.output


def test_a_version_put_in_mains_namespace_by_hand_is_out_of_sync(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any]
) -> None:
    root, cluster = cluster_project
    _main_names(root, "5")
    cluster.namespaces["model-5"] = "2026-04-01T00:00:00Z"
    (cluster.state / "installed-model-5").write_text("wms-model:v1-hand")  # its pod answers version 1
    result = cli("deploy", "status", "--check")
    assert result.exit_code == 1, result.output
    assert "wanted: model 5" in result.output and "served: model 1 in namespace model-5" in result.output


def test_after_a_deploy_of_mains_version_it_is_in_sync_until_mains_code_changes(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any], github_files: tuple[Path, Path]
) -> None:
    root, _ = cluster_project
    _main_names(root, "1")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "main")
    deployed = cli("deploy")
    assert deployed.exit_code == 0, deployed.output
    result = cli("deploy", "status", "--check")
    assert result.exit_code == 0, result.output
    assert "in sync: production serves what main names" in result.output
    assert _outputs(github_files[0])["in_sync"] == "true"

    (root / "notes.txt").write_text("not part of the image\n")  # a data or docs commit: nothing to do
    _git(root, "add", "notes.txt")
    _git(root, "commit", "-qm", "docs")
    assert cli("deploy", "status", "--check").exit_code == 0

    (root / "src" / "wms" / "serve" / "extra.py").write_text("# a fix the pods lack\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "code")
    result = cli("deploy", "status", "--check")
    assert result.exit_code == 1, result.output
    assert "main has changed src/wms/serve/extra.py since" in result.output


def test_a_version_deployed_by_hand_into_its_own_namespace_is_out_of_sync_until_a_deploy_removes_it(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any], github_files: tuple[Path, Path]
) -> None:
    """Its WmsModelVersionNotProduction fires for as long as it stays: the heal's deploy of
    main's production removes it, and keeps a previous production kept for a rollback."""
    root, cluster = cluster_project
    _main_names(root, "1")
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "main")
    assert cli("deploy").exit_code == 0
    cluster.labels["model-8"] = {
        "wms/model-version": "8",
        "wms/expected-version": "8",
    }  # a previous production
    later = (datetime.now(UTC) + timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cluster.namespaces["model-6"] = later  # `wms deploy --model 6` by hand, while main named 1
    cluster.labels["model-6"] = {"wms/model-version": "6", "wms/expected-version": "1"}

    result = cli("deploy", "status", "--check")
    assert result.exit_code == 1, result.output
    assert "served: model 1 in namespace model-1" in result.output
    said = "also: model-6 was deployed while main named model 1; its WmsModelVersionNotProduction fires"
    assert said in result.output and "model-8" not in result.output
    assert "OUT OF SYNC" in result.output
    assert _outputs(github_files[0])["in_sync"] == "false"  # so the heal deploys

    healed = cli("deploy")  # the heal's deploy of main's production
    assert healed.exit_code == 0, healed.output
    assert sorted(n for n in cluster.namespaces if n.startswith("model-")) == ["model-1", "model-8"]
    assert cli("deploy", "status", "--check").exit_code == 0


def test_before_the_first_promotion_there_is_nothing_to_serve(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any]
) -> None:
    result = cli("deploy", "status", "--check")
    assert result.exit_code == 0, result.output
    assert "main names no production model yet" in result.output


def test_the_local_target_says_what_its_stable_port_serves(
    served_project: Path, cli: Callable[..., Any]
) -> None:
    """On a laptop (deploy.target = local) the status reads the local deploy's stable port: nothing
    before a deploy, main's version after one, and out of sync again once main names another."""
    from wms.config import load_settings
    from wms.deploy.local import LocalDeployer, free_port

    port = free_port()
    with (served_project / "wms.toml").open("a") as fh:
        fh.write(f"\n[serve]\nport = {port}\n\n[deploy]\nready_timeout_seconds = 90\n")
    _main_names(served_project, "1")
    url = f"http://127.0.0.1:{port}"
    before = cli("deploy", "status", "--check")
    assert before.exit_code == 1 and "Traceback" not in before.output, before.output
    assert f"served: nothing answers /ready at {url}" in before.output
    assert "OUT OF SYNC: run `wms deploy`" in before.output
    deployer = LocalDeployer(load_settings(start=served_project), lambda _: None)
    try:
        assert deployer.deploy("production").version == "1"
        served = cli("deploy", "status", "--check")
        assert served.exit_code == 0, served.output
        assert f"served: model 1 at {url}" in served.output and "in sync" in served.output
        assert "since its proxy started: 1 request(s) passed on, none answered" in served.output
        _main_names(served_project, "2")  # promoted on main, not yet deployed here
        behind = cli("deploy", "status", "--check")
        assert behind.exit_code == 1 and "wanted: model 2" in behind.output
        assert "OUT OF SYNC" in behind.output
    finally:
        deployer.stop()


def test_a_checkout_without_the_files_of_old_commits_still_says_what_main_changed(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any], tmp_path: Path
) -> None:
    """The heal's checkout holds main's history without old file contents (`filter: blob:none`),
    and in a private repository git cannot fetch them there (the step has no token)."""
    root, _ = cluster_project
    _main_names(root, "1")
    (root / "src" / "wms" / "serve" / "helper.py").write_text("".join(f"line {i}\n" for i in range(50)))
    _git(root, "init", "-q", "-b", "main")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "main")
    assert cli("deploy").exit_code == 0
    # main renames the module and edits it: git pairs the two by their contents unless told not to
    (root / "src" / "wms" / "serve" / "helper.py").unlink()
    (root / "src" / "wms" / "serve" / "helpers.py").write_text("".join(f"line {i}\n" for i in range(51)))
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "rename")
    origin = tmp_path / "origin.git"
    _git(tmp_path, "clone", "-q", "--bare", str(root), str(origin))
    _git(origin, "config", "uploadpack.allowFilter", "true")
    shutil.rmtree(root / ".git")
    _git(tmp_path, "clone", "-q", "--filter=blob:none", "--no-checkout", f"file://{origin}", "partial")
    (tmp_path / "partial" / ".git").rename(root / ".git")
    _git(root, "remote", "set-url", "origin", str(tmp_path / "unreachable.git"))

    result = cli("deploy", "status", "--check")
    assert result.exit_code == 1, result.output
    assert "main has changed src/wms/serve/helper.py, src/wms/serve/helpers.py since" in result.output


def test_a_production_address_that_serves_another_version_is_out_of_sync_until_a_deploy_switches_it(
    cluster_project: tuple[Path, FakeCluster],
    cli: Callable[..., Any],
    github_files: tuple[Path, Path],
    exported_model: Path,
    live_server: Callable[..., Any],
) -> None:
    """Clients use the production address; main's version answering in its own namespace is not
    enough while the address still sends them to another one (a deploy that stopped after the
    smoke check, a switch by hand)."""
    root, cluster = cluster_project
    _main_names(root, "1")
    assert cli("deploy").exit_code == 0
    result = cli("deploy", "status", "--check")
    assert result.exit_code == 0, result.output
    assert "production address: model 1 at svc/wms-model in namespace wms" in result.output

    sha = load_folder(exported_model).card.onnx_sha256
    with live_server(create_app(load_folder(exported_model, ModelCard("6", sha)), ServeSettings())) as six:
        cluster.upstreams["wms"] = six.url  # the address sends clients to version 6's Service
        result = cli("deploy", "status", "--check")
        assert result.exit_code == 1, result.output
        assert "served: model 1 in namespace model-1" in result.output
        assert "production address: model 6 at svc/wms-model in namespace wms" in result.output
        assert "OUT OF SYNC" in result.output and _outputs(github_files[0])["in_sync"] == "false"
    del cluster.upstreams["wms"]

    (cluster.state / "installed-wms").unlink()  # its pod is gone
    result = cli("deploy", "status", "--check")
    assert result.exit_code == 1 and "production address: nothing answers /ready at" in result.output

    assert cli("deploy").exit_code == 0  # the heal's deploy puts it back
    assert cli("deploy", "status", "--check").exit_code == 0


def test_the_status_says_what_the_address_answered_itself(
    cluster_project: tuple[Path, FakeCluster], cli: Callable[..., Any], live_server: Callable[..., Any]
) -> None:
    """Behind the address's Service is the deploy proxy: the status reads its counts through the
    API server, so the hourly heal's summary shows requests the address could not pass on (also
    where the cluster lacks the Prometheus operator); an address from before the counts says nothing."""
    from wms.deploy.local import free_port
    from wms.deploy.proxy import create_proxy, write_upstream

    root, cluster = cluster_project
    _main_names(root, "1")
    assert cli("deploy").exit_code == 0
    assert (
        "since its pod started" not in cli("deploy", "status").output
    )  # its /_proxy/metrics is the model's 404
    upstream = root / "upstream.json"
    write_upstream(upstream, cluster.upstream, "1")
    with live_server(create_proxy(upstream)) as address:
        cluster.upstreams["wms"] = address.url  # the address's pod: the proxy in front of model-1
        result = cli("deploy", "status", "--check")
        assert result.exit_code == 0, result.output
        assert (
            "since its pod started: 1 request(s) passed on, none answered by the proxy itself"
            in result.output
        )
        write_upstream(upstream, f"http://127.0.0.1:{free_port()}", "1")  # model-1's Service gone
        result = cli("deploy", "status", "--check")
        assert result.exit_code == 1 and "production address: nothing answers /ready" in result.output
        assert "1 request(s) passed on, 1 answered by the proxy itself (1 unreachable)" in result.output
    del cluster.upstreams["wms"]
