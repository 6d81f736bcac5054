"""What is in production: `models/production_current.json` on main, and the registry following it.

Promotion is a change of files, not of an alias. A move (the pipeline's promotion, `wms model
promote`, `wms model rollback`) writes two files:

    models/production_current.json     the version that should serve, why, by whom, its sha256
    models/production_history.jsonl    one line more: every move, oldest first

and these files reach `main` like any other change: a pull request (or a merge at once with
the local git host), or a commit on main for a move by hand. `reconcile` then points the
MLflow `production` alias (keeping `previous`) at what the checkout's file names; it runs on
main: after a local merge, in the release workflow when the file changes on main, and by
hand (`wms model reconcile`). So a pull request that never merges moves nothing, and a
revert of the commit moves production back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wms.errors import ModelNotFound, RegistryError, UsageError
from wms.files import append_text, make_folders, write_text_atomic
from wms.registry import ModelRecord, Registry

CURRENT_FILE, HISTORY_FILE = "production_current.json", "production_history.jsonl"


def actor() -> str:
    """Who is moving the model: the GitHub actor in Actions, else the local user."""
    import getpass
    import os
    import socket

    if os.environ.get("GITHUB_ACTOR"):
        return f"{os.environ['GITHUB_ACTOR']} (GitHub Actions)"
    try:
        return f"{getpass.getuser()}@{socket.gethostname()}"
    except OSError:
        return "unknown"


def parse_current(text: str, path: Path, where: str = "") -> dict[str, Any]:
    """The move a production_current.json's `text` records; `where` says which copy (" on main").

    RegistryError when it names no model version: not JSON, an unresolved merge, an edit.
    """
    try:
        body = dict(json.loads(text))
    except (ValueError, TypeError):
        body = {}
    if not str(body.get("to_version", "")).isdigit():
        raise RegistryError(
            f"{path}{where} names no model version; restore it with `git checkout -- {path}`{where}"
        )
    return body


def read_current(pointer_dir: Path) -> dict[str, Any] | None:
    """The move in force in this checkout, or None when nothing was ever promoted."""
    current = pointer_dir / CURRENT_FILE
    if not current.is_file():
        return None
    return parse_current(current.read_text(), current)


def read_history(pointer_dir: Path) -> list[dict[str, Any]]:
    """Every recorded move, oldest first."""
    ledger = pointer_dir / HISTORY_FILE
    if not ledger.exists():
        return []
    return parse_history(ledger.read_text(), ledger)


def parse_history(text: str, ledger: Path) -> list[dict[str, Any]]:
    """The moves a production_history.jsonl's `text` records, oldest first; RegistryError, naming
    `ledger` and the line, for a line that is no recorded move."""
    entries: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            moved_at = datetime.fromisoformat(entry["at"])
            recorded = bool(entry.get("to_version")) and moved_at.tzinfo is not None
        except (ValueError, TypeError, KeyError, AttributeError):
            recorded = False
        if not recorded:
            raise RegistryError(
                f"{ledger} line {number} is not a recorded move (an unresolved merge?); "
                f"restore it with `git checkout -- {ledger}`"
            )
        entries.append(entry)
    return entries


def production_at(pointer_dir: Path, when: datetime) -> dict[str, Any] | None:
    """The move that was in force at `when` (UTC), or None if nothing was in production yet."""
    in_force = None
    for entry in read_history(pointer_dir):
        if datetime.fromisoformat(entry["at"]) <= when:
            in_force = entry
    return in_force


def record_move(pointer_dir: Path, entry: dict[str, Any]) -> dict[str, Any]:
    """Write the production pointer and append the move to the history ledger."""
    make_folders(pointer_dir)
    entry = {"at": datetime.now(UTC).isoformat(timespec="seconds"), **entry}
    current = pointer_dir / CURRENT_FILE
    write_text_atomic(current, json.dumps(entry, indent=2) + "\n")
    append_text(pointer_dir / HISTORY_FILE, json.dumps(entry) + "\n")
    return entry


def describe_move(
    model_name: str,
    action: str,
    from_version: str | None,
    target: ModelRecord,
    reason: str,
    by: str,
) -> dict[str, Any]:
    """The ledger entry of a move to `target`."""
    return {
        "action": action,
        "model_name": model_name,
        "from_version": from_version,
        "to_version": target.version,
        "run_id": target.run_id,
        "metrics": {k.removeprefix("test_"): round(v, 6) for k, v in target.metrics.items()},
        "dataset_version": target.tags.get("dataset_version"),
        "model_sha256": target.tags.get("model_sha256"),
        "reason": reason,
        "by": by,
        "actor": actor(),
    }


def plan_move(
    registry: Registry,
    pointer_dir: Path,
    version: str,
    *,
    action: str,
    reason: str,
    by: str,
    batch: str | None = None,
) -> dict[str, Any]:
    """Write the move to `version` into the pointer files in `pointer_dir`; no alias moves here.

    `batch`: the data branch commit whose pipeline run promotes, recorded with the move so that
    the sweep finds the batch once main holds it."""
    target = registry.get(version)
    current = read_current(pointer_dir)
    from_version = str(current["to_version"]) if current else None
    if from_version == target.version:
        raise UsageError(f"version {target.version} is already in production here; nothing to do")
    entry = describe_move(registry.model_name, action, from_version, target, reason, by)
    return record_move(pointer_dir, entry | ({"batch": batch} if batch else {}))


def served_before(history: list[dict[str, Any]]) -> list[str]:
    """The versions production stepped through, oldest first, with rolled-back ones taken off.

    The ledger read as a stack: a promotion (or any move) puts its version on top; a rollback
    takes the top off, so the version below it serves. A rollback to some other version (a
    ledger from before rollbacks walked back) counts as a move to it.
    """
    stack: list[str] = []
    for entry in history:
        version = str(entry["to_version"])
        if entry.get("action") == "rollback" and stack:
            stack.pop()
            if stack and stack[-1] == version:
                continue
        stack.append(version)
    return stack


def plan_rollback(registry: Registry, pointer_dir: Path, *, reason: str, by: str) -> dict[str, Any]:
    """Write the move back to the version that served before the one in production.

    Repeated rollbacks step back through the ledger (3 → 2 → 1), never to a version just
    rolled back from. Where the ledger does not end at the version production_current.json
    names (one of them edited by hand), the pointer's `from_version` is taken instead.
    """
    current = read_current(pointer_dir)
    where = pointer_dir / CURRENT_FILE
    if current is None:
        raise RegistryError(
            f"nothing to roll back to: no model is in production in {where}; "
            "use `wms model promote VERSION` to choose one"
        )
    now = str(current["to_version"])
    stack = served_before(read_history(pointer_dir))
    if stack and stack[-1] == now:
        if len(stack) < 2:
            raise RegistryError(
                f"nothing to roll back to: version {now} is the earliest in {pointer_dir / HISTORY_FILE} "
                "that was not rolled back from; "
                "use `wms model promote VERSION` to choose one"
            )
        back_to = stack[-2]
    elif current.get("from_version"):
        back_to = str(current["from_version"])
    else:
        raise RegistryError(
            f"nothing to roll back to: production has no earlier version in {where}; "
            "use `wms model promote VERSION` to choose one"
        )
    return plan_move(registry, pointer_dir, back_to, action="rollback", reason=reason, by=by)


@dataclass(frozen=True)
class Reconciled:
    """What `reconcile` found and did."""

    wanted: str | None  # the version the pointer file names
    was: str | None  # the alias before
    moved: bool

    @property
    def summary(self) -> str:
        if self.wanted is None:
            return "no model is named in production_current.json; the registry was left as it is"
        if self.moved:
            return f"production moved to version {self.wanted} (was {self.was or 'nothing'}), as main says"
        return f"production is version {self.wanted}, as main says; nothing to move"


def check_same_model(where: str, current: dict[str, Any], target: ModelRecord) -> None:
    """Raise unless the registry's version is the model the pointer recorded (by its sha256): a
    registry reset or restored from an older backup numbers other models as main's versions."""
    wanted = target.version
    recorded, registered = current.get("model_sha256"), target.tags.get("model_sha256")
    if recorded and registered and recorded != registered:
        raise RegistryError(
            f"{where} names version {wanted} with model sha256 {recorded[:12]}…, "
            f"but the registry's version {wanted} has {registered[:12]}…; is tracking.uri the registry "
            "main was promoted in? If it was restored from a backup older than that promotion, serve a "
            "version promoted before it with `wms model rollback` or `wms model promote VERSION` on main "
            "(docs/recovery.md)"
        )


