"""The README and docs/ as an operator follows them: what they tell them to run and set exists, and works.

Each test reads the documentation beside the code, workflows or Terraform it describes, so a change to
one that the other does not follow fails here instead of on someone's first setup.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from tests.docs import ROOT, all_docs, page

README = all_docs()  # the README and every page under docs/


def code_blocks() -> list[str]:
    """The README's fenced code blocks, each as written."""
    return re.findall(r"```[a-z]*\n(.*?)```", README, re.S)


def block_with(text: str) -> str:
    (block,) = [b for b in code_blocks() if text in b]
    return block


def exported(block: str) -> dict[str, str]:
    """NAME → value of every `export NAME=value` in a shell block (comments dropped)."""
    values: dict[str, str] = {}
    for line in block.splitlines():
        line = line.split("  #")[0].strip()
        if line.startswith("export "):
            for name, value in re.findall(r"([A-Z_][A-Z0-9_]*)=(\$\([^)]*\)|\S+)", line):
                values[name] = value
    return values


def test_training_from_a_laptop_gives_the_gpu_instance_an_mlflow_it_can_reach(
    terraform: dict[str, Any],
) -> None:
    """In split the GPU instance reaches MLflow only by the serving node's private address
    (its security group lets out only the web and the VPC): a job told to log to the public
    mlflow_url fails after the instance started and installed. The laptop's steps set both."""
    block = block_with("wms pipeline run --new-data data/incoming")
    env = exported(block)
    outputs = terraform["output"]
    assert "mlflow_url_internal" in env.get("WMS_COMPUTE__REMOTE_TRACKING_URI", "")
    assert "compute.remote_tracking_uri" in outputs["mlflow_url_internal"]["description"]
    assert "mlflow_url" in env.get("WMS_TRACKING__URI", "")
    # The store the workflows merge into: main's data/dataset.json names its versions.
    assert "store_url" in env.get("WMS_STORE__URL", "")
    for name in re.findall(r"\$\(tf ([a-z_]+)\)", block):
        assert name in outputs, f"the README reads terraform output {name}, which outputs.tf lacks"


def test_the_laptop_steps_send_wms_to_the_serving_nodes_mlflow_not_the_gpus(
    monkeypatch: Any, tmp_path: Path
) -> None:
    """In split MLflow is on the serving node, and compute.mlflow_on_instance is true by default:
    a laptop that took the steps as written got `wms compute status` naming an MLflow on the GPU
    instance and `wms compute ssh --mlflow` forwarding its port 5000, where nothing listens,
    instead of the line the README promises ("--mlflow says so")."""
    from typer.testing import CliRunner

    from wms.cli.main import app

    env = exported(block_with("wms pipeline run --new-data data/incoming"))
    monkeypatch.chdir(tmp_path)  # the built-in defaults, with the block's settings over them
    for name in ("WMS_COMPUTE__BACKEND", "WMS_COMPUTE__MLFLOW_ON_INSTANCE"):
        if name in env:
            monkeypatch.setenv(name, env[name])
        else:
            monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["compute", "ssh", "--print", "--mlflow"])
    assert result.exit_code == 2 and "MLflow runs on the serving node" in result.output, result.output
    ssh = " ".join(README.split("`wms compute ssh` opens a session")[1].split("Host keys")[0].split())
    assert (
        "in `split` MLflow is on the serving node, at `terraform output mlflow_url`, and `--mlflow` says so"
        in ssh
    )


def test_the_kubeconfig_step_points_kubectl_at_the_cluster_and_keeps_its_keys_out_of_git(
    terraform: dict[str, Any],
) -> None:
    """`terraform output -raw kubeconfig_command` only prints the command: the step runs it
    (eval, so its `export KUBECONFIG` holds in the shell). The file it writes beside the
    Terraform holds the cluster's admin key: git must ignore it, or `git add -A` commits it."""
    command = terraform["output"]["kubeconfig_command"]["value"]
    (written,) = re.findall(r"> (\S+) &&", command)
    assert 'eval "$(terraform output -raw kubeconfig_command)"' in README
    assert not re.search(r"run `terraform output -raw kubeconfig_command`", README)
    where = Path("infrastructure/terraform") / written  # the README's step 4 works there
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "-q", str(where)], cwd=ROOT, check=False)
    assert ignored.returncode == 0, f"git does not ignore {where}, which holds the cluster's admin key"


def aws_setup() -> str:
    """The steps (docs/aws.md) from an empty AWS account to the first model serving."""
    aws = page("docs/aws.md")
    return aws[aws.index("From an empty AWS account to the first promoted model serving") :]


