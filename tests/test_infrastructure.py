"""What the instances boot with, in each layout, checked the way the cloud will read it.

The cloud-init templates in infrastructure/cloud-init are rendered here as Terraform renders
them (plain `${name}` interpolations; the scripts' real text), then validated with
`cloud-init schema`; the scripts of infrastructure/scripts go through `shellcheck`; the layout
switch is exercised with `terraform plan` on a copy of variables.tf (no provider needed).
The validators are Debian packages: `make validators` installs them; without one, its test is
skipped with that reason.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from wms.config import ComputeSettings

ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infrastructure"
SCRIPTS = INFRA / "scripts"
MANIFESTS = INFRA / "k3s"
TEMPLATES = INFRA / "cloud-init"
USER_DATA_LIMIT = 16384  # bytes EC2 accepts, before base64 (Terraform sends it gzipped)
PLACEHOLDER = re.compile(r"\$\{([a-z0-9_]+)\}")
BOOT_SHA = re.compile(r'\$\{boot_sha\["([^"]+)"\]\}')  # a file the bootstrap fetches, by its sha256

# What each instance runs, and which cloud-config it boots with, per layout.
ROLES = {("split", "serving"): "serving", ("split", "gpu"): "gpu", ("single", "gpu"): "single"}

# Realistic values for what Terraform passes; the scripts are added from the files themselves.
VALUES = {
    "region": "us-east-1",
    "boot_files_uri": "s3://wms-data-example/wms/boot",
    "public_ip": "203.0.113.10",
    "mlflow_port": "5000",
    "mlflow_version": "3.17.2",
    "mlflow_artifacts_uri": "s3://wms-data-example/wms/mlflow",
    "mlflow_backup_uri": "s3://wms-data-example/wms/mlflow-backup/mlflow.db",
    "k3s_version": "v1.31.12+k3s1",
    "helm_version": "v3.19.0",
    "github_repository": "octo-org/water-meters",
    "runner_version": "2.328.0",
    "runner_sha256": "",
    "runner_token_parameter": "/wms/github/runner-token",
    "alert_webhook_parameter": "/wms/alerts/webhook-url",
    "runner_name": "wms-k3s",
    "capture_inbox": "",  # capture_inbox off, as by default
}


# A comment line (its first character that is not a blank is "#", but not "#!"), as user-data.tf's
# local.uncommented finds it: comments stay out of the user data, which EC2 caps at 16 KB.
COMMENT_LINE = re.compile(r"(?m)^[ \t]*#([^!\n].*)?\n")


def delivered_text(path: Path) -> str:
    """A script's or manifest's text as it reaches the instance: without its comment lines."""
    return COMMENT_LINE.sub("", path.read_text())


def _block(path: Path) -> str:
    """A file's text as Terraform's indent(6, replace(file(...), uncommented, "")) gives it: its
    comment lines left out, every line after the first indented by six spaces, to sit in a
    write_files literal block."""
    return delivered_text(path).replace("\n", "\n" + " " * 6)


# The scripts the user data carries itself (user-data.tf's local.scripts); the bootstrap
# fetches the other scripts and the manifests from the bucket, by the sha256 it lists.
INLINE = ("bootstrap.sh", "lib.sh", "base.sh", "lease-guard.sh")


def boot_texts() -> dict[str, str]:
    """Every script and manifest by name as an instance gets it (user-data.tf's local.boot_texts,
    which Terraform puts in the bucket under its sha256)."""
    paths = sorted([*SCRIPTS.glob("*.sh"), *MANIFESTS.glob("*.yaml")], key=lambda p: p.name)
    return {path.name: delivered_text(path) for path in paths}


def boot_sha() -> dict[str, str]:
    """user-data.tf's local.boot_sha: each file's sha256, which the templates name as ${boot_sha["NAME"]}."""
    return {name: hashlib.sha256(text.encode()).hexdigest() for name, text in boot_texts().items()}


def script_values() -> dict[str, str]:
    """<name>_sh = each script the user data carries, as user-data.tf's local.scripts makes them."""
    return {f"{name.removesuffix('.sh').replace('-', '_')}_sh": _block(SCRIPTS / name) for name in INLINE}


