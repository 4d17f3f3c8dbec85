"""The generic HTTP scanner: the gateway's own JSON contract (documented in docs/security.md,
"Bring-your-own scanners").

Request, ``POST <url>`` with ``Content-Type: application/json``, ``X-Request-ID`` and, when
configured, the auth header (its value resolved from a secret reference)::

    {"version": 1, "phase": "pre_call" | "post_call", "request_id": "...",
     "scanner": "<name>", "tenant": {"id": 3, "slug": "acme"}, "alias": "default",
     "texts": [{"index": 0, "role": "user", "kind": "message",
                "param": "messages[0].content", "text": "..."}, ...]}

Answer, a 2xx with a JSON object: ``{"action": "allow" | "flag" | "block", "score": 0.93,
"reasons": ["..."]}`` (``score`` and ``reasons`` optional; other keys ignored). Anything else (a
non-2xx, a body that is not such an object, no answer within the scanner's timeout) is a
failure, which the scanner's fail mode decides on.

``PresidioScanner`` (``presidio.py``) reuses the session and auth handling here.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson

from gateway.providers.openai_compatible import _proxies_in_environment, _tls_context
from gateway.scanners.base import (
    ACTIONS,
    ScannerBadResponse,
    ScannerConfig,
    ScannerFailed,
    ScannerTimeout,
    ScanRequest,
    ScanVerdict,
    bounded_reasons,
)
from gateway.scanners.policy import GuardedResolver, check_scanner_url
from gateway.secrets import SecretNotFound, aresolve_secret

CONTRACT_VERSION = 1
MAX_ANSWER_BYTES = 64 * 1024


class HttpScannerBase:
    """One pooled aiohttp session per event loop (as the providers' adapters keep), names
    resolved through ``GuardedResolver``, the auth header from its secret reference."""

    def __init__(self, config: ScannerConfig) -> None:
        self.config = config
        self._label = f"scanner '{config.name}'"
        self._client: aiohttp.ClientSession | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None

    def _http(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            connector = aiohttp.TCPConnector(
                limit=64, ssl=_tls_context(), keepalive_timeout=5.0, resolver=GuardedResolver()
            )
            self._client = aiohttp.ClientSession(
                connector=connector,
                trust_env=_proxies_in_environment(),
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
            )
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        client, loop = self._client, self._client_loop
        self._client = self._client_loop = None
        if client is not None and loop is asyncio.get_running_loop():
            await client.close()

    async def _headers(self, request: ScanRequest) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "X-Request-ID": request.request_id}
        if self.config.auth_secret_ref:
            try:
                value = await aresolve_secret(self.config.auth_secret_ref)
            except SecretNotFound as exc:
                raise ScannerFailed(f"{self._label}: {exc}") from None
            headers[self.config.auth_header or "Authorization"] = value
        return headers

    async def _post(self, url: str, body: dict[str, Any], request: ScanRequest) -> Any:
        """POST ``body`` as JSON; the decoded JSON answer of a 2xx, else ``ScannerFailed``."""
        try:
            check_scanner_url(url)
        except ValueError as exc:
            raise ScannerFailed(f"{self._label}: {exc}", reason="not_allowed") from None
        headers = await self._headers(request)
        timeout = aiohttp.ClientTimeout(total=self.config.timeout)
        try:
            async with self._http().post(
                url,
                data=orjson.dumps(body),
                headers=headers,
                timeout=timeout,
                allow_redirects=False,
            ) as response:
                status = response.status
                raw = b""
                async for chunk in response.content.iter_chunked(16 * 1024):
                    raw += chunk
                    if len(raw) > MAX_ANSWER_BYTES:
                        break
        except TimeoutError:
            raise ScannerTimeout(f"{self._label} did not answer in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ScannerFailed(f"{self._label} is unreachable ({type(exc).__name__})") from None
        if not 200 <= status < 300:
            raise ScannerFailed(f"{self._label} answered HTTP {status}")
        if len(raw) > MAX_ANSWER_BYTES:
            raise ScannerBadResponse(f"{self._label} answered more than {MAX_ANSWER_BYTES} bytes")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise ScannerBadResponse(f"{self._label} answered something that is not JSON") from None


class HttpScanner(HttpScannerBase):
    async def scan(self, request: ScanRequest) -> ScanVerdict:
        body = {
            "version": CONTRACT_VERSION,
            "phase": request.phase,
            "request_id": request.request_id,
            "scanner": self.config.name,
            "tenant": {"id": request.tenant_id, "slug": request.tenant_slug},
            "alias": request.alias,
            "texts": [
                {"index": n, "role": t.role, "kind": t.kind, "param": t.param, "text": t.text}
                for n, t in enumerate(request.texts)
            ],
        }
        answer = await self._post(self.config.url, body, request)
        return parse_answer(answer, self._label)


def parse_answer(answer: Any, label: str) -> ScanVerdict:
    """The contract's answer as a verdict; anything else is ``ScannerBadResponse``."""
    if not isinstance(answer, dict) or answer.get("action") not in ACTIONS:
        raise ScannerBadResponse(f"{label} answered without an action of allow, flag or block")
    score = answer.get("score", 0.0)
    if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
        score = 1.0 if answer["action"] != "allow" else 0.0
    return ScanVerdict(answer["action"], float(score), bounded_reasons(answer.get("reasons")))