def test_the_aws_setup_makes_the_key_pair_and_the_token_in_the_region_terraform_uses(
    terraform: dict[str, Any],
) -> None:
    """Terraform's region is a variable (us-east-1 by default), not the AWS CLI's: a key pair or
    SSM parameter the CLI made in its own region is one Terraform's instances cannot find
    (InvalidKeyPair.NotFound at apply; runners that cannot read their token)."""
    steps = aws_setup()
    assert "region" in terraform["variable"]
    assert "export AWS_REGION=" in steps
    made = [
        line for line in steps.splitlines() if re.search(r"aws (ec2 create-key-pair|ssm put-parameter)", line)
    ]
    assert len(made) == 3  # the key pair, the runners' token, the alerts' webhook
    for line in made:
        assert '--region "$AWS_REGION"' in line, line
    assert tfvars()["region"] == '"$AWS_REGION"'


def tfvars() -> dict[str, str]:
    """name → value as written of each variable the setup puts in terraform.tfvars (commented out: not)."""
    block = block_with("cat > terraform.tfvars")
    (body,) = re.findall(r"<<EOF\n(.*?)\n\s*EOF", block, re.S)
    return dict(re.findall(r"(?m)^[ \t]*([a-z_]+)[ \t]*=[ \t]*(\S+)", body))


def test_every_terraform_apply_reads_the_variables_the_setup_wrote(terraform: dict[str, Any]) -> None:
    """Terraform keeps no `-var` given once: a later plain `terraform apply` (turning capture on,
    replacing the serving node or the GPU instance) stops for each variable without a default and
    puts region, alert_webhook_parameter and gpu_spot back to their defaults (us-east-1: a new
    copy of everything in another region). The setup writes terraform.tfvars, which every apply
    reads by itself, and git ignores it (it holds the operator's address)."""
    variables = terraform["variable"]
    written = tfvars()
    assert set(written) <= set(variables)
    required = {name for name, body in variables.items() if "default" not in body}
    assert required <= set(written), f"terraform.tfvars lacks {required - set(written)}"
    assert {"region", "alert_webhook_parameter"} <= set(written)
    applies = re.findall(r"terraform apply[^`\n]*", README)
    assert len(applies) >= 4  # the setup, capture, the serving node's and the GPU instance's replacement
    for apply in applies:
        assert "-var " not in apply and "-var-file" not in apply, apply
    # nor a variable given once elsewhere (the layout, the OIDC provider)
    assert not re.search(r"`-var [a-z_]+=", README)
    assert "`capture_inbox = true` in `terraform.tfvars`" in README
    where = Path("infrastructure/terraform") / "terraform.tfvars"
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "-q", str(where)], cwd=ROOT, check=False)
    assert ignored.returncode == 0, f"git does not ignore {where}"


def test_a_variable_the_readme_says_has_no_default_is_one_terraform_asks_for(
    terraform: dict[str, Any],
) -> None:
    """The setup says a later apply stops for each variable that has no default: one it calls so
    while variables.tf gives it a default sends the operator to fill in what Terraform never asks for."""
    variables = terraform["variable"]
    text = " ".join(README.split())
    named = re.findall(r"`([a-z_0-9]+)` has no default", text)
    for name in named:
        assert name in variables and "default" not in variables[name], f"variables.tf gives {name} a default"


def test_the_runner_checksums_the_readme_describes_are_those_of_the_default_runner_version(
    terraform: dict[str, Any],
) -> None:
    """runner_sha256 checks the runner tarball the instances install: the default runner_version has
    both architectures' checksums, so a fresh apply never installs one unchecked."""
    variables = terraform["variable"]
    version = variables["runner_version"]["default"]
    sums = variables["runner_sha256"]["default"][version]
    assert sorted(sums) == ["arm64", "x64"] and all(re.fullmatch("[0-9a-f]{64}", s) for s in sums.values())
    text = " ".join(README.split())
    assert "`runner_sha256` holds the SHA-256 of `runner_version`'s two tarballs" in text
    assert "Terraform refuses a `runner_version` without them" in text


def test_the_aws_setup_stops_the_gpu_instance_with_the_ec2_backend() -> None:
    """compute.backend is local by default, and its `wms compute stop` says 'compute stopped
    (local)' and exits 0 while the GPU instance Terraform started runs on at $0.526/h."""
    stops = re.findall(r"`([^`]*wms compute (?:stop|start)[^`]*)`", aws_setup())
    assert stops
    for command in stops:
        assert "WMS_COMPUTE__BACKEND=ec2" in command or "compute.backend=ec2" in command, command


