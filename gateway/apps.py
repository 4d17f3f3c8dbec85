from __future__ import annotations

from django.apps import AppConfig
from django.db.models.signals import m2m_changed, post_delete, post_save


class GatewayConfig(AppConfig):
    name = "gateway"
    verbose_name = "Gateway"

    def ready(self) -> None:
        from gateway import cache, models
        from gateway.pipeline import authenticate, route
        from gateway.readiness import providers_ready
        from llmplatform.health import register_readiness_probe

        # Config changes saved in this process take effect at once here; other processes pick
        # them up within route.REFRESH_SECONDS / LLMP_AUTH_CACHE_SECONDS.
        for model in (
            models.ModelAlias,
            models.ModelVersion,
            models.ProviderDeployment,
            models.Provider,
            models.AliasFallback,
            models.GuardrailScanner,  # the scanners are part of the routing snapshot
        ):
            post_save.connect(route.invalidate_routing, sender=model, weak=False)
            post_delete.connect(route.invalidate_routing, sender=model, weak=False)
        # A changed alias or version gets a fresh response-cache namespace: answers cached for the
        # old model or system prompt are not served again.
        for model in (models.ModelAlias, models.ModelVersion):
            post_save.connect(cache.safe_invalidate_alias, sender=model, weak=False)
            post_delete.connect(cache.safe_invalidate_alias, sender=model, weak=False)
        for auth_model in (models.ApiKey, models.Tier, models.TenantPlan):
            post_save.connect(lambda **_: authenticate.clear_cache(), sender=auth_model, weak=False)
        from privacy.models import PrivacyPolicy

        post_save.connect(lambda **_: authenticate.clear_cache(), sender=PrivacyPolicy, weak=False)
        m2m_changed.connect(
            lambda **_: authenticate.clear_cache(),
            sender=models.Tier.allowed_aliases.through,
            weak=False,
        )
        register_readiness_probe("providers", providers_ready)

        # Cached answers remember the subject whose request produced them: erasure purges them.
        from llmplatform import datamap

        datamap.register(
            datamap.DataHolder(
                name="gateway.response_cache",
                description="Cached answers to the subject's requests (Redis or in-process)",
                find=lambda tenant_id, subject: {
                    "note": "cached answers are not exported; they "
                    "are copies of stored conversations"
                },
                erase=lambda tenant_id, subject: cache.purge_subject(tenant_id, subject),
            )
        )

        def semantic_erase(tenant_id: int, subject: str) -> int:
            from gateway import semantic_cache

            return semantic_cache.purge_subject(tenant_id, subject)

        datamap.register(
            datamap.DataHolder(
                name="gateway.semantic_cache",
                description="Answers to the subject's questions and the questions' embeddings, "
                "kept for aliases with the semantic cache on (Redis or the shared cache file)",
                find=lambda tenant_id, subject: {
                    "note": "similar-question answers are not exported; they are copies of "
                    "stored conversations"
                },
                erase=semantic_erase,
            )
        )

        from gateway import services

        datamap.register(
            datamap.DataHolder(
                name="gateway.security_events",
                description="Texts of the subject's requests kept with security events (only when "
                "the tenant opted in; encrypted with the subject's data key; "
                "LLMP_SECURITY_TEXT_DAYS)",
                find=services.security_events_find,
                erase=services.security_events_erase,
            )
        )

        # The API routes take the lean ASGI path (no session/CSRF/page middleware).
        from gateway.api import completions, messages, responses, views
        from gateway.pipeline.settle import usage_writer
        from llmplatform.fastpath import register_fast_route, register_shutdown, register_startup

        for path, view in (
            ("/v1/chat/completions", views.chat_completions),
            ("/v1/responses", responses.create_response),
            ("/v1/completions", completions.create_completion),
            ("/v1/embeddings", views.embeddings),
            ("/v1/models", views.list_models),
            ("/v1/cache/invalidate", views.invalidate_cache),
            ("/chat", views.simple_chat),
            ("/chat-stream", views.simple_chat_stream),
        ):
            register_fast_route(path, view)
        for path, view in (
            ("/v1/messages", messages.messages),
            ("/v1/messages/count_tokens", messages.count_tokens),
        ):
            register_fast_route(path, view, too_large=messages.TOO_LARGE)
        register_shutdown(usage_writer.flush)
        register_startup(route.routing_table.start_listening)
        from gateway.resilience.breaker import breaker_store

        async def follow_breakers() -> None:
            await breaker_store().start_listening()

        register_startup(follow_breakers)

        async def warm_up_guard() -> None:
            # Before the first request, not during it (see heuristics.rule_index and
            # text_checks.warm_up_short).
            from django.conf import settings

            from gateway.pipeline import text_checks, verdicts

            if settings.LLMP_GUARD_OFFLOAD == "process":  # long texts go to the workers
                text_checks.warm_up_short()
                verdicts.start_workers()
            else:
                text_checks.warm_up()
            text_checks.freeze_heap()

        register_startup(warm_up_guard)
        from gateway.limits import corrections

        register_shutdown(corrections.flush)