def render(template: str, **values: str) -> str:
    """The template with every `${name}` replaced; a name Terraform would not know fails here."""
    text = (TEMPLATES / f"{template}.yaml.tftpl").read_text()
    values = {**VALUES, **script_values(), **values}
    unknown = set(PLACEHOLDER.findall(text)) - values.keys()
    assert not unknown, f"{template}: no value for {sorted(unknown)}"
    sums = boot_sha()
    text = BOOT_SHA.sub(lambda m: sums[m.group(1)], text)  # a name with no file fails here (KeyError)
    # user-data.tf's <role>_user_data: the template's comment lines left out, its first put back
    return "#cloud-config\n" + COMMENT_LINE.sub("", PLACEHOLDER.sub(lambda m: values[m.group(1)], text))


class Boot:
    """A rendered user data, read as cloud-init reads it."""

    def __init__(self, template: str, **values: str) -> None:
        self.text = render(template, **values)
        self.config: dict[str, Any] = yaml.safe_load(self.text)
        self.files: dict[str, str] = {}
        for entry in self.config["write_files"]:
            self.files[entry["path"]] = entry["content"]
        # Then what the bootstrap fetches from the bucket, where Terraform put each under its sha256.
        texts = boot_texts()
        self.fetched: list[str] = []
        for line in self.files["/etc/wms/boot-files"].splitlines():
            sha, name = line.split("  ")
            assert hashlib.sha256(texts[name].encode()).hexdigest() == sha, name
            self.fetched.append(name)
            self.files.setdefault(f"/usr/local/lib/wms/{name}", texts[name])
        self.settings = dict(
            (key, value.strip('"'))
            for key, _, value in (
                line.partition("=")
                for line in self.files["/etc/wms/bootstrap.env"].splitlines()
                if line and not line.startswith("#")
            )
        )

    @property
    def steps(self) -> list[str]:
        return self.settings["BOOTSTRAP_STEPS"].split()

    @property
    def scripts(self) -> set[str]:
        """The scripts this instance has once its bootstrap fetched them."""
        return {Path(p).stem for p in self.files if p.startswith("/usr/local/lib/wms/") and p.endswith(".sh")}

    @property
    def labels(self) -> set[str]:
        return set(self.settings["RUNNER_LABELS"].split(","))


@pytest.fixture(scope="module")
def boots() -> dict[str, Boot]:
    return {template: Boot(template) for template in set(ROLES.values())}


def _template_of(terraform: dict[str, Any], local: str) -> str:
    match = re.search(r"cloud-init/(\w+)\.yaml\.tftpl", terraform["locals"][local])
    assert match, local
    return match.group(1)


def _required(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"{tool} is not installed; `make validators` installs it (Debian package)")
    return path


# -- the layout switch in Terraform -----------------------------------------------------------


def test_each_instance_boots_with_the_template_of_its_layout(terraform: dict[str, Any]) -> None:
    resources = terraform["resource"]
    assert terraform["locals"]["split"] == '${var.layout == "split"}'
    assert resources["aws_instance.gpu"]["user_data_base64"] == (
        "${base64gzip(local.split ? local.gpu_user_data : local.single_user_data)}"
    )
    assert resources["aws_instance.serving"]["user_data_base64"] == "${base64gzip(local.serving_user_data)}"
    assert _template_of(terraform, "gpu_config") == ROLES["split", "gpu"]
    assert _template_of(terraform, "single_config") == ROLES["single", "gpu"]
    assert _template_of(terraform, "serving_config") == ROLES["split", "serving"]
    for role in ("gpu", "single", "serving"):  # what render() does after the template
        uncommented = f'#cloud-config\n${{replace(local.{role}_config, local.uncommented, "")}}'
        assert terraform["locals"][f"{role}_user_data"] == uncommented, role
    # Everything that exists only for the serving node exists only in split.
    for address, body in {**resources, **terraform["data"]}.items():
        if "serving" in address:
            assert body["count"].startswith("${local.split"), address