WORKFLOWS = ROOT / ".github" / "workflows"
ENVIRONMENTS = {"wms-production", "wms-compute"}


def secrets_read() -> dict[str, dict[str, set[str]]]:
    """secret → {"files": workflows whose jobs read it, "environments": those jobs' environments}."""
    found: dict[str, dict[str, set[str]]] = {}
    for path in sorted(WORKFLOWS.glob("*.yaml")):
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            for name in re.findall(r"secrets\.([A-Z0-9_]+)", yaml.safe_dump(job)):
                entry = found.setdefault(name, {"files": set(), "environments": set()})
                entry["files"].add(path.name)
                entry["environments"].add(job.get("environment", "none"))
    return found


def secrets_table() -> dict[str, tuple[set[str], set[str], str]]:
    """secret → (environments, workflows, what) as the README's secrets table gives them."""
    start = README.index("| secret | environment | used by | what |")
    rows = README[start:].split("\n\n")[0].splitlines()[2:]
    every = {p.name for p in WORKFLOWS.glob("*.yaml")} - {"ci.yaml"}
    table = {}
    for row in rows:
        names, environment, used_by, what = (cell.strip() for cell in row.strip("|").split("|"))
        environments = ENVIRONMENTS if environment == "both" else set(re.findall(r"`([a-z-]+)`", environment))
        named = set(re.findall(r"`([a-z0-9-]+\.yaml)`", used_by))
        files = every - named if used_by.startswith("all but CI") else named
        for name in re.findall(r"`([A-Z0-9_]+)`", names):
            table[name] = (environments, files, what)
    return table


def test_the_secrets_table_names_every_secret_where_the_workflows_read_it() -> None:
    """The operator sets secrets from this table: each one the workflows read, in the
    environment of the jobs that read it, and every workflow that needs it is named."""
    read, table = secrets_read(), secrets_table()
    assert set(read) == set(table)
    for name, entry in read.items():
        environments, files, _ = table[name]
        assert entry["environments"] == environments, name
        assert entry["files"] == files, name
    variables = README[README.index("Variables: `AWS_ROLE_ARN`") :].split("\n\n")[0]
    for path in WORKFLOWS.glob("*.yaml"):
        for name in re.findall(r"vars\.([A-Z0-9_]+)", path.read_text()):
            assert f"`{name}`" in variables, f"{path.name} reads vars.{name}, which the README does not list"


def test_the_production_keys_may_start_the_gpu_instance_where_its_jobs_start_it() -> None:
    """In split the pipeline and the sweep (environment wms-production) start, tag and stop the
    GPU instance with that environment's keys: keys limited to the store and the deploy, as the
    README said, failed every run at start_compute, after the merge."""
    starters = [
        (path.name, name)
        for path in sorted(WORKFLOWS.glob("*.yaml"))
        for name, job in yaml.safe_load(path.read_text())["jobs"].items()
        if job.get("environment") == "wms-production"
        and job.get("env", {}).get("WMS_COMPUTE__BACKEND") == "ec2"
    ]
    assert starters
    _, _, what = secrets_table()["AWS_ACCESS_KEY_ID"]
    assert re.search(r"in `wms-production` [^;]*EC2 describe, tag, start and stop", what)


def wms_commands() -> list[str]:
    """Every `wms …` command line the README shows, inline or in a code block, comments dropped."""
    snippets = re.findall(r"`([^`\n]+)`", README)
    for block in code_blocks():
        snippets += block.splitlines()
    commands = []
    for snippet in snippets:
        snippet = re.split(r"\s#\s", snippet)[0].replace("\\|", "|")
        # where a command starts: the line's start, after a separator or VAR=value assignments
        start = r"(?:^\s*|[;(]\s*|&&\s*|\|\s+)(?:[A-Z_][A-Z0-9_]*=\S*\s+)*"
        for match in re.finditer(start + r"(?:\.venv/bin/)?wms(?= |$)(.*)", snippet):
            commands.append("wms" + re.split(r"&&|;| \| |>", match.group(1))[0])
    return commands


