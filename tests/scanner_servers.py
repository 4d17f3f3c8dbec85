"""Real scanner servers for tests, on loopback, built on ``tests.upstreams``' threaded server:

- ``HttpScannerServer``: the gateway's JSON contract (``POST /scan``). It blocks a request whose
  texts contain one of ``block_words`` (``{"action": "block", "score": 0.97, "reasons":
  ["matched:<word>"]}``), flags one containing one of ``flag_words``, allows the rest;
  ``required_key``: a request without ``Authorization: Bearer <key>`` gets 401.
- ``BedrockGuardrailServer``: bedrock-runtime's ``ApplyGuardrail`` REST API (``POST
  /guardrail/{id}/version/{version}/apply``) as boto3 calls it, SigV4-signed (the signature is
  accepted, not checked; the request must carry one). A text holding one of ``block_words``
  gets ``GUARDRAIL_INTERVENED`` with a ``contentPolicy`` ``PROMPT_ATTACK`` filter and a
  ``sensitiveInformationPolicy`` ``EMAIL`` entity; the rest ``NONE``. An unknown guardrail id
  (other than ``guardrail_id``) gets 404 ``ResourceNotFoundException``.
- ``PresidioServer``: a Presidio analyzer's ``POST /analyze``: e-mail addresses are
  ``EMAIL_ADDRESS`` (score 1.0), ``John Smith`` is a ``PERSON`` (0.85), "maybe" a ``PERSON``
  (0.3); findings below the request's ``score_threshold`` or outside its ``entities`` are left
  out, as Presidio does.

Misbehaviours (``behaviour``), for all three: ``"error500"``, ``"malformed_json"`` (a 200 with a
cut-off body), ``"no_action"`` (valid JSON without what the protocol needs), ``"hang"`` (no
answer for ``hang_seconds``); the HTTP scanner also ``"redirect"`` (a 302 to the metadata
address) and ``"huge"`` (a valid answer of 200 KB).
"""

from __future__ import annotations

import re
from typing import Any

from .upstreams import ReceivedRequest, _Handler, _Upstream


class _ScannerServer(_Upstream):
    def __init__(self, behaviour: str = "ok") -> None:
        super().__init__(behaviour)
        self.block_words: list[str] = ["ATTACK"]
        self.flag_words: list[str] = []

    def texts(self, request: ReceivedRequest) -> list[str]:
        raise NotImplementedError

    def _misbehave(self, handler: _Handler) -> bool:
        if self.behaviour == "error500":
            handler.send_json(500, {"error": "internal"})
        elif self.behaviour == "malformed_json":
            handler.send_bytes(200, "application/json", b'{"action": "al')
        elif self.behaviour == "hang":
            self._hang(handler)
        else:
            return False
        return True

    def found(self, words: list[str], request: ReceivedRequest) -> str | None:
        for text in self.texts(request):
            for word in words:
                if word in text:
                    return word
        return None


class HttpScannerServer(_ScannerServer):
    base_path = "/scan"

    def texts(self, request: ReceivedRequest) -> list[str]:
        body = request.json or {}
        return [t.get("text", "") for t in body.get("texts", [])]

    def answer(self, handler: _Handler, request: ReceivedRequest) -> None:
        if request.method != "POST" or request.path != "/scan":
            handler.send_json(404, {"error": "not found"})
            return
        if self.required_key is not None and (
            request.headers.get("authorization") != f"Bearer {self.required_key}"
        ):
            handler.send_json(401, {"error": "unauthorized"})
            return
        if self._misbehave(handler):
            return
        if self.behaviour == "no_action":
            handler.send_json(200, {"verdict": "fine"})
        elif self.behaviour == "redirect":
            handler.send_bytes(
                302, "text/plain", b"", {"Location": "http://169.254.169.254/latest/meta-data/"}
            )
        elif self.behaviour == "huge":
            handler.send_json(200, {"action": "allow", "padding": "x" * 200_000})
        elif (word := self.found(self.block_words, request)) is not None:
            handler.send_json(
                200, {"action": "block", "score": 0.97, "reasons": [f"matched:{word}"]}
            )
        elif (word := self.found(self.flag_words, request)) is not None:
            handler.send_json(200, {"action": "flag", "score": 0.6, "reasons": [f"seen:{word}"]})
        else:
            handler.send_json(200, {"action": "allow", "score": 0.01})


