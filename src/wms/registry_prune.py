"""Reclaiming the model files of candidates that never served, keeping the record of their runs.

Every gated candidate is registered (for review), and its run keeps its `model/` folder: the
gpu recipe's is about 62 MB, so a year of daily batches that lose to production leaves over
20 GB in the artifact store. `prune` deletes, for each run older than a cut-off whose model
never served, its registered versions (MLflow's `delete_model_version`: the number is never
given again) and its `model/` artifact (through MLflow's artifact repository, which a
tracking server with proxied artifacts serves too); the run keeps its params, metrics, tags,
gate report and plots, and a `wms.model_pruned` tag saying what went. A version that holds an
alias, that `keep` names (every version the production ledger ever moved) or that the gate
passed, and every other version of its run, are left as they are.

Where nothing runs on a schedule beside MLflow (the single layout: it sleeps with the GPU
instance), each job there prunes as it ends; `pruned_recently` keeps that to once a day, by a tag
on the experiment that says when the last prune finished.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from wms.config import Project
from wms.errors import RegistryError
from wms.production import CURRENT_FILE, HISTORY_FILE, parse_current, parse_history
from wms.registry import MlflowRegistry
from wms.registry_api import PRUNED_TAG as PRUNED_TAG
from wms.registry_local import artifact_root, moved_run_folder
from wms.registry_runs import MODEL_ARTIFACT
from wms.times import parse_time
from wms.vcs.mainline import MainLine

LAST_PRUNE_TAG = "wms.last_prune"  # on the experiment: when a prune last finished (ISO, UTC)
# Once a day, measured as 20 hours: a batch at 09:00 today still prunes after one at 10:00 yesterday.
ONCE_A_DAY = timedelta(hours=20)


@dataclass(frozen=True)
class PrunedRun:
    """One run whose model files `prune` removed (or, in a dry run, would remove)."""

    run_id: str
    started_at: str
    versions: list[str] = field(default_factory=list)
    bytes: int = 0


def prune_runs(
    registry: MlflowRegistry, keep: set[str], before: datetime, dry_run: bool = False
) -> list[PrunedRun]:
    """Delete the model files (and registered versions) of the runs started before `before`
    whose model never served; returns them, oldest first. With `dry_run`, nothing is deleted."""
    versions = _versions(registry)  # (number, run id, aliased)
    kept_runs = {run_id for number, run_id, aliased in versions if aliased or number in keep}
    by_run: dict[str, list[str]] = {}
    for number, run_id, _ in versions:
        by_run.setdefault(run_id, []).append(number)
    cutoff = int(before.timestamp() * 1000)
    pruned = []
    for run in _runs(registry, set(by_run)):
        run_id = run.info.run_id
        if run_id in kept_runs or run.info.start_time >= cutoff or run.info.status == "RUNNING":
            continue
        if PRUNED_TAG in run.data.tags:
            continue
        size = _model_bytes(registry, run)
        numbers = sorted(by_run.get(run_id, []), key=int)
        if size is None and not numbers:
            continue  # a run that logged no model (failed early), or one pruned before
        started = datetime.fromtimestamp(run.info.start_time / 1000, UTC).isoformat(timespec="seconds")
        pruned.append(PrunedRun(run_id, started, numbers, size or 0))
        if dry_run:
            continue
        for number in numbers:  # first, so no one promotes a version whose files are going
            registry.mlflow.delete_version(registry.model_name, number)
        if size is not None:
            _delete_model(registry, run)
        was = f" (was version {', '.join(numbers)})" if numbers else ""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        registry.mlflow.set_tag(run_id, PRUNED_TAG, f"{now}: model files deleted{was}")
    return sorted(pruned, key=lambda p: p.started_at)


def pruned_recently(registry: MlflowRegistry, now: datetime) -> str | None:
    """What to say when a prune finished less than ONCE_A_DAY before `now`; None: prune. A tag
    that is not a time (edited by hand) counts as no prune yet."""
    experiment = _experiment(registry)
    text = dict(experiment.tags or {}).get(LAST_PRUNE_TAG, "") if experiment is not None else ""
    last = parse_time(text)
    if last is None or now - last >= ONCE_A_DAY:
        return None
    hours = ONCE_A_DAY.total_seconds() / 3600
    return (
        f"last pruned at {last:%Y-%m-%d %H:%M} UTC, less than {hours:.0f} hours ago: nothing to do "
        "(a plain `wms model prune` prunes now)"
    )


def record_prune(registry: MlflowRegistry, when: datetime) -> None:
    """Note on the experiment that a prune finished at `when` (nothing where it has none yet)."""
    experiment = _experiment(registry)
    if experiment is not None:
        value = when.isoformat(timespec="seconds")
        registry.mlflow.set_experiment_tag(experiment.experiment_id, LAST_PRUNE_TAG, value)


def _experiment(registry: MlflowRegistry) -> Any:
    name = registry.project.settings.tracking.experiment
    return registry.mlflow.experiment(name)


def summary(done: list[PrunedRun], keep: set[str], before: datetime, dry_run: bool) -> list[str]:
    """A line per pruned run, then the total freed."""
    lines = []
    for p in done:
        versions = f"version {', '.join(p.versions)}" if p.versions else "not registered"
        lines.append(f"run {p.run_id[:8]} ({versions}, trained {p.started_at[:10]}): {_size(p.bytes)}")
    verb = "would free" if dry_run else "freed"
    kept = f"; kept the {len(keep)} version(s) that ever served" if keep else ""
    total = _size(sum(p.bytes for p in done))
    lines.append(f"{verb} {total} from {len(done)} run(s) trained before {before.date().isoformat()}{kept}")
    return lines


def _size(count: int) -> str:
    return f"{count / 1e9:.2f} GB" if count >= 1e9 else f"{count / 1e6:.1f} MB"


def ever_in_production(project: Project) -> set[str]:
    """Every version production_current.json and production_history.jsonl name, here and on main:
    each may be rolled back to. A file that cannot be read stops the prune (RegistryError)."""
    pointer_dir = project.path(project.settings.tracking.pointer_dir)
    main = MainLine(project)
    texts = [
        (path.read_text() if path.is_file() else None, path, "")
        for path in (pointer_dir / CURRENT_FILE, pointer_dir / HISTORY_FILE)
    ]
    if main.ref is not None:
        texts += [(main.read_text(path), path, f" on main ({main.where})") for _, path, _ in texts]
    named: set[str] = set()
    for text, path, where in texts:
        if text is None:
            continue
        if path.name == CURRENT_FILE:
            entries = [parse_current(text, path, where)]
        else:
            entries = parse_history(text, path)
        named |= {str(e[k]) for e in entries for k in ("to_version", "from_version") if e.get(k)}
    return named


def _versions(registry: MlflowRegistry) -> list[tuple[str, str, bool]]:
    """Every version: its number, its run and whether it is kept: an alias names it (search
    results carry no aliases: they come from the registered model) or the gate passed it."""
    model = registry.mlflow.registered_model(registry.model_name)
    if model is None:
        return []
    found = registry.mlflow.versions(registry.model_name)
    aliased = {str(version) for version in dict(model.aliases or {}).values()}
    return [(str(v.version), v.run_id or "", str(v.version) in aliased or _passed(v)) for v in found]


def _passed(version: Any) -> bool:
    # A candidate the gate passed is on its way to main (its pull request may wait for review):
    # merged, production moves to it, so it keeps its files.
    return dict(version.tags or {}).get("gate") == "pass"


def _runs(registry: MlflowRegistry, registered: set[str]) -> Iterator[Any]:
    """The experiment's runs, then the registered versions' runs kept in other experiments
    (one renamed when the project moved)."""
    seen = set()
    experiment = _experiment(registry)
    for run in registry.mlflow.runs([experiment.experiment_id]) if experiment is not None else ():
        seen.add(run.info.run_id)
        yield run
    for run_id in sorted(registered - seen):
        run = registry.mlflow.run(run_id, absent_ok=True)
        if run is not None and run.info.lifecycle_stage == "active":
            yield run


def _moved(registry: MlflowRegistry, run: Any) -> Path | None:
    root = artifact_root(registry.project, registry.uri)
    return root and moved_run_folder(run.info.artifact_uri, run.info.run_id, root)


def _model_bytes(registry: MlflowRegistry, run: Any) -> int | None:
    """The size of the run's `model/` folder; None where it has none."""
    try:
        moved = _moved(registry, run)
    except RegistryError:  # its folder is gone from both places: nothing to reclaim
        return None
    if moved is not None:
        files = [p for p in (moved / MODEL_ARTIFACT).rglob("*") if p.is_file()]
        return sum(p.stat().st_size for p in files) if files else None
    sizes = list(_listed(registry, run.info.run_id, MODEL_ARTIFACT))
    return sum(sizes) if sizes else None


def _listed(registry: MlflowRegistry, run_id: str, path: str) -> Iterator[int]:
    for entry in registry.mlflow.list_artifacts(run_id, path):
        if entry.is_dir:
            yield from _listed(registry, run_id, entry.path)
        else:
            yield entry.file_size or 0


def _delete_model(registry: MlflowRegistry, run: Any) -> None:
    then = "its versions are deleted already, and `wms model prune` again finishes it"
    moved = _moved(registry, run)
    registry.mlflow.delete_artifacts(run.info.run_id, run.info.artifact_uri, MODEL_ARTIFACT, moved, then)