def check_command(command: Any, words: list[str], line: str) -> None:
    """Walk `words` down the command tree from `command`; every --flag must be one it takes."""
    words = [w.strip("[](),…") for w in words]
    words = [w for w in words if w]
    while words and words[0] in ("--set", "-s", "--config", "-c") and hasattr(command, "commands"):
        words = words[2:]
    if words and hasattr(command, "commands"):
        choices = words[0].split("|")
        if all(choice in command.commands for choice in choices):
            for choice in choices:
                check_command(command.commands[choice], words[1:], line)
            return
        assert words[0].startswith("-"), f"{command.name} has no command {words[0]}: {line}"
    options = {o for p in command.params if p.param_type_name == "option" for o in p.opts + p.secondary_opts}
    for word in words:
        if word == "--":
            break
        if word.startswith("-"):
            for flag in word.split("=")[0].split("|"):
                assert flag in options, f"{command.name} takes no {flag}: {line}"


def test_every_wms_command_and_flag_in_the_readme_exists() -> None:
    import typer

    from wms.cli.main import app

    root = typer.main.get_command(app)
    commands = wms_commands()
    assert len(commands) > 100
    for line in commands:
        check_command(root, line.split()[1:], line)


def test_the_cost_table_adds_up_for_what_terraform_creates(terraform: dict[str, Any]) -> None:
    """Each monthly figure is its price over 730 hours (or its size at the gp3 price), the parts
    are Terraform's defaults, and each layout's total is the sum of its column."""
    start = README.index("| part | price | `split` | `single` |")
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in README[start:].splitlines()[2:]
        if line.startswith("|")
    ]
    rows = rows[: next(i for i, row in enumerate(rows) if "total" in row[0]) + 1]
    *parts, total = rows
    variables = {name: body.get("default") for name, body in terraform["variable"].items()}
    names = " ".join(row[0] for row in parts)
    for part in ("serving_instance_type", "instance_type"):
        assert f"`{variables[part]}`" in names, part
    for size in ("serving_root_volume_gb", "root_volume_gb"):
        assert f"{variables[size]} GB gp3" in names, size

    def dollars(cell: str) -> float | None:
        found = re.search(r"\$([0-9]+(?:\.[0-9]+)?)", cell)
        return float(found.group(1)) if found and "per" not in cell and "while" not in cell else None

    for name, price, *monthly in parts:
        figures = [f for f in map(dollars, monthly) if f]
        hourly = re.fullmatch(r"\$([0-9.]+)/h", price)
        if hourly and figures:
            assert all(f == round(float(hourly.group(1)) * 730, 2) for f in figures), name
        size = re.search(r"([0-9]+) GB gp3", name)
        if size:
            assert all(f == round(int(size.group(1)) * 0.08, 2) for f in figures), name
    for column in (2, 3):
        added = sum(f for row in parts if (f := dollars(row[column])) is not None)
        stated = dollars(total[column])
        # "about" a figure rounded to a tenth of a dollar
        assert stated is not None and abs(stated - added) <= 0.05 + 1e-9, (total[0], column, stated, added)


def test_the_recovery_steps_name_the_backup_and_the_machines_terraform_makes(
    terraform: dict[str, Any],
) -> None:
    """The recovery steps are followed on a bad day: the backup key, the addresses to replace and
    the days a deleted object is kept must be those Terraform makes."""
    recovery = page("docs/recovery.md")
    user_data = (ROOT / "infrastructure" / "terraform" / "user-data.tf").read_text()
    (key,) = re.findall(r'mlflow_backup_uri\s*=\s*"s3://[^"]*/\$\{var\.s3_prefix\}/([^"]+)"', user_data)
    prefix = terraform["variable"]["s3_prefix"]["default"]
    assert f"s3://BUCKET/{prefix}/{key}" in recovery and f"--key {prefix}/{key}" in recovery
    assert (
        f"`noncurrent_version_days` ({terraform['variable']['noncurrent_version_days']['default']})"
        in recovery
    )
    for address in re.findall(r"-replace='?([a-z_.]+(?:\[0\])?)", recovery):
        assert address.split("[")[0] in terraform["resource"], address
    assert (
        "repository_variables" in recovery
        and "WMS_TRACKING_URI" in terraform["output"]["repository_variables"]["value"]
    )
    # A replaced GPU instance is found by its tag at its new private address: nothing to set.
    gpu = " ".join(recovery.split("**The GPU instance is replaced**")[1].split("\n**")[0].split())
    assert "the jobs find both themselves" in gpu and "(delete it)" in gpu
    assert "set `WMS_GPU_HOST` again" not in gpu
    # A replaced serving node keeps the name the jobs reach MLflow at: nothing to set again.
    serving = " ".join(
        recovery.split("**The serving node is lost or replaced.**")[1].split("\n**")[0].split()
    )
    assert "the jobs follow it with nothing to set: `WMS_TRACKING_URI` (`mlflow_url_internal`)" in serving
    assert "public_dns" in terraform["locals"]["serving_internal_host"]