def missing_version(where: str, wanted: str, registry: Registry, history: list[dict[str, Any]]) -> str:
    """Why the registry lacks the version `where` names, and the move that serves one it has again:
    the rollback where the ledger (`history`) steps back to a version it holds, else a promotion."""
    held = [record.version for record in registry.list()]
    if not held:
        return (
            f"{where} names version {wanted}, but the registry holds no model: the MLflow database "
            "was lost and not restored, or tracking.uri names another registry; restore its backup "
            "(docs/recovery.md)"
        )
    stack = served_before(history)
    reason = '--reason "registry restored from an older backup"'
    if len(stack) >= 2 and stack[-1] == wanted and stack[-2] in held:
        move = f"`wms model rollback {reason}` (back to version {stack[-2]})"
    else:
        alias = registry.production()
        move = f"`wms model promote {alias.version if alias else held[-1]} {reason}`"
    return (
        f"{where} names version {wanted}, which the registry lacks (it has {', '.join(held)}): it was "
        "restored from a backup older than that promotion, or tracking.uri names another registry. "
        f"Serve a version it has with {move} on main (the pods keep their image until that deploys; "
        "docs/recovery.md)"
    )


@dataclass(frozen=True)
class Following:
    """The checkout's pointer file beside the `production` alias: whether the registry follows it."""

    current: dict[str, Any] | None  # the move production_current.json records
    was: str | None  # the version the alias names

    @property
    def wanted(self) -> str | None:
        """The version the pointer file names; None before the first promotion."""
        return str(self.current["to_version"]) if self.current else None

    @property
    def behind(self) -> bool:
        """Whether the alias names another version than the pointer file: a move is left to make."""
        return self.wanted is not None and self.was != self.wanted


