"""githubkit's client as wms uses it: a Bearer token, retries of server errors, a short wait for a
rate limit that resets soon, and every failure turned into one GitHubError whose line says
what to check (git.api_url, the network, the token's permissions). The expiry GitHub names in
its answers to a token that expires is noted, and told when it is near.

GitHubHost (wms.vcs.github) talks to GitHub through it; `wms vcs runners` and the runner
checks use it too.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from githubkit import BaseAuthStrategy, GitHub, GitHubCore, Response
from githubkit.exception import (
    GitHubException,
    GraphQLFailed,
    RateLimitExceeded,
    RequestError,
    RequestFailed,
    RequestTimeout,
)
from githubkit.typing import RetryOption

from wms.errors import BackendError

# A rate limit that resets within this is waited for, once; a longer one is reported at once.
RATE_LIMIT_WAIT = timedelta(seconds=60)
MIN_PAUSE = timedelta(milliseconds=1)
# GitHub's answers to a token that expires (a fine-grained PAT always does) name when it does.
EXPIRY_HEADER = "GitHub-Authentication-Token-Expiration"
EXPIRY_WARNING = timedelta(days=14)


class GitHubError(BackendError):
    """GitHub answered with an error, or could not be reached."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class _Bearer(httpx.Auth):
    def __init__(self, token: str, seen: Callable[[httpx.Response], None]) -> None:
        self._token = token
        self._seen = seen

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        response = yield request
        self._seen(response)


class BearerToken(BaseAuthStrategy):
    """A token sent as `Authorization: Bearer` (githubkit's own sends `token`); never in a repr.

    `seen` gets each answer (its headers), as it comes, without a request of its own."""

    def __init__(self, token: str, seen: Callable[[httpx.Response], None] = lambda _: None) -> None:
        self._token = token
        self._seen = seen

    def get_auth_flow(self, github: GitHubCore[Any]) -> httpx.Auth:
        return _Bearer(self._token, self._seen)