class BedrockGuardrailServer(_ScannerServer):
    _PATH = re.compile(r"/guardrail/(?P<id>[^/]+)/version/(?P<version>[^/]+)/apply")

    def __init__(self, behaviour: str = "ok") -> None:
        super().__init__(behaviour)
        self.guardrail_id = "gr0abc123"

    def texts(self, request: ReceivedRequest) -> list[str]:
        body = request.json or {}
        return [c.get("text", {}).get("text", "") for c in body.get("content", [])]

    def _error(self, handler: _Handler, status: int, error_type: str, message: str) -> None:
        handler.send_json(
            status,
            {"message": message},
            headers={"x-amzn-ErrorType": f"{error_type}:http://internal.amazon.com/"},
        )

    def answer(self, handler: _Handler, request: ReceivedRequest) -> None:
        match = self._PATH.fullmatch(request.path)
        if request.method != "POST" or match is None:
            self._error(handler, 404, "UnknownOperationException", "Unknown operation")
            return
        if not request.headers.get("authorization", "").startswith("AWS4-HMAC-SHA256 "):
            self._error(handler, 403, "MissingAuthenticationTokenException", "Not signed")
            return
        if match["id"] != self.guardrail_id:
            self._error(handler, 404, "ResourceNotFoundException", "No such guardrail")
            return
        if self.behaviour == "error500":
            self._error(handler, 500, "InternalServerException", "The server failed.")
            return
        if self._misbehave(handler):
            return
        if self.behaviour == "no_action":
            handler.send_json(200, {"outputs": []})
            return
        usage = {
            "topicPolicyUnits": 1,
            "contentPolicyUnits": 1,
            "wordPolicyUnits": 1,
            "sensitiveInformationPolicyUnits": 1,
            "sensitiveInformationPolicyFreeUnits": 0,
            "contextualGroundingPolicyUnits": 0,
        }
        if self.found(self.block_words, request) is None:
            handler.send_json(
                200, {"usage": usage, "action": "NONE", "outputs": [], "assessments": [{}]}
            )
            return
        handler.send_json(
            200,
            {
                "usage": usage,
                "action": "GUARDRAIL_INTERVENED",
                "actionReason": "Guardrail blocked.",
                "outputs": [{"text": "Sorry, I can't help with that."}],
                "assessments": [
                    {
                        "contentPolicy": {
                            "filters": [
                                {
                                    "type": "PROMPT_ATTACK",
                                    "confidence": "HIGH",
                                    "action": "BLOCKED",
                                    "detected": True,
                                }
                            ]
                        },
                        "sensitiveInformationPolicy": {
                            "piiEntities": [
                                {
                                    "type": "EMAIL",
                                    "match": "someone@example.com",
                                    "action": "BLOCKED",
                                    "detected": True,
                                }
                            ],
                            "regexes": [],
                        },
                    }
                ],
            },
        )


_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


class PresidioServer(_ScannerServer):
    def texts(self, request: ReceivedRequest) -> list[str]:
        return [(request.json or {}).get("text", "")]

    def answer(self, handler: _Handler, request: ReceivedRequest) -> None:
        if request.method != "POST" or request.path != "/analyze":
            handler.send_json(404, {"error": "not found"})
            return
        if self._misbehave(handler):
            return
        body: dict[str, Any] = request.json or {}
        if self.behaviour == "no_action":
            handler.send_json(200, {"entities": "none"})
            return
        if not isinstance(body.get("text"), str) or not body.get("language"):
            handler.send_json(400, {"error": "text and language are required"})
            return
        text = body["text"]
        findings = [
            {"entity_type": "EMAIL_ADDRESS", "start": m.start(), "end": m.end(), "score": 1.0}
            for m in _EMAIL.finditer(text)
        ]
        for name, score in (("John Smith", 0.85), ("maybe", 0.3)):
            start = text.find(name)
            if start >= 0:
                findings.append(
                    {
                        "entity_type": "PERSON",
                        "start": start,
                        "end": start + len(name),
                        "score": score,
                    }
                )
        threshold = float(body.get("score_threshold") or 0)
        wanted = body.get("entities")
        handler.send_json(
            200,
            [
                f
                for f in findings
                if f["score"] >= threshold and (not wanted or f["entity_type"] in wanted)
            ],
        )
