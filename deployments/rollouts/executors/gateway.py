"""The gateway as the router: a split is the alias's ``gateway.ModelVersion.weight`` rows.

``apply_split`` writes the weights (stable ``100 - p``, candidate ``p``, the alias's other
versions 0; the total stays 100, so the gateway's sticky pick per end user moves users only
from stable to candidate as ``p`` grows). It runs inside the caller's transaction; once that
commits, this process's routing table is dropped (the next request here routes by the new
weights) and, when the set of versions taking traffic changed, the alias's response-cache
namespace is bumped (answers cached from the old versions must not be served for the new
ones). Other
web processes are told through Redis pub/sub (``route.invalidate_routing``) and route by the new
weights on their next request; without Redis they rebuild within ``route.REFRESH_SECONDS``.
"""

from __future__ import annotations

import asyncio
from typing import Any

import structlog
from asgiref.sync import async_to_sync
from django.db import transaction
from django.utils import timezone

from deployments.rollouts.executors import ExecutorError
from gateway import cache
from gateway.models import ModelVersion, ProviderDeployment
from gateway.pipeline import route
from gateway.providers.base import ChatMessage, ChatRequest, UpstreamError
from gateway.providers.registry import build_adapter
from gateway.resilience.breaker import breaker_store
from gateway.resilience.policy import policy_for

log = structlog.get_logger("rollouts.gateway")

PROBE_TIMEOUT_SECONDS = 30.0


def _serving(weights: dict[str, int]) -> frozenset[str]:
    """Versions that take traffic: those with a weight, or all when none has one (route.py)."""
    return frozenset(v for v, w in weights.items() if w > 0) or frozenset(weights)


class GatewayExecutor:
    kind = "gateway"

    def __init__(self, config: dict[str, Any]) -> None:
        alias = config.get("alias")
        if not alias:
            raise ExecutorError("The gateway executor needs the alias.")
        self.alias = str(alias)

    def _weights(self, *, lock: bool = False) -> dict[str, int]:
        versions = ModelVersion.objects.filter(alias__name=self.alias)
        if lock:
            versions = versions.select_for_update()
        return dict(versions.values_list("version", "weight"))

    def apply_split(self, *, stable: str, candidate: str, candidate_percent: int) -> None:
        if not 0 <= candidate_percent <= 100:
            raise ExecutorError("The candidate's share must be 0-100 %.")
        with transaction.atomic():
            before = self._weights(lock=True)
            missing = {stable, candidate} - set(before)
            if missing:
                raise ExecutorError(
                    f"Alias {self.alias!r} has no version {', '.join(sorted(missing))}."
                )
            after = dict.fromkeys(before, 0)
            after[stable] = 100 - candidate_percent
            after[candidate] = candidate_percent
            now = timezone.now()
            for version, weight in after.items():
                if before[version] != weight:
                    # update(), not save(): the save signals would bump the cache namespace on
                    # every weight change; here it is bumped only when a version comes or goes.
                    ModelVersion.objects.filter(alias__name=self.alias, version=version).update(
                        weight=weight, updated_at=now
                    )
        if after == before:
            return
        versions_changed = _serving(before) != _serving(after)
        alias = self.alias

        def publish() -> None:
            route.invalidate_routing()
            if versions_changed:
                try:
                    cache.invalidate_alias(alias)
                except Exception:  # the cache being down must not undo the switch
                    log.warning("cache_invalidation_failed", alias=alias, exc_info=True)

        transaction.on_commit(publish)

    def health_probe(self, *, candidate: str) -> tuple[bool, str]:
        """The candidate's deployment is enabled, its circuit breaker is not open, and it
        answers a one-token chat request."""
        version = (
            ModelVersion.objects.select_related("deployment__provider")
            .filter(alias__name=self.alias, version=candidate)
            .first()
        )
        if version is None:
            return False, f"{self.alias}@{candidate} does not exist"
        deployment: ProviderDeployment = version.deployment
        if not deployment.enabled or not deployment.provider.enabled:
            return False, f"deployment {deployment.name} or its provider is disabled"
        if deployment.breaker_override == ProviderDeployment.BreakerOverride.FORCED_OPEN:
            return False, f"the circuit breaker of {deployment.name} is forced open"
        policy = policy_for(deployment, connect_timeout=0, read_timeout=0)
        state = breaker_store().snapshot({deployment.name: policy})[deployment.name].state
        if state == "open":
            return False, f"the circuit breaker of {deployment.name} is open"
        # A fresh adapter: cached ones belong to the web process's event loop.
        adapter = build_adapter(route.provider_config_for(deployment.provider))
        timeout = min(deployment.total_timeout, PROBE_TIMEOUT_SECONDS)
        request = ChatRequest(
            model=deployment.model,
            messages=[ChatMessage(role="user", content="ping")],
            max_tokens=1,
        )

        async def probe() -> tuple[bool, str]:
            try:
                await asyncio.wait_for(adapter.complete(request), timeout)
            except UpstreamError as exc:
                return False, f"{deployment.name} failed the probe: {exc.code}: {exc.message}"
            except TimeoutError:
                return False, f"{deployment.name} did not answer the probe within {timeout:g} s"
            finally:
                await adapter.aclose()
            return True, f"{deployment.name} answered the probe"

        return async_to_sync(probe)()

    def describe(self) -> dict[str, Any]:
        return {"executor": self.kind, "alias": self.alias, "weights": self._weights()}
