"""Applying a parsed configuration file (``gateway.config_file``) to the database.

Idempotent: each object the file names is compared field by field with its row, and only a
created or changed object is written, with one audit row holding the changed fields before and
after. A second apply of the same file writes nothing at all.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Generic, TypeVar

from django.db import models, transaction

from gateway.config_file import (
    AliasSpec,
    ConfigError,
    DeploymentSpec,
    GatewayConfig,
    ProviderSpec,
    ScannerSpec,
    TierSpec,
    VersionSpec,
)
from gateway.models import (
    AliasFallback,
    GuardrailScanner,
    ModelAlias,
    ModelVersion,
    Provider,
    ProviderDeployment,
    Tier,
)
from llmplatform.actors import Actor
from llmplatform.audit import AuditAction, audit_record
from llmplatform.models import Tenant

_M = TypeVar("_M", bound=models.Model)

KINDS = ("provider", "deployment", "alias", "version", "tier", "scanner")
# What the audit row of a created or an updated object of each kind says was done.
CREATE_ACTIONS = {
    "provider": AuditAction.CONFIG_PROVIDER_CREATE,
    "deployment": AuditAction.CONFIG_DEPLOYMENT_CREATE,
    "alias": AuditAction.CONFIG_ALIAS_CREATE,
    "version": AuditAction.CONFIG_VERSION_CREATE,
    "tier": AuditAction.CONFIG_TIER_CREATE,
    "scanner": AuditAction.CONFIG_SCANNER_CREATE,
}
UPDATE_ACTIONS = {
    "provider": AuditAction.CONFIG_PROVIDER_UPDATE,
    "deployment": AuditAction.CONFIG_DEPLOYMENT_UPDATE,
    "alias": AuditAction.CONFIG_ALIAS_UPDATE,
    "version": AuditAction.CONFIG_VERSION_UPDATE,
    "tier": AuditAction.CONFIG_TIER_UPDATE,
    "scanner": AuditAction.CONFIG_SCANNER_UPDATE,
}
CREATED, UPDATED, UNCHANGED, DISABLED = "created", "updated", "unchanged", "disabled"


@dataclass(frozen=True)
class ConfigChange:
    kind: str  # one of KINDS
    name: str
    outcome: str  # created | updated | unchanged | disabled
    fields: tuple[str, ...] = ()


@dataclass
class ConfigApplyResult:
    changes: list[ConfigChange] = field(default_factory=list)
    dry_run: bool = False

    @property
    def changed(self) -> list[ConfigChange]:
        return [c for c in self.changes if c.outcome != UNCHANGED]

    def counts(self) -> dict[str, Counter[str]]:
        """Per kind, how many objects were created, updated, unchanged or disabled."""
        counts: dict[str, Counter[str]] = {kind: Counter() for kind in KINDS}
        for change in self.changes:
            counts[change.kind][change.outcome] += 1
        return counts


def config_apply(
    *, actor: Actor, config: GatewayConfig, prune: bool = False, dry_run: bool = False
) -> ConfigApplyResult:
    """Create or update every object the file declares, in one transaction.

    ``prune`` disables aliases the file does not name, and sets the weight of versions it does
    not list (of aliases it names) to 0. ``dry_run`` does all the work, audit rows included,
    and rolls it back, so the result is exactly what a real apply would do.
    """
    result = ConfigApplyResult(dry_run=dry_run)
    with transaction.atomic():
        applier = _Applier(actor, result)
        providers = {spec.name: applier.provider(spec) for spec in config.providers}
        deployments = {
            spec.name: applier.deployment(spec, providers[spec.provider])
            for spec in config.deployments
        }
        aliases = {
            spec.name: applier.alias(spec, deployments, prune=prune)
            for spec in config.model_aliases
        }
        for spec in config.tiers:
            applier.tier(spec, aliases)
        tenants = _tenants(config.scanners)
        for scanner_spec in config.scanners:
            applier.scanner(scanner_spec, tenants, aliases)
        if prune:
            applier.prune_aliases(keep=aliases.keys())
        if dry_run:
            transaction.set_rollback(True)
    return result


def _tenants(scanners: tuple[ScannerSpec, ...]) -> dict[str, Tenant]:
    """The tenants the scanners name, by slug; ``ConfigError`` naming each unknown one (nothing
    is applied: the caller's transaction rolls back)."""
    slugs = {spec.tenant for spec in scanners if spec.tenant}
    found = {t.slug: t for t in Tenant.objects.filter(slug__in=slugs)}
    unknown = [
        f"scanners[{index}].tenant: unknown tenant {spec.tenant!r}"
        for index, spec in enumerate(scanners)
        if spec.tenant and spec.tenant not in found
    ]
    if unknown:
        raise ConfigError(unknown)
    return found


def _plain(value: Any) -> Any:
    """A field value as JSON for the audit log."""
    if isinstance(value, Decimal):
        return format(value.normalize(), "f")
    if isinstance(value, models.Model):
        return str(value)
    return value


def _names(objects: Any) -> list[str]:
    return sorted(str(obj) for obj in objects)


def _same(current: Any, desired: Any) -> bool:
    if isinstance(desired, models.Model):
        return current is not None and current.pk == desired.pk
    if isinstance(desired, Decimal) and current is not None:
        return Decimal(current) == desired
    return current == desired


class OrderedRelation(Generic[_M]):
    """An ordered list of names kept in rows of another table, for objects of model ``_M``."""

    names: list[str]

    def read(self, obj: _M) -> list[str]:
        raise NotImplementedError

    def write(self, obj: _M) -> None:
        raise NotImplementedError


class _FallbackChain(OrderedRelation[ModelAlias]):
    def __init__(self, names: tuple[str, ...], deployments: dict[str, ProviderDeployment]) -> None:
        self.names = list(names)
        self.deployments = deployments

    def read(self, obj: ModelAlias) -> list[str]:
        return list(
            AliasFallback.objects.filter(alias=obj)
            .order_by("position", "id")
            .values_list("deployment__name", flat=True)
        )

    def write(self, obj: ModelAlias) -> None:
        AliasFallback.objects.filter(alias=obj).delete()
        AliasFallback.objects.bulk_create(
            AliasFallback(alias=obj, deployment=self.deployments[name], position=position)
            for position, name in enumerate(self.names)
        )


class _Applier:
    def __init__(self, actor: Actor, result: ConfigApplyResult) -> None:
        self.actor = actor
        self.result = result

    def upsert(
        self,
        kind: str,
        model: type[_M],
        lookup: dict[str, Any],
        desired: dict[str, Any],
        name: str,
        *,
        many: dict[str, list[models.Model]] | None = None,
        ordered: dict[str, OrderedRelation[_M]] | None = None,
    ) -> _M:
        """Create the row, or update exactly the fields that differ; one audit row either way.
        ``many`` holds many-to-many fields, compared by the related objects' names;
        ``ordered`` holds ordered lists of names kept in other rows (fallback chains)."""
        many = many or {}
        ordered = ordered or {}
        # The default manager: ``objects`` on every model here (Django's way to name it for any).
        obj = model._default_manager.select_for_update().filter(**lookup).first()
        if obj is None:
            obj = model._default_manager.create(**lookup, **desired)
            for key, related in many.items():
                getattr(obj, key).set(related)
            for relation in ordered.values():
                relation.write(obj)
            after = {k: _plain(v) for k, v in {**lookup, **desired}.items()}
            after.update({k: _names(related) for k, related in many.items()})
            after.update({k: relation.names for k, relation in ordered.items() if relation.names})
            audit_record(actor=self.actor, action=CREATE_ACTIONS[kind], obj=obj, after=after)
            self.result.changes.append(ConfigChange(kind, name, CREATED))
            return obj

        changed = [k for k, v in desired.items() if not _same(getattr(obj, k), v)]
        current_many = {k: _names(getattr(obj, k).all()) for k in many}
        changed_many = [k for k, related in many.items() if current_many[k] != _names(related)]
        current_ordered = {k: relation.read(obj) for k, relation in ordered.items()}
        changed_ordered = [
            k for k, relation in ordered.items() if current_ordered[k] != relation.names
        ]
        if not changed and not changed_many and not changed_ordered:
            self.result.changes.append(ConfigChange(kind, name, UNCHANGED))
            return obj

        before = {k: _plain(getattr(obj, k)) for k in changed}
        before.update({k: current_many[k] for k in changed_many})
        before.update({k: current_ordered[k] for k in changed_ordered})
        if changed:
            for key in changed:
                setattr(obj, key, desired[key])
            self.save(obj, changed)
        for key in changed_many:
            getattr(obj, key).set(many[key])
        for key in changed_ordered:
            ordered[key].write(obj)
        after = {k: _plain(desired[k]) for k in changed}
        after.update({k: _names(many[k]) for k in changed_many})
        after.update({k: ordered[k].names for k in changed_ordered})
        audit_record(
            actor=self.actor, action=UPDATE_ACTIONS[kind], obj=obj, before=before, after=after
        )
        self.result.changes.append(
            ConfigChange(kind, name, UPDATED, (*changed, *changed_many, *changed_ordered))
        )
        return obj

    @staticmethod
    def save(obj: models.Model, changed: list[str]) -> None:
        update_fields = list(changed)
        if any(f.name == "updated_at" for f in obj._meta.concrete_fields):
            update_fields.append("updated_at")  # auto_now is only set when listed
        obj.save(update_fields=update_fields)

    def provider(self, spec: ProviderSpec) -> Provider:
        desired = {
            "kind": spec.kind,
            "base_url": spec.base_url,
            "api_key_ref": spec.api_key_ref,
            "api_version": spec.api_version,
            "region": spec.region,
            "connect_timeout": spec.connect_timeout,
            "read_timeout": spec.read_timeout,
            "extra": spec.extra,
            "enabled": spec.enabled,
        }
        return self.upsert("provider", Provider, {"name": spec.name}, desired, spec.name)

    def scanner(
        self, spec: ScannerSpec, tenants: dict[str, Tenant], aliases: dict[str, ModelAlias]
    ) -> GuardrailScanner:
        desired = {
            "kind": spec.kind,
            "tenant": tenants[spec.tenant] if spec.tenant else None,
            "alias": aliases[spec.alias] if spec.alias else None,
            "pre_call": spec.pre_call,
            "post_call": spec.post_call,
            "fail_mode": spec.fail_mode,
            "timeout_ms": spec.timeout_ms,
            "url": spec.url,
            "auth_header": spec.auth_header,
            "auth_secret_ref": spec.auth_secret_ref,
            "guardrail_id": spec.guardrail_id,
            "guardrail_version": spec.guardrail_version,
            "region": spec.region,
            "language": spec.language,
            "score_threshold": spec.score_threshold,
            "entities": list(spec.entities),
            "on_detect": spec.on_detect,
            "enabled": spec.enabled,
        }
        return self.upsert("scanner", GuardrailScanner, {"name": spec.name}, desired, spec.name)

    def deployment(self, spec: DeploymentSpec, provider: Provider) -> ProviderDeployment:
        desired = {
            "provider": provider,
            "model": spec.model,
            "input_price_per_1k": spec.input_price_per_1k,
            "output_price_per_1k": spec.output_price_per_1k,
            "enabled": spec.enabled,
            **spec.resilience,
        }
        return self.upsert(
            "deployment", ProviderDeployment, {"name": spec.name}, desired, spec.name
        )

    def alias(
        self, spec: AliasSpec, deployments: dict[str, ProviderDeployment], *, prune: bool
    ) -> ModelAlias:
        desired = {
            "description": spec.description,
            "enabled": spec.enabled,
            "degraded_mode": spec.degraded_mode,
            "degraded_message": spec.degraded_message,
            "resilience": spec.resilience,
            "semantic_cache": bool(spec.semantic_embeddings),
            "semantic_cache_embeddings": spec.semantic_embeddings,
            "semantic_cache_threshold": spec.semantic_threshold,
        }
        fallbacks = _FallbackChain(spec.fallbacks, deployments)
        alias = self.upsert(
            "alias",
            ModelAlias,
            {"name": spec.name},
            desired,
            spec.name,
            ordered={"fallbacks": fallbacks},
        )
        for version_spec in spec.versions:
            self.version(alias, version_spec, deployments[version_spec.deployment])
        if prune:
            listed = {v.version for v in spec.versions}
            stale = (
                ModelVersion.objects.select_for_update()
                .filter(alias=alias, weight__gt=0)
                .exclude(version__in=listed)
            )
            for version in stale:
                before = {"weight": version.weight}
                version.weight = 0
                self.save(version, ["weight"])
                audit_record(
                    actor=self.actor,
                    action=AuditAction.CONFIG_VERSION_UPDATE,
                    obj=version,
                    before=before,
                    after={"weight": 0},
                )
                self.result.changes.append(
                    ConfigChange("version", str(version), UPDATED, ("weight",))
                )
        return alias

    def version(
        self, alias: ModelAlias, spec: VersionSpec, deployment: ProviderDeployment
    ) -> ModelVersion:
        desired = {
            "deployment": deployment,
            "weight": spec.weight,
            "system_prompt": spec.system_prompt,
            "params": spec.params,
        }
        return self.upsert(
            "version",
            ModelVersion,
            {"alias": alias, "version": spec.version},
            desired,
            f"{alias.name}@{spec.version}",
        )

    def tier(self, spec: TierSpec, aliases: dict[str, ModelAlias]) -> Tier:
        desired = {
            "description": spec.description,
            "requests_per_minute": spec.requests_per_minute,
            "requests_per_hour": spec.requests_per_hour,
            "requests_per_day": spec.requests_per_day,
            "tokens_per_minute": spec.tokens_per_minute,
            "tokens_per_day": spec.tokens_per_day,
            "daily_budget": spec.daily_budget,
            "monthly_budget": spec.monthly_budget,
            "max_prompt_chars": spec.max_prompt_chars,
            "max_output_tokens": spec.max_output_tokens,
            "max_choices": spec.max_choices,
            "max_media_parts": spec.max_media_parts,
            "max_media_part_chars": spec.max_media_part_chars,
            **{
                f"{scope}_requests_per_{window}": getattr(spec, f"{scope}_requests_per_{window}")
                for scope in ("key", "user")
                for window in ("minute", "hour", "day")
            },
            "screening_mode": spec.screening_mode,
            "screening_threshold": spec.screening_threshold,
            "leak_mode": spec.leak_mode,
        }
        return self.upsert(
            "tier",
            Tier,
            {"name": spec.name},
            desired,
            spec.name,
            many={"allowed_aliases": [aliases[name] for name in spec.allowed_aliases]},
        )

    def prune_aliases(self, *, keep: Any) -> None:
        for alias in (
            ModelAlias.objects.select_for_update().filter(enabled=True).exclude(name__in=keep)
        ):
            alias.enabled = False
            self.save(alias, ["enabled"])
            audit_record(
                actor=self.actor,
                action=AuditAction.CONFIG_ALIAS_DISABLE,
                obj=alias,
                before={"enabled": True},
                after={"enabled": False},
            )
            self.result.changes.append(ConfigChange("alias", alias.name, DISABLED, ("enabled",)))
