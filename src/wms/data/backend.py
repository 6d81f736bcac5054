"""What the dataset store's file systems raise, as one line (`BackendError`).

A local folder raises OSError. S3, through s3fs, turns AWS's refusals into OSError too
(PermissionError for AccessDenied), but not botocore's own errors: no credentials, an
endpoint it cannot reach, a read that timed out. Those are named here, without importing
botocore: where it was never imported, nothing can have raised its errors.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from wms.errors import BackendError, WmsError


def _problem(exc: BaseException) -> str | None:
    """Why a file-system call failed, in words; None when `exc` is not the file system's."""
    if isinstance(exc, OSError):
        return str(exc) or type(exc).__name__
    botocore = sys.modules.get("botocore.exceptions")
    if botocore is not None and isinstance(exc, botocore.BotoCoreError):
        if isinstance(exc, botocore.NoCredentialsError):
            return "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE"
        return str(exc)
    return None


@contextmanager
def store_errors(what: str, hint: str = "") -> Iterator[None]:
    """Turn the file system's failure to do `what` into one BackendError line.

    A missing or existing file (FileNotFoundError, FileExistsError) is an answer, not a
    failure: it passes through for the caller to act on, as does any WmsError.
    """
    try:
        yield
    except (FileNotFoundError, FileExistsError, WmsError):
        raise
    except Exception as exc:
        why = _problem(exc)
        if why is None:
            raise
        raise BackendError(f"could not {what} ({why}){hint}") from None