def test_the_workflow_table_names_every_workflow_and_how_it_starts() -> None:
    """The operator learns from this table what runs when: a workflow missing from it (the daily
    drift report) is one they never know to look for in the Actions tab or to turn on."""
    start = README.index("| workflow | trigger | calls |")
    rows = README[start:].split("\n\n")[0].splitlines()[2:]
    table = {}
    for row in rows:
        name, trigger, _ = (cell.strip() for cell in row.strip("|").split("|"))
        table[name.strip("`")] = trigger
    assert set(table) == {p.name for p in WORKFLOWS.glob("*.yaml")}
    for path in WORKFLOWS.glob("*.yaml"):
        on = yaml.safe_load(path.read_text())[True]  # YAML 1.1 reads the key `on` as true
        if "workflow_dispatch" in on:
            assert "by hand" in table[path.name], path.name
        for changed in (on.get("push") or {}).get("paths", []):  # what a push to main deploys
            assert f"`{changed}`" in table[path.name], (path.name, changed)


def test_the_workflow_table_names_each_input_that_runs_a_command_of_its_own() -> None:
    """A reusable workflow's input that adds a `wms` step (deploy-model.yaml's `unless_in_sync`:
    `wms deploy status` first, and no deploy when production already is main's) changes what a
    caller's run does; the table row says which input does what, beside `reconcile: true`."""
    start = README.index("| workflow | trigger | calls |")
    rows = README[start:].split("\n\n")[0].splitlines()[2:]
    table = {row.strip("|").split("|")[0].strip().strip("`"): row for row in rows}
    found = 0
    for path in WORKFLOWS.glob("*.yaml"):
        for job in yaml.safe_load(path.read_text())["jobs"].values():
            for step in job.get("steps", []):
                gate = re.fullmatch(r"\$\{\{ inputs\.([a-z_]+) \}\}", str(step.get("if", "")))
                if gate and "wms " in step.get("run", ""):
                    found += 1
                    command = re.findall(r"wms [a-z ]+[a-z]", step["run"])[0]
                    assert f"`{gate.group(1)}: true`" in table[path.name], (path.name, gate.group(1))
                    assert f"`{command}`" in table[path.name], (path.name, command)
    assert found


def test_the_aws_setup_gives_wms_the_region_it_reads(monkeypatch: Any, tmp_path: Path) -> None:
    """Step 1 exported AWS_REGION only, which boto3 (so `wms compute stop` in step 5) never reads:
    it said "no AWS region" (exit 2), or looked for the instance in the AWS CLI's own region.
    The step sets AWS_DEFAULT_REGION to the same region, and wms.toml does not claim otherwise."""
    import boto3.session

    (line,) = [found for found in re.findall(r"`(export AWS_[^`]*)`", aws_setup()) if "REGION" in found]
    exports = dict(re.findall(r"\b(AWS_[A-Z_]+)=(\S+)", line))
    assert exports.get("AWS_DEFAULT_REGION") == exports["AWS_REGION"], line
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_REGION", exports["AWS_REGION"])
    assert boto3.session.Session().region_name is None  # why the step needs AWS_DEFAULT_REGION
    monkeypatch.setenv("AWS_DEFAULT_REGION", exports["AWS_DEFAULT_REGION"])
    assert boto3.session.Session().region_name == exports["AWS_REGION"]
    settings = (ROOT / "src" / "wms" / "wms.toml").read_text()
    for line in settings.splitlines():
        if re.match(r"(aws_)?region = ", line):
            assert "AWS_REGION /" not in line, line


def test_the_first_batch_the_setup_asks_for_has_enough_test_pairs_for_the_gate() -> None:
    """A first batch whose test split holds fewer than gate.min_images pairs is rejected at its
    merge; the setup said only "put labelled pairs", and 20 or 30 of them were rejected. The count
    it names gives the gate its test images in all but a few hundredths of batches, at the
    defaults, and the odds it quotes are those of the split's binomial count."""
    import tomllib
    from math import comb

    settings = tomllib.loads((ROOT / "src" / "wms" / "wms.toml").read_text())
    share, least = settings["data"]["test_fraction"], settings["gate"]["min_images"]
    step = aws_setup().split("8. **The first data**")[1].split("\n9. ")[0]
    step = " ".join(step.split())
    (count,) = re.findall(r"Send (\d+) pairs or more", step)
    assert f"about {share:.0%} of them (`data.test_fraction`)" in step
    assert f"`gate.min_images` ({least})" in step

    def rejected(pairs: int) -> float:
        return sum(comb(pairs, k) * share**k * (1 - share) ** (pairs - k) for k in range(least))

    assert rejected(int(count)) < 0.01
    quoted = re.findall(r"with (\d+)(?: pairs)? one(?: batch)? in (four|two hundred)", step)
    assert len(quoted) == 2, step
    for pairs, odds in quoted:
        assert abs(rejected(int(pairs)) * {"four": 4, "two hundred": 200}[odds] - 1) < 0.1, (pairs, odds)


