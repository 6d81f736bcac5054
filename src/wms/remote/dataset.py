"""What the training job on the instance reads, and where it logs: the dataset sent, MLflow's URI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wms.compute.base import Notify
from wms.config import Project
from wms.data.hashes import sha256_file
from wms.data.splits import SPLITS_FILE
from wms.remote.package import KEEP_DAYS
from wms.runs import UNVERSIONED

if TYPE_CHECKING:
    from wms.remote.ssh import Ssh


def job_tracking_uri(project: Project) -> str:
    """The MLflow URI the job on the instance logs to: compute.remote_tracking_uri, else tracking.uri.

    In the split layout a laptop reaches MLflow at the serving node's public address and the
    GPU instance only at its private one, so the two differ there."""
    return project.settings.compute.remote_tracking_uri.strip() or project.tracking_uri


def send_dataset(
    ssh: Ssh, root: str, dataset: Path, version: str, store_url: str, notify: Notify, host: str
) -> dict[str, Any]:
    """The job's dataset: a store version on S3 the instance reads itself, else the folder's files,
    sent once each into `root`/blobs (by sha256) over SSH. A sent file that no job needed for
    KEEP_DAYS goes, as unused environments do: the instance would otherwise keep every file ever
    sent, old copies of corrected photos included. The files this job needs are marked used
    first (their time set to now), so that no clear-out, this one or a job's sent at the same
    time, takes one this job counts on."""
    if store_url.startswith("s3://") and version != UNVERSIONED:  # `wms train DIR`: the folder's files
        notify(f"the instance reads version {version} from {store_url} itself")
        return {"kind": "store", "url": store_url, "version": version}
    files = {
        f"{kind}/{path.name}": sha256_file(path)
        for kind in ("images", "masks")
        for path in sorted((dataset / kind).iterdir())
        if path.is_file()
    }
    ssh.write_text(f"{root}/blobs.in-use", "".join(f"{sha}\n" for sha in sorted(set(files.values()))))
    # One round trip: mark, clear out, then the count deleted and the names left, a line each.
    cleared, *left = ssh.check(
        f"cd {root}/blobs && xargs -r touch -c -- < ../blobs.in-use && "
        f"find . -maxdepth 1 -type f -mtime +{KEEP_DAYS} -print -delete | wc -l && ls",
        "clear out the files no job needed lately on the instance, and list the rest",
    ).split()
    if int(cleared):
        notify(f"deleted {cleared} file(s) on {host} that no job needed for {KEEP_DAYS} days")
    present = set(left)
    missing = {sha: name for name, sha in files.items() if sha not in present}
    there = f" ({len(files) - len(missing)} are there already)" if len(missing) < len(files) else ""
    notify(f"sending {len(missing)} of {len(files)} files to {host}{there}")
    for done, (sha, name) in enumerate(sorted(missing.items()), 1):
        ssh.put(dataset / name, f"{root}/blobs/{sha}")
        if done % 200 == 0:
            notify(f"  sent {done}/{len(missing)}")
    splits_file = dataset / SPLITS_FILE
    splits = json.loads(splits_file.read_text()) if splits_file.is_file() else None
    return {"kind": "files", "files": files, "splits": splits}