class GitHubClient:
    """githubkit's client set up for wms; every answer comes back as JSON or one GitHubError.

    Server errors (5xx) are retried `retries` times after `backoff` x 1, 4, 9 ... seconds;
    a rate limit is waited for once when it resets within RATE_LIMIT_WAIT. `token_name` is
    where the token comes from, named when GitHub refuses it; `on_expiring` is called once
    with the token's expiry when the first answer says it is within EXPIRY_WARNING.
    """

    def __init__(
        self,
        api_url: str,
        token: str,
        timeout: float = 30.0,
        *,
        retries: int = 3,
        backoff: float = 1.0,
        token_name: str = "WMS_GITHUB_TOKEN",
        on_expiring: Callable[[datetime], None] | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.token = token
        self.token_name = token_name
        self.on_expiring = on_expiring
        self.token_expires: datetime | None = None
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.sdk = GitHub(
            BearerToken(token, self._seen),
            base_url=self.api_url,
            user_agent="wms",
            timeout=timeout,
            http_cache=False,  # one command, a few requests: nothing worth caching
            # githubkit opens an httpx client per request; one TLS context spares each of them
            # loading the CA bundle again (a tenth of a second each)
            ssl_verify=httpx.create_ssl_context(),
            auto_retry=self._retry,
        )

    @property
    def graphql_url(self) -> str:
        """Where githubkit sends GraphQL: api.github.com/graphql; GHE <host>/api/v3 → <host>/api/graphql."""
        if self.api_url.endswith("/api/v3"):
            return self.api_url[: -len("/v3")] + "/graphql"
        return self.api_url + "/graphql"

    def call(self, request: Callable[[], Response[Any, Any]]) -> Any:
        """Send one REST request (`lambda: client.sdk.rest...`); returns its JSON answer (plain JSON)."""
        try:
            return request().json()
        except GitHubException as exc:
            raise self._error(exc) from None
        except json.JSONDecodeError:  # an empty or non-JSON answer where JSON is due
            raise GitHubError(f"GitHub's answer at {self.api_url} is not JSON; check git.api_url") from None

    def send(self, request: Callable[[], Response[Any, Any]]) -> None:
        """Send one REST request whose answer carries nothing wms reads (204 No Content)."""
        try:
            request()
        except GitHubException as exc:
            raise self._error(exc) from None

    def graphql(self, query: str, variables: dict[str, Any]) -> dict[str, Any]:
        """A GraphQL call; errors come back as a GitHubError carrying GitHub's messages."""
        try:
            return dict(self.sdk.graphql.request(query, variables) or {})
        except GraphQLFailed as exc:
            raise GitHubError("; ".join(e.message for e in exc.response.errors or []), 200) from None
        except GitHubException as exc:
            raise self._error(exc) from None

    def _seen(self, response: httpx.Response) -> None:
        if self.token_expires is not None or not (value := response.headers.get(EXPIRY_HEADER)):
            return
        try:  # "2026-12-20 10:00:00 UTC" (or an offset such as -0800)
            expires = datetime.strptime(value.replace(" UTC", " +0000"), "%Y-%m-%d %H:%M:%S %z")
        except ValueError:
            return
        self.token_expires = expires
        if self.on_expiring is not None and expires - datetime.now(UTC) < EXPIRY_WARNING:
            self.on_expiring(expires)

    def _retry(self, exc: GitHubException, count: int) -> RetryOption:
        # githubkit sleeps 60 s for a zero pause (a falsy timedelta): never hand it one
        if isinstance(exc, RateLimitExceeded):
            wait = max(exc.retry_after, MIN_PAUSE)
            return RetryOption(count == 0 and wait <= RATE_LIMIT_WAIT, wait)
        if isinstance(exc, RequestFailed) and exc.response.status_code >= 500 and count < self.retries:
            return RetryOption(True, max(timedelta(seconds=self.backoff * (count + 1) ** 2), MIN_PAUSE))
        return RetryOption(False)

    def _error(self, exc: GitHubException) -> GitHubError:
        if isinstance(exc, RequestTimeout):
            return GitHubError(
                f"{self.api_url} did not answer within {self.timeout:g} s; check git.api_url and the network"
            )
        if not isinstance(exc, RequestFailed):
            reason = exc.exc if isinstance(exc, RequestError) else exc
            return GitHubError(
                f"could not reach {self.api_url} ({reason}); check git.api_url and the network"
            )
        status, message = exc.response.status_code, _message(exc.response.raw_response)
        where = f"{exc.request.method} {exc.request.url.path}"
        if isinstance(exc, RateLimitExceeded):
            minutes = max(1, round(exc.retry_after.total_seconds() / 60))
            return GitHubError(
                f"GitHub's rate limit is used up ({where}: {message}); it resets in about {minutes} min: "
                "run the command again then, or use a GitHub App token (WMS_GITHUB_TOKEN), which has more",
                status,
            )
        if status == 401:
            return GitHubError(
                f"GitHub refused the token {self.token_name} ({where}: {message}): it expired, was revoked "
                f"or is wrong; make a new one and put it in {self.token_name} (in the workflows, the "
                "secret of environment wms-production; docs/github.md)",
                status,
            )
        if status in (403, 404):
            return GitHubError(
                f"GitHub answered {status} to {where} ({message}); check git.repository and that the "
                "token may write contents and pull requests (runners need administration: read)",
                status,
            )
        return GitHubError(f"GitHub answered {status} to {where}: {message}", status)


def _message(response: httpx.Response) -> str:
    """GitHub's message, with the details of a 422 ("Validation Failed: A pull request already exists")."""
    try:
        answer = response.json()
    except ValueError:  # an HTML error page from a proxy or load balancer: one line of it
        return " ".join(response.text.split())[:200]
    if not isinstance(answer, dict):
        return str(answer)[:200]
    details = [e.get("message", "") if isinstance(e, dict) else str(e) for e in answer.get("errors") or []]
    return ": ".join([str(answer.get("message", "")), *filter(None, details)]) or response.reason_phrase