def test_the_tokens_the_setup_stores_are_ones_that_last(terraform: dict[str, Any]) -> None:
    """The runners read their token from SSM, and the workflows WMS_GITHUB_TOKEN from a secret,
    for months; the README offered a GitHub App's installation token for both, which GitHub
    expires one hour after it is made: the runners stop registering and the promotions stop
    opening pull requests the same day. Each place it is stored asks for a PAT and says why not."""
    step = aws_setup().split("3. **The runners' token**")[1].split("Then **where alerts go**")[0]
    runner = " ".join(step.split())
    _, _, github_token = secrets_table()["WMS_GITHUB_TOKEN"]
    variable = terraform["variable"]["runner_token_parameter"]["description"]
    for what in (runner, github_token, variable):
        assert "PAT" in what or "personal access token" in what, what
        assert re.search(r"not (a|an) (GitHub )?App('s)? installation token", what), what
        assert re.search(r"expires (one hour after it is made|after an hour|within the hour)", what), what


def test_the_configuration_names_every_section_of_wms_toml() -> None:
    """ "Configuration" lists wms.toml's sections, where an operator looks for what can be set: a
    section left out ([monitor]: the drift report's thresholds and textfile folder) is one they
    never learn to override with WMS_<SECTION>__<KEY>."""
    import tomllib

    settings = tomllib.loads((ROOT / "src" / "wms" / "wms.toml").read_text())
    text = " ".join(page("README.md").split("\n## Configuration\n")[1].split("\n## ")[0].split())
    (listed,) = re.findall(r"with a section per concern: ((?:`[a-z]+`(?:,? (?:and )?)?)+)", text)
    assert re.findall(r"`([a-z]+)`", listed) == list(settings)


def test_the_capture_rate_the_readme_gives_is_the_default() -> None:
    """Users are told how often their photos may be kept: the README gave 0.5 a minute beside
    serve.capture_per_minute, whose default (wms.toml and the chart) keeps 6 a minute."""
    import tomllib

    settings = tomllib.loads((ROOT / "src" / "wms" / "wms.toml").read_text())
    chart = yaml.safe_load((ROOT / "devops" / "helm" / "wms-model" / "values.yaml").read_text())
    text = " ".join(README.split())
    (default,) = re.findall(
        r"at most `serve.capture_per_minute` a minute \(([0-9.]+) by default, and the chart's too", text
    )
    assert float(default) == settings["serve"]["capture_per_minute"] == chart["serve"]["capturePerMinute"]


def test_ec2_host_is_set_only_where_the_gpu_address_stays(terraform: dict[str, Any]) -> None:
    """compute.host (the secret EC2_HOST) overrides the address EC2 reports. In split the GPU
    instance has no Elastic IP and Terraform's public_ip is the address it had at apply: set as
    EC2_HOST, Manual EC2 Control printed an SSH command and address nobody answers at after the
    next start. The secrets table and the GPU instance's recovery say to leave it empty there."""
    assert "changes at each start" in terraform["output"]["public_ip"]["description"]
    _, _, what = secrets_table()["EC2_HOST"]
    assert "leave `EC2_HOST` empty in `split`" in what
    recovery = " ".join(README.split("**The GPU instance is replaced**")[1].split("\n\n")[0].split())
    assert "in `split` leave `EC2_HOST` empty" in recovery
    assert not re.search(r"`EC2_HOST` from `terraform output [a-z_ ]*` and `public_ip`", recovery)


