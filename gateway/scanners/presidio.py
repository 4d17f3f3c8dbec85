"""A Presidio analyzer server (``presidio-analyzer``'s REST API): ``POST <url>/analyze`` with
``{"text", "language", "score_threshold", "entities"?}``, answered by a list of findings
``{"entity_type", "start", "end", "score"}``. The texts of a phase go in one call, joined by
newlines. Findings at or above the scanner's threshold (of the entity types it names, or any)
block or flag as configured; the security event keeps the entity types, never the values."""

from __future__ import annotations

from gateway.scanners.base import (
    ALLOW,
    ScannerBadResponse,
    ScanRequest,
    ScanVerdict,
    bounded_reasons,
)
from gateway.scanners.http import HttpScannerBase


class PresidioScanner(HttpScannerBase):
    async def scan(self, request: ScanRequest) -> ScanVerdict:
        config = self.config
        text = request.joined()
        if not text:
            return ScanVerdict(ALLOW)
        body: dict[str, object] = {
            "text": text,
            "language": config.language or "en",
            "score_threshold": config.score_threshold,
        }
        if config.entities:
            body["entities"] = list(config.entities)
        answer = await self._post(config.url.rstrip("/") + "/analyze", body, request)
        if not isinstance(answer, list):
            raise ScannerBadResponse(f"{self._label} answered something other than a list")
        wanted = set(config.entities)
        types: set[str] = set()
        best = 0.0
        for finding in answer:
            if not isinstance(finding, dict):
                raise ScannerBadResponse(f"{self._label} answered a finding that is not an object")
            kind, score = finding.get("entity_type"), finding.get("score")
            if (
                not isinstance(kind, str)
                or isinstance(score, bool)
                or not isinstance(score, int | float)
            ):
                raise ScannerBadResponse(f"{self._label} answered a finding without type or score")
            if score >= config.score_threshold and (not wanted or kind in wanted):
                types.add(kind)
                best = max(best, float(score))
        if not types:
            return ScanVerdict(ALLOW)
        return ScanVerdict(config.on_detect, min(best, 1.0), bounded_reasons(sorted(types)))