def test_terraform_passes_every_value_the_templates_use(terraform: dict[str, Any]) -> None:
    locals_ = terraform["locals"]
    passed_everywhere = set(re.findall(r"(\w+) =", locals_["common_vars"]))
    passed_everywhere |= script_values().keys()
    assert "boot_sha" in passed_everywhere  # ${boot_sha["NAME"]}: render() checks each NAME is a file
    for local in ("serving_config", "gpu_config", "single_config"):
        passed = passed_everywhere | set(re.findall(r"(\w+) =", locals_[local]))
        template = TEMPLATES / f"{_template_of(terraform, local)}.yaml.tftpl"
        used = set(PLACEHOLDER.findall(template.read_text()))
        assert used <= passed, f"{local} lacks {sorted(used - passed)}"
        assert used <= VALUES.keys() | script_values().keys()


def test_the_serving_node_is_small_and_out_of_wms_computes_reach(terraform: dict[str, Any]) -> None:
    serving = terraform["resource"]["aws_instance.serving"]
    assert serving["instance_type"] == "${var.serving_instance_type}"
    default_type = terraform["variable"]["serving_instance_type"]["default"]
    assert not re.match(r"[gp]\d", default_type), default_type  # no GPU family
    key, _, value = ComputeSettings().instance_tag.partition("=")
    assert serving["tags"].get(key) != value  # `wms compute` finds the GPU instance by this tag
    assert terraform["resource"]["aws_instance.gpu"]["tags"][key] == "${var.instance_name}"
    assert terraform["variable"]["instance_name"]["default"] == value
    assert "wms:managed" not in serving["tags"]  # the reaper stops only managed instances


def test_wms_compute_stops_and_reaps_the_gpu_instance_and_never_the_serving_node(
    terraform: dict[str, Any], aws_env: str
) -> None:
    """Both instances on moto's EC2 with the tags Terraform gives them (defaults filled in)."""
    import boto3

    from wms.compute import make_compute
    from wms.compute.leases import LEASE_TAG

    names = {"var.instance_name": terraform["variable"]["instance_name"]["default"]}
    names["var.project"] = terraform["variable"]["project"]["default"]

    def tags(resource: str) -> list[dict[str, str]]:
        declared = terraform["resource"][resource]["tags"]
        filled = {k: re.sub(r"\$\{(var\.\w+)\}", lambda m: names[m.group(1)], v) for k, v in declared.items()}
        return [{"Key": k, "Value": v} for k, v in filled.items()]

    client = boto3.client("ec2")
    ids = {}
    for role, resource in (("gpu", "aws_instance.gpu"), ("serving", "aws_instance.serving")):
        reply = client.run_instances(
            ImageId="ami-12c6146b",
            MinCount=1,
            MaxCount=1,
            InstanceType="t4g.medium" if role == "serving" else "g4dn.xlarge",
            TagSpecifications=[{"ResourceType": "instance", "Tags": tags(resource)}],
        )
        ids[role] = reply["Instances"][0]["InstanceId"]
    try:

        def state(role: str) -> str:
            found = client.describe_instances(InstanceIds=[ids[role]])["Reservations"][0]["Instances"][0]
            return str(found["State"]["Name"])

        # The default settings find the GPU instance only, and stop it.
        compute = make_compute(ComputeSettings(backend="ec2", poll_seconds=0.02))
        assert compute.status().instance_id == ids["gpu"]
        compute.stop()
        assert (state("gpu"), state("serving")) == ("stopped", "running")
        # The reaper stops an instance whose lease ran out, and leaves the serving node alone
        # even when it carries an expired lease tag.
        client.start_instances(InstanceIds=[ids["gpu"]])
        expired = {"Key": LEASE_TAG, "Value": "2000-01-01T00:00:00+00:00"}
        client.create_tags(Resources=list(ids.values()), Tags=[expired])
        reaped = {r.instance_id for r in compute.reap()}
        assert ids["serving"] not in reaped and (state("gpu"), state("serving")) == ("stopped", "running")
    finally:
        client.terminate_instances(InstanceIds=list(ids.values()))