def test_the_idle_cost_table_follows_the_leases_the_files_set() -> None:
    """What a failure can leave the GPU instance running for: one compute.lease_minutes plus the
    reaper's period, or the lease guard's grace and period, or no lease (the runner's post-job
    script dropped it) and the guard's period, or the start job's lease; each at the GPU's hourly
    price. The figures come from the workflows, the guard, the runner and wms.toml."""
    import tomllib

    settings = tomllib.loads((ROOT / "src" / "wms" / "wms.toml").read_text())
    lease = settings["compute"]["lease_minutes"]
    reaper = yaml.safe_load((WORKFLOWS / "compute-reaper.yaml").read_text())[True]["schedule"][0]["cron"]
    (period,) = re.findall(r"^\*/(\d+) ", reaper)
    guard_script = (ROOT / "infrastructure" / "scripts" / "lease-guard.sh").read_text()
    (grace,) = re.findall(r"LEASE_GUARD_GRACE_MINUTES:-(\d+)", guard_script)
    timer = (ROOT / "infrastructure" / "cloud-init" / "gpu.yaml.tftpl").read_text()
    (every,) = re.findall(r"OnUnitActiveSec=(\d+)min", timer)

    def start_lease(name: str) -> int:
        jobs = yaml.safe_load((WORKFLOWS / name).read_text())["jobs"]
        return int(jobs["start-compute"]["with"]["lease_minutes"])

    (price,) = re.findall(r"GPU instance `g4dn.xlarge`, only while it runs \| \$([0-9.]+)/h", README)
    start = README.index("| what failed | idle at most | cost at most |")
    rows = README[start:].split("\n\n")[0].splitlines()[2:]
    runner = (ROOT / "infrastructure" / "scripts" / "runner.sh").read_text()
    assert "ACTIONS_RUNNER_HOOK_JOB_COMPLETED=/usr/local/lib/wms/runner-job-lease.sh" in runner
    expected = [
        [lease, int(period)],
        [lease, int(grace), int(every)],
        [0, int(every)],  # a job that failed before `wms`: its run's lease is dropped as it ends
        [start_lease("training-data-pipeline.yaml"), int(period)],
        [start_lease("pipeline-sweeper.yaml"), int(period)],
    ]
    sums = [
        [int(n) for n in re.findall(r"\d+", found)]
        for row in rows
        for found in re.findall(r"(\d+(?: \+ \d+)+ = \d+)", row.split("|")[2])
    ]
    assert [s[:-1] for s in sums] == expected
    costs = [float(c) for row in rows for c in re.findall(r"\$([0-9.]+)", row.split("|")[3])]
    assert all(s[-1] == sum(s[:-1]) for s in sums)
    assert costs == [round(s[-1] / 60 * float(price), 2) for s in sums]


def test_the_memory_and_cpu_the_readme_gives_are_the_charts() -> None:
    """The cost table and "Monitoring" size the monitoring on the serving node, and "Memory"
    the model pod: figures an operator sizes the node by, read here from the files that set them."""
    from tests.test_infrastructure_memory import CHART_VALUES, CLUSTER_VALUES, MIB
    from tests.test_infrastructure_monitoring import stack_values
    from tests.test_infrastructure_node import monitoring_requests

    requests = monitoring_requests().values()
    cpu, memory = sum(c for c, _ in requests), sum(m for _, m in requests) // MIB
    text = " ".join(README.split())
    assert f"{memory} MiB and {cpu}m CPU of its requests" in text  # the cost table
    assert f"{cpu}m CPU and {memory} MiB requested in all" in text  # "What watches it"
    spec = stack_values()["prometheus"]["prometheusSpec"]
    days, size = spec["retention"].removesuffix("d"), spec["retentionSize"].removesuffix("GB")
    assert f"{days} days or {size} GB kept on the node's disk" in text
    assert f"at most {size} GB of its disk" in text
    chart, cluster = (yaml.safe_load(path.read_text()) for path in (CHART_VALUES, CLUSTER_VALUES))
    for kind in ("requests", "limits"):  # what is deployed: the cluster's values over the chart's
        assert cluster["resources"][kind]["memory"] == chart["resources"][kind]["memory"], kind
    assert f"requests {chart['resources']['requests']['memory']};" in text
    assert f"The chart's {chart['resources']['limits']['memory']} holds" in text
    deployment = (ROOT / "devops" / "helm" / "wms-model" / "templates" / "deployment.yaml").read_text()
    (tmp,) = re.findall(r"emptyDir: \{sizeLimit: (\w+)\}", deployment)
    assert f"the pod's {tmp} emptyDir" in text


