"""The VTN's REST API as the VEN uses it, over aiohttp: an OAuth2 client-credentials token fetched
when needed (and again once the VTN refuses it), JSON in and out, list endpoints paged through.

Every failure is a :class:`VtnError` saying what went wrong (unreachable, timed out, an HTTP status
with the VTN's Problem detail, a body that is not JSON): the source counts them as failed polls.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import quote_plus

import aiohttp

from csms.grid.sources.openadr.config import OpenAdrConfig

PAGE = 50  # the spec's largest `limit`
MAX_PAGES = 40  # 2000 objects per list: more is a runaway VTN, not a program
TOKEN_MARGIN = 0.8  # refresh a token after this share of its lifetime


class VtnError(Exception):
    """A request to the VTN failed; ``status`` is the HTTP status when there was one."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class VtnClient:
    """One VEN's HTTP session with its VTN (open/close with the source)."""

    def __init__(self, config: OpenAdrConfig) -> None:
        self.config = config
        self.base = config.vtn_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        self._token: str | None = None
        self._token_url: str | None = None
        self._token_until = 0.0
        self.tokens_fetched = 0

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.config.request_timeout_s),
                                              raise_for_status=False)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def forget_token(self) -> None:
        self._token = None

    async def token_url(self) -> str:
        """Where tokens come from: configured, else (3.1.0) what ``GET auth/server`` names, else the
        spec's default path. Asked once per start; a VTN that does not answer it gets the default."""
        if self._token_url is None:
            self._token_url = self.config.token_endpoint
            if self.config.token_url is None and self.config.spec_version != "3.0.1":
                status, body = await self._send("GET", f"{self.base}/auth/server")
                found = body.get("tokenURL") if isinstance(body, dict) else None
                if status == 200 and isinstance(found, str) and found.startswith(("http://", "https://")):
                    self._token_url = found
        return self._token_url

    async def _fetch_token(self) -> str:
        form = {"grant_type": "client_credentials"}
        headers = {}
        if self.config.token_auth == "basic":  # RFC 6749 2.3.1: every server must support it; both parts
            pair = f"{quote_plus(self.config.client_id)}:{quote_plus(self.config.secret)}"  # form-encoded first
            headers["Authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            form |= {"client_id": self.config.client_id, "client_secret": self.config.secret}
        if self.config.scope:
            form["scope"] = self.config.scope
        status, body = await self._send("POST", await self.token_url(), data=form, headers=headers)
        if status != 200 or not isinstance(body, dict):
            detail = body.get("error_description") or body.get("detail") or body.get("error") or body.get("title") \
                if isinstance(body, dict) else body
            raise VtnError(f"token endpoint answered {status}: {detail}"[:300], status)
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise VtnError("token endpoint answered without an access_token")
        expires = body.get("expires_in")
        lifetime = float(expires) if isinstance(expires, (int, float)) and not isinstance(expires, bool) else 3600.0
        self._token, self._token_until = token, time.monotonic() + max(1.0, lifetime * TOKEN_MARGIN)
        self.tokens_fetched += 1
        return token

    async def _bearer(self) -> str:
        if self._token is None or time.monotonic() >= self._token_until:
            return await self._fetch_token()
        return self._token

    async def _send(self, method: str, url: str, **kwargs: Any) -> tuple[int, Any]:
        if self._session is None:
            raise VtnError("the VTN client is not open")
        try:
            async with self._session.request(method, url, **kwargs) as response:
                text = await response.text()
                status = response.status
        except TimeoutError:
            raise VtnError(f"{method} {url}: no answer within {self.config.request_timeout_s:g} s") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise VtnError(f"{method} {url}: {type(exc).__name__}: {exc}"[:300]) from None
        if not text:
            return status, None
        try:
            return status, json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise VtnError(f"{method} {url}: the VTN answered {status} with a body that is not JSON", status) from None

    async def request(self, method: str, path: str, *, params: Any = None, body: Any = None) -> Any:
        """A call with the bearer token; a refused token (401/403) is fetched again once."""
        for attempt in (1, 2):
            token = await self._bearer()
            status, data = await self._send(method, f"{self.base}{path}", params=params, json=body,
                                            headers={"Authorization": f"Bearer {token}"})
            if status in (401, 403) and attempt == 1 and self._token is not None:
                self._token = None  # revoked or expired early: one fresh token, then give up
                continue
            if status >= 400:
                detail = data.get("detail") or data.get("title") if isinstance(data, dict) else data
                raise VtnError(f"{method} {path} answered {status}: {detail}"[:300], status)
            return data
        raise AssertionError("unreachable")

    async def list(self, path: str, params: list[tuple[str, str]] | None = None) -> list[Any]:
        """Every object of a list endpoint, page by page (``skip``/``limit``)."""
        out: list[Any] = []
        for page in range(MAX_PAGES):
            data = await self.request("GET", path, params=[*(params or []), ("skip", str(page * PAGE)),
                                                           ("limit", str(PAGE))])
            if not isinstance(data, list):
                raise VtnError(f"GET {path}: expected a JSON list, got {type(data).__name__}")
            out.extend(data)
            if len(data) < PAGE:
                return out
        raise VtnError(f"GET {path}: more than {PAGE * MAX_PAGES} objects")


async def first(client: VtnClient, path: str, params: list[tuple[str, str]]) -> dict[str, Any] | None:
    """The first object a filtered list returns (None when empty)."""
    found = await client.list(path, params)
    return found[0] if found and isinstance(found[0], dict) else None


__all__ = ["VtnClient", "VtnError", "first"]