def _terraform(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1"}
    return subprocess.run(
        [_required("terraform"), *args, "-no-color"], capture_output=True, text=True, timeout=60, env=env
    )


def _expression(terraform: dict[str, Any], local: str) -> str:
    """A local's expression as written in the .tf file (the parser wraps it in ${...}); a plain
    string local as a quoted HCL string (JSON's escapes are HCL's)."""
    text: str = terraform["locals"][local]
    if "${" not in text:
        return json.dumps(text)
    assert text.startswith("${") and text.endswith("}"), text
    return text[2:-1]


def _evaluate(tmp_path: Path, module: str) -> dict[str, Any]:
    """Terraform's own values of `module`'s outputs: a module of locals and outputs needs no provider.

    It sits in tmp_path/terraform with ../scripts and ../cloud-init as in the repository.
    """
    root = tmp_path / "terraform"
    root.mkdir()
    for name in ("scripts", "cloud-init", "k3s"):
        (tmp_path / name).symlink_to(INFRA / name)
    (root / "main.tf").write_text(module)
    applied = _terraform(f"-chdir={root}", "apply", "-auto-approve", "-input=false", "-lock=false")
    assert applied.returncode == 0, applied.stderr
    outputs = json.loads(_terraform(f"-chdir={root}", "output", "-json").stdout)
    return {name: output["value"] for name, output in outputs.items()}


def test_the_serving_ami_matches_the_instance_architecture(terraform: dict[str, Any], tmp_path: Path) -> None:
    expected = {
        **dict.fromkeys(["t4g.medium", "m7g.large", "c7gn.xlarge", "r8gd.large"], "arm64"),  # Graviton
        **dict.fromkeys(["t3.medium", "t3a.small", "m6i.large"], "amd64"),
    }
    arch = _expression(terraform, "serving_arch").replace("var.serving_instance_type", "t")
    module = f'output "arch" {{\n  value = {{ for t in {json.dumps(list(expected))} : t => {arch} }}\n}}\n'
    assert _evaluate(tmp_path, module)["arch"] == expected
    names = terraform["data"]["aws_ami.serving"]["filter"][0]["values"][0]
    assert "ubuntu-noble-24.04-${local.serving_arch}-server" in names


def test_terraform_renders_the_templates_as_the_tests_do(terraform: dict[str, Any], tmp_path: Path) -> None:
    """user-data.tf's locals (the scripts, the files' sha256) and Terraform's templatefile give what
    render() gives."""
    # mlflow_port goes in as the number it is in Terraform.
    values = ", ".join(f"{k} = " + (v if k == "mlflow_port" else f'"{v}"') for k, v in VALUES.items())
    templates = sorted(set(ROLES.values()))
    locals_ = ("uncommented", "boot_texts", "boot_sha", "scripts")
    files = "".join(f"  {local} = {_expression(terraform, local)}\n" for local in locals_)
    user_data = {
        t: f'"#cloud-config\\n${{replace(templatefile("${{path.module}}/../cloud-init/{t}.yaml.tftpl", '
        f'merge(local.scripts, {{ boot_sha = local.boot_sha, {values} }})), local.uncommented, "")}}"'
        for t in templates
    }
    module = f"locals {{\n{files}}}\n" + "".join(
        f'output "{t}" {{\n  value = {text}\n}}\n'
        f'output "{t}_sent" {{\n  value = length(base64gzip({text}))\n}}\n'
        for t, text in user_data.items()
    )
    rendered = _evaluate(tmp_path, module)
    for template in templates:
        assert rendered[template] == render(template), template
        # What EC2 gets (ec2.tf's user_data_base64): at most 16 KB before base64.
        sent = rendered[f"{template}_sent"] * 3 // 4
        assert sent < USER_DATA_LIMIT, f"{template}: {sent} bytes gzipped by Terraform"


def _plan(tmp_path: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    """`terraform plan` of variables.tf alone: runs its validation blocks, needs no provider."""
    work = tmp_path / "vars"
    work.mkdir(exist_ok=True)
    shutil.copy(ROOT / "infrastructure" / "terraform" / "variables.tf", work / "variables.tf")
    required = {
        "key_name": "wms",
        "allowed_ssh_cidr": "203.0.113.7/32",
        "bucket_name": "wms-data-example",
        "github_repository": "octo-org/water-meters",
    }
    args = [f"-var={k}={v}" for k, v in {**required, **variables}.items()]
    return _terraform(f"-chdir={work}", "plan", "-input=false", "-lock=false", *args)


def test_terraform_refuses_a_runner_version_whose_tarballs_it_has_no_checksum_of(tmp_path: Path) -> None:
    """A runner_version changed without its checksums would boot instances whose runner the
    bootstrap refuses to install: Terraform says so at plan time, naming where to find them."""
    refused = _plan(tmp_path, runner_version="2.329.0")
    assert refused.returncode != 0
    message = " ".join(refused.stderr.replace("│", " ").split())
    assert "runner_sha256 lacks the x64 and arm64 SHA-256 of runner_version 2.329.0" in message
    assert "releases/tag/v2.329.0" in message
    sums = '{"2.329.0" = {x64 = "' + "a" * 64 + '", arm64 = "' + "b" * 64 + '"}}'
    assert _plan(tmp_path, runner_version="2.329.0", runner_sha256=sums).returncode == 0
    only_x64 = '{"2.329.0" = {x64 = "' + "a" * 64 + '"}}'
    assert _plan(tmp_path, runner_version="2.329.0", runner_sha256=only_x64).returncode != 0


def test_the_layout_variable_takes_only_split_or_single(tmp_path: Path) -> None:
    for layout in ("split", "single"):
        assert _plan(tmp_path, layout=layout).returncode == 0, layout
    refused = _plan(tmp_path, layout="both")
    assert refused.returncode != 0 and "layout must be" in refused.stderr
    gpu_serving = _plan(tmp_path, serving_instance_type="g4dn.xlarge")
    assert gpu_serving.returncode != 0 and "serving_instance_type" in gpu_serving.stderr


# -- what each instance boots with ------------------------------------------------------------


def test_every_step_of_every_boot_is_delivered(boots: dict[str, Boot]) -> None:
    for name, boot in boots.items():
        helpers = {"bootstrap", "lib", "runner-start", "runner-job-started", "runner-job-lease"}
        if "k3s" in boot.steps:  # its daily certificate check (wms-k3s-certs.timer)
            helpers.add("k3s-certs")
        if "capture" in boot.steps:  # sends the pods' captures on (wms-capture-upload.timer)
            helpers.add("capture-upload")
        if "mlflow" in boot.steps:
            helpers |= {"mlflow-backup", "mlflow-restore"}
        if "nvidia" in boot.steps:  # the GPU instance stops itself once its leases ran out
            helpers.add("lease-guard")
        assert boot.scripts == set(boot.steps) | helpers, name
        assert boot.steps[0] == "base" and boot.steps[-1] == "runner", name


def test_split_serving_node_serves_without_nvidia(boots: dict[str, Boot]) -> None:
    serving = boots[ROLES["split", "serving"]]
    assert {"k3s", "deploy-tools", "mlflow", "runner"} <= set(serving.steps)
    assert "nvidia" not in serving.scripts
    settings_and_units = {path: text for path, text in serving.files.items() if not path.endswith(".sh")}
    assert "nvidia" not in str(settings_and_units).lower()
    assert serving.labels == {"wms-serve"}


def test_split_gpu_instance_only_trains(boots: dict[str, Boot]) -> None:
    gpu = boots[ROLES["split", "gpu"]]
    assert set(gpu.steps) == {"base", "nvidia", "runner"}
    assert not gpu.scripts & {"k3s", "deploy-tools", "mlflow", "mlflow-backup", "mlflow-restore"}
    assert not [key for key in gpu.settings if key.startswith(("K3S_", "HELM_", "MLFLOW_"))]
    assert gpu.labels == {"wms-gpu"}


def test_single_instance_runs_everything(boots: dict[str, Boot]) -> None:
    single = boots[ROLES["single", "gpu"]]
    assert {"nvidia", "k3s", "deploy-tools", "mlflow", "runner"} <= set(single.steps)
    assert single.labels == {"wms-gpu", "wms-serve"}


def test_every_runner_label_the_workflows_ask_for_is_served_in_both_layouts(boots: dict[str, Boot]) -> None:
    # A label may depend on the layout: ${{ vars.WMS_LAYOUT == 'single' && 'A' || 'B' }}.
    choice = re.compile(r"\$\{\{ vars\.WMS_LAYOUT == 'single' && '([^']*)' \|\| '([^']*)' \}\}")
    for layout in ("split", "single"):
        asked: set[str] = set()
        for workflow in (ROOT / ".github" / "workflows").glob("*.yaml"):
            for job in yaml.safe_load(workflow.read_text()).get("jobs", {}).values():
                labels = job.get("runs-on", [])
                if isinstance(labels, list) and "self-hosted" in labels:
                    pick = 1 if layout == "single" else 2
                    asked |= {choice.sub(lambda m, pick=pick: m.group(pick), x) for x in labels} - {
                        "self-hosted",
                        "linux",
                    }
        assert asked, "no workflow asks for a self-hosted runner"
        served = set().union(*(boots[t].labels for (lay, _), t in ROLES.items() if lay == layout))
        assert asked <= served, f"{layout}: nobody serves {sorted(asked - served)}"


def test_mlflow_serves_from_sqlite_with_artifacts_in_s3_at_the_clients_pin(boots: dict[str, Boot]) -> None:
    pins = dict(
        line.split("==", 1) for line in (ROOT / "constraints.txt").read_text().splitlines() if "==" in line
    )
    assert VALUES["mlflow_version"] == pins["mlflow"]
    script = boots["serving"].files["/usr/local/lib/wms/mlflow.sh"]
    assert "--backend-store-uri sqlite:///$db" in script and "db=$data/mlflow.db" in script
    assert "--artifacts-destination $MLFLOW_ARTIFACTS_URI" in script
    assert "--port $MLFLOW_PORT" in script
    backup = boots["serving"].files["/usr/local/lib/wms/mlflow-backup.sh"]
    assert ".backup" in backup and 'aws s3 cp --only-show-errors --region "$AWS_REGION"' in backup
    assert "OnCalendar=hourly" in script  # a promotion is in the bucket within the hour
    # Every start without a database restores the latest backup first (a new disk, a lost file).
    assert "ExecStartPre=/usr/local/lib/wms/mlflow-restore.sh" in script
    assert "MLFLOW_BACKUP_URI=$MLFLOW_BACKUP_URI" in script
    assert boots["serving"].settings["MLFLOW_ARTIFACTS_URI"].startswith("s3://")


def test_terraform_defaults_match_what_the_tests_render(terraform: dict[str, Any]) -> None:
    variables = terraform["variable"]
    for name in ("mlflow_version", "k3s_version", "helm_version", "runner_version", "runner_token_parameter"):
        assert variables[name]["default"] == VALUES[name], name
    assert VALUES["k3s_version"].startswith("v1.31.")


def test_the_bootstrap_runs_at_every_boot(boots: dict[str, Boot]) -> None:
    for name, boot in boots.items():
        unit = boot.files["/etc/systemd/system/wms-bootstrap.service"]
        assert "Type=oneshot" in unit and "WantedBy=multi-user.target" in unit, name
        assert "ExecStart=/usr/local/lib/wms/bootstrap.sh" in unit, name
        assert ["systemctl", "enable", "wms-bootstrap.service"] in boot.config["runcmd"], name
        # cloud-init writes the files on the first boot only: each boot writes them again from
        # the user data as it is now, so a changed script reaches a machine that exists, and
        # reloads systemd for a changed unit, before the bootstrap runs ("-": a failure keeps
        # the files there and the bootstrap still runs).
        commands = [line.split("=", 1) for line in unit.splitlines() if line.startswith("ExecStart")]
        assert commands == [
            ["ExecStartPre", "-/usr/bin/cloud-init single --name write_files --frequency always"],
            ["ExecStartPre", "-/bin/systemctl daemon-reload"],
            ["ExecStart", "/usr/local/lib/wms/bootstrap.sh"],
        ], name


@pytest.mark.skipif(
    shutil.which("cloud-init") is None, reason="cloud-init not on PATH; `make validators` installs it"
)
def test_cloud_init_can_write_the_files_again_at_every_boot() -> None:
    """The command the bootstrap unit runs first is one cloud-init's CLI takes (the module and
    the frequency), and EC2's data source has no cached-instance check, so cloud-init reads the
    user data afresh at each boot and `single` writes the files of the current one."""
    cloud_init = Path(str(shutil.which("cloud-init")))
    usage = subprocess.run(
        [cloud_init, "single", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "--frequency {instance,always,once}" in usage
    python = cloud_init.read_text().splitlines()[0].removeprefix("#!").split()  # cloud-init's own Python
    check = (
        "from cloudinit.config import cc_write_files\n"
        "from cloudinit.sources import DataSource\n"
        "from cloudinit.sources.DataSourceEc2 import DataSourceEc2\n"
        "assert cc_write_files.meta['id'] == 'cc_write_files'\n"
        "assert DataSourceEc2.check_instance_id is DataSource.check_instance_id\n"  # never trusts its cache
    )
    result = subprocess.run([*python, "-c", check], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_user_data_fits_in_what_ec2_accepts(boots: dict[str, Boot]) -> None:
    """An estimate that needs no Terraform (Go's gzip at its default level comes within 0.1 KB of
    zlib's level 6); test_terraform_renders_the_templates_as_the_tests_do checks Terraform's own."""
    for name, boot in boots.items():
        size = len(gzip.compress(boot.text.encode(), compresslevel=6, mtime=0))
        assert size < USER_DATA_LIMIT - 200, f"{name}: {size} bytes gzipped"


def _values(manifest: Any) -> Any:
    """A k3s manifest with its HelmChart's valuesContent read as the YAML it is (its comments gone)."""
    if isinstance(manifest, dict):
        return {k: yaml.safe_load(v) if k == "valuesContent" else _values(v) for k, v in manifest.items()}
    return manifest


def test_every_script_lands_on_the_instance_as_it_is_in_the_repository_less_its_comments(
    boots: dict[str, Boot],
) -> None:
    """The scripts (and k3s manifests) travel as text in YAML literal blocks: not one byte of
    their code may change; only whole comment lines stay behind, and the scripts still parse."""
    for name, boot in boots.items():
        delivered = {Path(p).name: t for p, t in boot.files.items() if p.startswith("/usr/local/lib/wms/")}
        assert delivered, name
        for file, text in delivered.items():
            source = SCRIPTS / file if file.endswith(".sh") else MANIFESTS / file
            code = [line for line in source.read_text().splitlines() if not COMMENT_LINE.match(line + "\n")]
            assert text.splitlines() == code, f"{name}: {file}"
            if file.endswith(".sh"):
                shebang = source.read_text().partition("\n")[0]
                assert not shebang.startswith("#!") or text.startswith(shebang + "\n"), f"{name}: {file}"
                parsed = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
                assert parsed.returncode == 0, f"{name}: {file}: {parsed.stderr}"
            else:
                same = _values(yaml.safe_load(text)) == _values(yaml.safe_load(source.read_text()))
                assert same, f"{name}: {file}"
        assert not [e for e in boot.config["write_files"] if "encoding" in e], name


def test_no_secret_goes_into_user_data_or_state(terraform: dict[str, Any], boots: dict[str, Boot]) -> None:
    # Terraform only names the parameter: neither creates it (its value would be in state) nor reads it.
    for kind in ("resource", "data"):
        assert not [a for a in terraform.get(kind, {}) if a.startswith("aws_ssm_parameter")]
    tokenish = [name for name in terraform["variable"] if "token" in name or "secret" in name]
    assert tokenish == ["runner_token_parameter"]
    assert terraform["variable"]["runner_token_parameter"]["default"].startswith("/")
    for template in TEMPLATES.glob("*.tftpl"):
        assert 'RUNNER_TOKEN_PARAMETER="${runner_token_parameter}"' in template.read_text()
        assert "%{" not in template.read_text()  # plain interpolations only
    for name, boot in boots.items():
        everything = boot.text + "".join(boot.files.values())
        assert not re.search(r"gh[pousr]_[A-Za-z0-9]{20,}|github_pat_", everything), name
        assert boot.settings["RUNNER_TOKEN_PARAMETER"] == VALUES["runner_token_parameter"], name
    start = (SCRIPTS / "runner-start.sh").read_text()
    assert "aws ssm get-parameter" in start and "--with-decryption" in start  # read at each runner start
    assert "-H @<(printf 'Authorization: Bearer %s\\n' \"$token\")" in start  # never in a command line
    assert "./run.sh --jitconfig" in start and "generate-jitconfig" in start


# -- the validators ---------------------------------------------------------------------------


def test_the_scripts_are_strict_bash_with_a_header(boots: dict[str, Boot]) -> None:
    for path in sorted(SCRIPTS.glob("*.sh")):
        lines = path.read_text().splitlines()
        if path.name == "lib.sh":  # sourced by the others
            assert lines[0] == "# shellcheck shell=bash"
            continue
        assert lines[0] == "#!/usr/bin/env bash", path.name
        assert lines[1].startswith("# ") and "set -euo pipefail" in lines, path.name
        assert "set -x" not in path.read_text(), path.name  # would print the token


def test_shellcheck_passes_on_every_script() -> None:
    scripts = sorted(str(p) for p in SCRIPTS.glob("*.sh"))
    result = subprocess.run(
        [_required("shellcheck"), "--external-sources", "--source-path=SCRIPTDIR", *scripts],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# ids: a test id "gpu" would read as the `gpu` marker, which skips tests where CUDA is absent.
@pytest.mark.parametrize("template", sorted(set(ROLES.values())), ids=lambda t: f"{t}.yaml")
def test_cloud_init_accepts_the_rendered_user_data(template: str, tmp_path: Path) -> None:
    rendered = tmp_path / f"{template}.yaml"
    rendered.write_text(render(template))
    result = subprocess.run(
        [_required("cloud-init"), "schema", "--config-file", str(rendered)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "Valid" in result.stdout, result.stdout + result.stderr


def test_terraform_is_formatted() -> None:
    result = _terraform(f"-chdir={INFRA / 'terraform'}", "fmt", "-check", "-recursive")
    assert result.returncode == 0, f"run terraform fmt -recursive: {result.stdout}"