def test_the_user_data_sizes_the_readme_gives_are_what_the_machines_get() -> None:
    """docs/aws.md says how much of EC2's 16 KB each machine's user data takes, which is how
    an operator knows the room left for one more bootstrap step."""
    import gzip

    from tests.test_infrastructure import ROLES, Boot

    text = " ".join(README.split())
    (said,) = re.findall(
        r"gzipped by Terraform, the user data is about ([0-9.]+) KB in `single`, ([0-9.]+) KB on the "
        r"serving node, ([0-9.]+) KB on the GPU",
        text,
    )
    assert set(ROLES.values()) == {"single", "serving", "gpu"}
    for template, kb in zip(("single", "serving", "gpu"), said, strict=True):
        # Terraform's base64gzip is Go's gzip at its default level: zlib's level 6 comes within
        # 0.1 KB of it (tests/test_infrastructure.py checks Terraform's own against the limit).
        size = len(gzip.compress(Boot(template).text.encode(), compresslevel=6, mtime=0))
        assert abs(size / 1000 - float(kb)) <= 0.1, (template, size, kb)


def test_the_setup_ruleset_lets_the_promotion_push_through() -> None:
    """Publishing merges main into a data branch cut before main changed .github/workflows/ and
    pushes it with WMS_GITHUB_TOKEN; a ruleset restricting those paths on every branch but main,
    as step 7 has the operator make, refuses that push unless the token's user may bypass it.
    Step 7 makes the ruleset; it has to give the bypass too."""
    step = " ".join(aws_setup().split("7. **GitHub**")[1].split("\n8. ")[0].split())
    ruleset = step[step.index("restricts changes to `.github/workflows/**`") :]
    assert re.search(r"with the user of `WMS_GITHUB_TOKEN` on its bypass list", ruleset), ruleset
    why = " ".join(README.split("Why `WMS_GITHUB_TOKEN`:")[1].split("\n\n")[0].split())
    assert "a bypass of that ruleset" in why


def test_changing_a_machine_checks_that_no_run_holds_the_gpu_before_the_apply_stops_it(
    terraform: dict[str, Any],
) -> None:
    """The AWS provider writes changed user data by stopping and starting the instance: an apply
    while a run held the GPU instance cut its training unannounced. The procedure checks first."""
    changing = " ".join(README.split("**Changing a machine.**")[1].split("\n**")[0].split())
    steps = [
        "WMS_COMPUTE__BACKEND=ec2 wms compute maintenance --minutes 30",
        "WMS_COMPUTE__BACKEND=ec2 wms compute status --idle && terraform apply",
        "WMS_COMPUTE__BACKEND=ec2 wms compute maintenance --end",
    ]
    assert [changing.index(step) for step in steps] == sorted(changing.index(step) for step in steps)
    assert "stopping the instance, writing it and starting it again" in changing
    assert "`user_data_replace_on_change`, false here" in changing
    for address in ("aws_instance.gpu", "aws_instance.serving"):
        assert not terraform["resource"][address].get("user_data_replace_on_change", False), address


def test_replacing_the_serving_node_checks_first_that_no_job_or_training_runs_there() -> None:
    """In split the serving node's runner drives the trainings over SSH and the deploys: the
    recovery procedure replaced it with no check, killing whatever job ran there."""
    recovery = README.split("**The serving node is lost or replaced.**")[1].split("\n**")[0]
    idle = "WMS_COMPUTE__BACKEND=ec2 wms compute status --idle && "
    assert idle + "terraform apply -replace='aws_instance.serving[0]'" in recovery
    assert "wms vcs runners" in recovery


def test_every_link_between_the_pages_leads_to_a_file_of_the_project() -> None:
    """The README is the way in and docs/ the rest: a page moved or renamed must not leave a
    reader at a link that leads nowhere (each page also links back to the README)."""
    from tests.docs import PAGES

    for path in PAGES:
        targets = re.findall(r"\]\(([^)\s]+)\)", path.read_text())
        local = [t.split("#")[0] for t in targets if not re.match(r"[a-z]+:|#", t)]
        assert local, f"{path.name} links to no other page"
        for target in local:
            where = path.relative_to(ROOT)
            assert (path.parent / target).is_file(), f"{where} links to {target}, which is not there"
    linked = set(re.findall(r"\]\((docs/[^)#]+)\)", page("README.md")))
    assert linked == {str(p.relative_to(ROOT)) for p in PAGES[1:]}, "the README's index must list every page"


def test_every_terraform_output_the_docs_read_exists(terraform: dict[str, Any]) -> None:
    """A step that reads an output Terraform does not have fails at a person's terminal."""
    named = set(re.findall(r"terraform output (?:-raw |-json )?([a-z_]+)", all_docs()))
    assert {"store_url", "capture_dir", "mlflow_url"} <= named
    assert named <= set(terraform["output"]), named - set(terraform["output"])