def read_following(registry: Registry, pointer_dir: Path) -> Following:
    """Read the pointer file in `pointer_dir`, then the `production` alias."""
    current = read_current(pointer_dir)
    alias = registry.production()
    return Following(current, alias.version if alias else None)


def reconcile(registry: Registry, pointer_dir: Path) -> Reconciled:
    """Point the `production` alias at the version the checkout's pointer file names."""
    now = read_following(registry, pointer_dir)
    wanted = now.wanted
    if now.current is None or wanted is None:
        return Reconciled(None, now.was, False)
    try:
        target = registry.get(wanted)
    except ModelNotFound:
        where, history = str(pointer_dir / CURRENT_FILE), read_history(pointer_dir)
        raise RegistryError(missing_version(where, wanted, registry, history)) from None
    check_same_model(str(pointer_dir / CURRENT_FILE), now.current, target)
    if not now.behind:
        return Reconciled(wanted, now.was, False)
    registry.promote(wanted)
    return Reconciled(wanted, now.was, True)


def move_production(
    registry: Registry, pointer_dir: Path, version: str, *, action: str, reason: str, by: str
) -> dict[str, Any]:
    """Write the move to `version` and follow it at once (a checkout that is main itself)."""
    entry = plan_move(registry, pointer_dir, version, action=action, reason=reason, by=by)
    reconcile(registry, pointer_dir)
    return entry


def roll_back(registry: Registry, pointer_dir: Path, *, reason: str, by: str) -> dict[str, Any]:
    """Write the move back to the previous version and follow it at once."""
    entry = plan_rollback(registry, pointer_dir, reason=reason, by=by)
    reconcile(registry, pointer_dir)
    return entry
