"""AWS Bedrock Guardrails: ``bedrock-runtime``'s ``ApplyGuardrail`` through boto3 (``POST
/guardrail/{id}/version/{version}/apply``), with ``source`` INPUT before the call and OUTPUT
after it. ``GUARDRAIL_INTERVENED`` blocks or flags as configured (``on_detect``); the security
event keeps which policies fired (``contentPolicy:PROMPT_ATTACK``,
``sensitiveInformationPolicy:EMAIL``), never the matched text.

Credentials come from boto3's default chain (environment, instance or task role). boto3 is
synchronous: the call runs in a worker thread with botocore's own connect and read timeouts set
to the scanner's, and no retries (the scanner's fail mode decides)."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import botocore.exceptions as boto
from botocore.config import Config
from django.conf import settings

from gateway.providers.bedrock import _build_lock, _new_session
from gateway.scanners.base import (
    ALLOW,
    PRE_CALL,
    ScannerBadResponse,
    ScannerConfig,
    ScannerFailed,
    ScannerTimeout,
    ScanRequest,
    ScanVerdict,
    bounded_reasons,
)
from gateway.scanners.policy import check_scanner_url

NONE, INTERVENED = "NONE", "GUARDRAIL_INTERVENED"
# The assessment's policies and, in each, the lists whose items name what fired.
_POLICIES = {
    "topicPolicy": ("topics", "name"),
    "contentPolicy": ("filters", "type"),
    "wordPolicy": ("customWords", "match"),
    "sensitiveInformationPolicy": ("piiEntities", "type"),
    "contextualGroundingPolicy": ("filters", "type"),
}


def _fired(assessments: Any) -> list[str]:
    found: list[str] = []
    for assessment in assessments if isinstance(assessments, list) else ():
        for policy, (items_key, name_key) in _POLICIES.items():
            section = assessment.get(policy) if isinstance(assessment, dict) else None
            if not isinstance(section, dict):
                continue
            for item in section.get(items_key) or ():
                if policy == "wordPolicy":  # the matched word is the user's text: not kept
                    found.append(f"{policy}:customWord")
                elif isinstance(item, dict) and item.get("action", "BLOCKED") != "NONE":
                    found.append(f"{policy}:{item.get(name_key, '?')}")
            if policy == "sensitiveInformationPolicy":
                for regex in section.get("regexes") or ():
                    found.append(f"{policy}:{regex.get('name', 'regex')}")
    return sorted(set(found))


class BedrockGuardrailScanner:
    def __init__(self, config: ScannerConfig) -> None:
        self.config = config
        self._label = f"scanner '{config.name}'"
        self._client: Any = None
        self._lock = threading.Lock()

    def _get_client(self) -> Any:
        if self.config.url:
            try:
                check_scanner_url(self.config.url)
            except ValueError as exc:
                raise ScannerFailed(f"{self._label}: {exc}", reason="not_allowed") from None
        with self._lock:
            if self._client is None:
                with _build_lock:
                    try:
                        self._client = _new_session().client(
                            "bedrock-runtime",
                            region_name=self.config.region or settings.AWS_REGION,
                            endpoint_url=self.config.url or None,
                            config=Config(
                                connect_timeout=self.config.timeout,
                                read_timeout=self.config.timeout,
                                retries={"total_max_attempts": 1, "mode": "standard"},
                            ),
                        )
                    except (ValueError, boto.BotoCoreError) as exc:
                        raise ScannerFailed(
                            f"{self._label} has an invalid endpoint or region"
                        ) from exc
            return self._client

    def _apply(self, request: ScanRequest) -> dict[str, Any]:
        client = self._get_client()
        try:
            result: dict[str, Any] = client.apply_guardrail(
                guardrailIdentifier=self.config.guardrail_id,
                guardrailVersion=self.config.guardrail_version,
                source="INPUT" if request.phase == PRE_CALL else "OUTPUT",
                content=[{"text": {"text": t.text}} for t in request.texts if t.text],
            )
        except (boto.ReadTimeoutError, boto.ConnectTimeoutError):
            raise ScannerTimeout(f"{self._label} did not answer in time") from None
        except boto.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code") or "error")
            raise ScannerFailed(f"{self._label} was refused ({code[:64]})") from None
        except boto.NoCredentialsError:
            raise ScannerFailed(f"{self._label} has no AWS credentials") from None
        except (boto.BotoCoreError, ValueError) as exc:
            # ResponseParserError and friends: an answer botocore could not read.
            raise ScannerFailed(
                f"{self._label} failed ({type(exc).__name__})", reason="bad_response"
            ) from None
        return result

    async def scan(self, request: ScanRequest) -> ScanVerdict:
        if not any(t.text for t in request.texts):
            return ScanVerdict(ALLOW)
        result = await asyncio.to_thread(self._apply, request)
        action = result.get("action")
        if action not in {NONE, INTERVENED}:
            # botocore reads a cut-off or foreign body as an empty answer: not an allow.
            raise ScannerBadResponse(f"{self._label} answered without an action")
        if action == NONE:
            return ScanVerdict(ALLOW)
        reasons = _fired(result.get("assessments"))
        reason = result.get("actionReason")
        if isinstance(reason, str) and reason:
            reasons.append(f"actionReason:{reason}")
        return ScanVerdict(self.config.on_detect, 1.0, bounded_reasons(reasons or ["intervened"]))

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.close()
