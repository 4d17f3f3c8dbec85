"""``manage.py apply_config``: a YAML file applied to the database idempotently, with one audit
row per created or changed object, and an invalid file rejected with nothing written."""

from __future__ import annotations

from decimal import Decimal
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from gateway.config_file import load_config
from gateway.models import ModelAlias, ModelVersion, Provider, ProviderDeployment, Tier
from llmplatform.models import AuditEvent

pytestmark = pytest.mark.django_db

EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "config.example.yaml"
RAW_KEY = "sk-live-THIS-MUST-NEVER-BE-PRINTED-1234567890"

CONFIG = """\
tiers:
  - name: free
    requests_per_minute: 20
    max_prompt_chars: 8000
    allowed_aliases: [default]
  - name: pro
    requests_per_minute: 120
    daily_budget: 25.5
providers:
  - name: local
    kind: openai
    base_url: http://127.0.0.1:8081/v1
    api_key: env:LOCAL_MODEL_KEY
    timeouts: {connect: 5, read: 120}
  - name: azure-eu
    kind: azure
    base_url: https://example.openai.azure.com
    api_version: 2024-10-21
    api_key: aws-sm:prod/llm/providers#azure
deployments:
  - name: gemma-3-270m
    provider: local
    model: gemma-3-270m
    price: {input_per_1k: 0, output_per_1k: 0}
  - name: gpt-4o-mini
    provider: azure-eu
    model: gpt-4o-mini
    price: {input_per_1k: 0.00015, output_per_1k: 0.0006}
model_aliases:
  - name: default
    description: The default model
    versions:
      - version: v1
        deployment: gemma-3-270m
        weight: 90
        params: {temperature: 0.7}
      - version: v2
        deployment: gpt-4o-mini
        weight: 10
"""


@pytest.fixture(autouse=True)
def _aws_secrets_allowed(settings):
    # What an operator keeping provider keys under prod/llm/ in Secrets Manager would set.
    settings.LLMP_SECRET_AWS_PREFIXES = ("prod/llm/",)


def write(tmp_path: Path, text: str, name: str = "config.yaml") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def apply(path: str, *args: str) -> str:
    out = StringIO()
    call_command("apply_config", path, *args, stdout=out)
    return out.getvalue()


def snapshot() -> dict[str, list]:
    """Everything apply_config may write, for before/after comparisons."""
    return {
        "tiers": list(Tier.objects.values()),
        "allowed": list(
            Tier.allowed_aliases.through.objects.values_list("tier_id", "modelalias_id")
        ),
        "providers": list(Provider.objects.values()),
        "deployments": list(ProviderDeployment.objects.values()),
        "aliases": list(ModelAlias.objects.values()),
        "versions": list(ModelVersion.objects.values()),
        "audit": AuditEvent.objects.count(),
    }


def test_applying_creates_every_object(tmp_path):
    output = apply(write(tmp_path, CONFIG))

    local = Provider.objects.get(name="local")
    assert (local.kind, local.base_url, local.api_key_ref) == (
        "openai",
        "http://127.0.0.1:8081/v1",
        "env:LOCAL_MODEL_KEY",
    )
    assert (local.connect_timeout, local.read_timeout) == (5.0, 120.0)
    azure = Provider.objects.get(name="azure-eu")
    assert azure.api_version == "2024-10-21"  # an unquoted YAML date, read as the string
    mini = ProviderDeployment.objects.get(name="gpt-4o-mini")
    assert mini.provider == azure
    assert mini.input_price_per_1k == Decimal("0.00015")
    assert mini.output_price_per_1k == Decimal("0.0006")
    alias = ModelAlias.objects.get(name="default")
    assert alias.description == "The default model"
    versions = {v.version: v for v in alias.versions.select_related("deployment")}
    assert versions["v1"].deployment.name == "gemma-3-270m"
    assert (versions["v1"].weight, versions["v1"].params) == (90, {"temperature": 0.7})
    assert versions["v2"].weight == 10
    free = Tier.objects.get(name="free")
    assert (free.requests_per_minute, free.max_prompt_chars) == (20, 8000)
    assert list(free.allowed_aliases.values_list("name", flat=True)) == ["default"]
    assert Tier.objects.get(name="pro").daily_budget == Decimal("25.5")

    # One audit row per created object (2 providers, 2 deployments, 1 alias, 2 versions,
    # 2 tiers), each with its state.
    events = AuditEvent.objects.filter(action__startswith="config.")
    assert events.count() == 9
    assert all(e.action.endswith(".create") for e in events)
    tier_event = events.get(action="config.tier.create", object_repr="free")
    assert tier_event.after["allowed_aliases"] == ["default"]
    assert tier_event.actor == "apply_config"
    assert events.get(object_repr="gpt-4o-mini").after["input_price_per_1k"] == "0.00015"
    assert "9 object(s) changed" in output
    assert "providers:      2 created, 0 updated, 0 unchanged" in output


def test_applying_the_same_file_again_changes_nothing(tmp_path):
    path = write(tmp_path, CONFIG)
    apply(path)
    before = snapshot()

    output = apply(path)

    assert snapshot() == before  # no row touched (updated_at included), no audit row
    assert "0 object(s) changed" in output
    assert "tiers:          0 created, 0 updated, 2 unchanged" in output


def test_changing_one_field_updates_that_object_with_one_audit_row(tmp_path):
    apply(write(tmp_path, CONFIG))
    before = snapshot()
    changed = CONFIG.replace("output_per_1k: 0.0006", "output_per_1k: 0.0008")

    output = apply(write(tmp_path, changed))

    after = snapshot()
    assert after["audit"] == before["audit"] + 1
    event = AuditEvent.objects.order_by("-id").first()
    assert event.action == "config.deployment.update"
    assert event.object_repr == "gpt-4o-mini"
    assert event.before == {"output_price_per_1k": "0.0006"}
    assert event.after == {"output_price_per_1k": "0.0008"}
    assert ProviderDeployment.objects.get(name="gpt-4o-mini").output_price_per_1k == Decimal(
        "0.0008"
    )
    # Every other row is exactly as it was.
    for kind in ("tiers", "allowed", "providers", "aliases", "versions"):
        assert after[kind] == before[kind]
    others = [d for d in after["deployments"] if d["name"] != "gpt-4o-mini"]
    assert others == [d for d in before["deployments"] if d["name"] != "gpt-4o-mini"]
    assert "updated deployment gpt-4o-mini (output_price_per_1k)" in output
    assert "1 object(s) changed" in output


def test_changing_allowed_aliases_is_one_tier_update(tmp_path):
    apply(write(tmp_path, CONFIG))
    changed = CONFIG.replace("allowed_aliases: [default]", "allowed_aliases: []")

    apply(write(tmp_path, changed))

    event = AuditEvent.objects.order_by("-id").first()
    assert event.action == "config.tier.update"
    assert (event.before, event.after) == (
        {"allowed_aliases": ["default"]},
        {"allowed_aliases": []},
    )
    assert not Tier.objects.get(name="free").allowed_aliases.exists()


def test_an_admin_edit_of_a_declared_object_is_reverted(tmp_path):
    path = write(tmp_path, CONFIG)
    apply(path)
    Provider.objects.filter(name="local").update(base_url="http://elsewhere:1/v1")

    apply(path)

    assert Provider.objects.get(name="local").base_url == "http://127.0.0.1:8081/v1"
    event = AuditEvent.objects.order_by("-id").first()
    assert event.action == "config.provider.update"
    assert event.before == {"base_url": "http://elsewhere:1/v1"}


def test_dry_run_writes_nothing_and_reports_what_would_change(tmp_path):
    before = snapshot()

    output = apply(write(tmp_path, CONFIG), "--dry-run")

    assert snapshot() == before
    assert "Dry run" in output
    assert "9 object(s) would change" in output


def test_prune_disables_aliases_the_file_does_not_name(tmp_path):
    apply(write(tmp_path, CONFIG))
    legacy = ModelAlias.objects.create(name="legacy")

    apply(write(tmp_path, CONFIG), "--prune")

    legacy.refresh_from_db()
    assert legacy.enabled is False
    event = AuditEvent.objects.order_by("-id").first()
    assert (event.action, event.object_repr) == ("config.alias.disable", "legacy")
    assert ModelAlias.objects.get(name="default").enabled is True
    # Without --prune, objects the file does not name are left alone.
    other = ModelAlias.objects.create(name="other")
    apply(write(tmp_path, CONFIG))
    other.refresh_from_db()
    assert other.enabled is True


def test_prune_drains_versions_the_file_no_longer_lists(tmp_path):
    apply(write(tmp_path, CONFIG))
    without_v2 = CONFIG.replace(
        "      - version: v2\n        deployment: gpt-4o-mini\n        weight: 10\n", ""
    )

    apply(write(tmp_path, without_v2), "--prune")

    assert ModelVersion.objects.get(alias__name="default", version="v2").weight == 0


def test_the_shipped_example_applies_cleanly_and_idempotently():
    load_config(EXAMPLE)
    apply(str(EXAMPLE))
    assert Provider.objects.get(name="local").base_url == "http://127.0.0.1:8081/v1"
    assert ModelVersion.objects.get(alias__name="default").deployment.name == "gemma-3-270m"
    assert set(Tier.objects.values_list("name", flat=True)) == {"free", "pro", "enterprise"}
    count = AuditEvent.objects.count()
    assert "0 object(s) changed" in apply(str(EXAMPLE))
    assert AuditEvent.objects.count() == count


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        pytest.param(
            "    requests_per_minute: 20\n",
            "    requests_per_minit: 20\n",
            "tiers[0].requests_per_minit: unknown key (did you mean 'requests_per_minute'?)",
            id="unknown-key",
        ),
        pytest.param(
            "        deployment: gpt-4o-mini\n",
            "        deployment: gpt-5\n",
            "model_aliases[0].versions[1].deployment: unknown deployment 'gpt-5'",
            id="unknown-deployment",
        ),
        pytest.param(
            "api_key: env:LOCAL_MODEL_KEY",
            f"api_key: {RAW_KEY}",
            "providers[0].api_key: not a secret reference",
            id="plain-text-key",
        ),
        pytest.param(
            "api_key: env:LOCAL_MODEL_KEY",
            "api_key: 8f3a9c0d1e2b4f5a6b7c8d9e0f1a2b3c",
            "providers[0].api_key: not a secret reference",
            id="key-without-scheme",
        ),
        pytest.param(
            "weight: 90",
            "weight: ninety",
            "model_aliases[0].versions[0].weight: must be an integer, not a string",
            id="bad-type",
        ),
        pytest.param(
            "weight: 90",
            "weight: -1",
            "model_aliases[0].versions[0].weight: must be >= 0",
            id="negative-weight",
        ),
        pytest.param(
            "input_per_1k: 0.00015",
            "input_per_1k: -0.1",
            "deployments[1].price.input_per_1k: must be a number >= 0",
            id="negative-price",
        ),
        pytest.param(
            "kind: azure",
            "kind: watsonx",
            "providers[1].kind: must be one of openai, azure, bedrock, anthropic, gemini, vertex",
            id="unknown-kind",
        ),
        pytest.param(
            "    api_version: 2024-10-21\n",
            "",
            "providers[1].api_version: is required for kind azure",
            id="azure-without-api-version",
        ),
        pytest.param(
            "    base_url: http://127.0.0.1:8081/v1\n",
            "",
            "providers[0].base_url: is required for kind openai",
            id="openai-without-base-url",
        ),
        pytest.param(
            "  - name: pro\n",
            "  - name: free\n",
            "tiers[1].name: duplicate tier 'free'",
            id="duplicate-name",
        ),
        pytest.param(
            "    max_prompt_chars: 8000\n",
            "    max_prompt_chars: 8000\n    max_prompt_chars: 1\n",
            "duplicate key 'max_prompt_chars'",
            id="duplicate-key",
        ),
        pytest.param(
            "    max_prompt_chars: 8000\n",
            "    max_prompt_chars: 8000\n    max_choices: 129\n",
            "tiers[0].max_choices: is too large (at most 128)",
            id="too-many-choices",
        ),
        pytest.param(
            "    timeouts: {connect: 5, read: 120}\n",
            "    timeouts: {connect: 5, read: 120}\n    extra: {unsupported: [tools, mind]}\n",
            "providers[0].extra.unsupported: unknown feature 'mind'",
            id="unknown-unsupported-feature",
        ),
    ],
)
def test_an_invalid_file_is_rejected_with_its_path_and_nothing_is_written(
    tmp_path, old, new, message
):
    apply(write(tmp_path, CONFIG.replace("weight: 10", "weight: 20")))  # a state to keep
    assert old in CONFIG
    before = snapshot()

    with pytest.raises(CommandError) as excinfo:
        apply(write(tmp_path, CONFIG.replace(old, new)))

    assert message in str(excinfo.value)
    assert RAW_KEY not in str(excinfo.value)
    assert snapshot() == before


def test_every_problem_in_a_file_is_reported_at_once(tmp_path):
    broken = CONFIG.replace("requests_per_minute: 20", "requests_per_minit: 20").replace(
        "deployment: gpt-4o-mini", "deployment: gpt-5"
    )

    with pytest.raises(CommandError) as excinfo:
        apply(write(tmp_path, broken))

    assert "tiers[0].requests_per_minit" in str(excinfo.value)
    assert "model_aliases[0].versions[1].deployment" in str(excinfo.value)
    assert not Provider.objects.exists()


def test_a_missing_or_empty_file_is_rejected(tmp_path):
    with pytest.raises(CommandError, match="cannot read"):
        apply(str(tmp_path / "absent.yaml"))
    with pytest.raises(CommandError, match="the file is empty"):
        apply(write(tmp_path, "# nothing\n"))


def test_a_yaml_syntax_error_names_the_line_without_quoting_it(tmp_path):
    text = f"providers:\n  - name: local\n    api_key: [{RAW_KEY}\n"
    with pytest.raises(CommandError, match="invalid YAML at line") as excinfo:
        apply(write(tmp_path, text))
    assert RAW_KEY not in str(excinfo.value)


def test_agent_traffic_limits_and_provider_capabilities_are_applied(tmp_path):
    text = CONFIG.replace(
        "    max_prompt_chars: 8000\n",
        "    max_prompt_chars: 8000\n    max_choices: 2\n    max_media_parts: 0\n",
    ).replace(
        "    timeouts: {connect: 5, read: 120}\n",
        "    timeouts: {connect: 5, read: 120}\n    extra: {unsupported: [tools, image_url]}\n",
    )
    apply(write(tmp_path, text))
    free = Tier.objects.get(name="free")
    assert (free.max_choices, free.max_media_parts) == (2, 0)
    assert Tier.objects.get(name="pro").max_choices == 4  # the default
    assert Provider.objects.get(name="local").extra == {"unsupported": ["tools", "image_url"]}


def test_credentials_in_provider_extra_are_rejected(tmp_path):
    text = CONFIG.replace(
        "    timeouts: {connect: 5, read: 120}\n",
        "    timeouts: {connect: 5, read: 120}\n"
        f"    extra: {{headers: {{Authorization: Bearer {RAW_KEY}}}}}\n",
    )
    with pytest.raises(CommandError, match=r"providers\[0\]\.extra\.Authorization") as excinfo:
        apply(write(tmp_path, text))
    assert RAW_KEY not in str(excinfo.value)


RESILIENT = CONFIG.replace(
    "    price: {input_per_1k: 0, output_per_1k: 0}\n",
    "    price: {input_per_1k: 0, output_per_1k: 0}\n"
    "    timeouts: {total: 30, first_token: 5, idle: 10}\n"
    "    retries: {max_attempts: 2, backoff_base: 0.2}\n"
    "    breaker: {failure_threshold: 3, failure_rate: 0, recovery: 20}\n",
).replace(
    "    description: The default model\n",
    "    description: The default model\n"
    "    fallbacks: [gpt-4o-mini, gemma-3-270m]\n"
    "    degraded: {mode: message}\n"
    "    resilience: {timeouts: {total: 12}, retries: {max_attempts: 1}}\n",
)


def test_resilience_settings_and_fallback_chains_are_applied_idempotently(tmp_path):
    path = write(tmp_path, RESILIENT)
    apply(path)

    gemma = ProviderDeployment.objects.get(name="gemma-3-270m")
    assert (gemma.total_timeout, gemma.first_token_timeout, gemma.idle_timeout) == (30, 5, 10)
    assert (gemma.max_attempts, gemma.backoff_base, gemma.backoff_max) == (2, 0.2, 8)
    assert (
        gemma.breaker_failure_threshold,
        gemma.breaker_failure_rate,
        gemma.breaker_recovery_seconds,
        gemma.breaker_window_seconds,
    ) == (3, 0, 20, 60)
    assert ProviderDeployment.objects.get(name="gpt-4o-mini").total_timeout == 180  # default
    alias = ModelAlias.objects.get(name="default")
    assert [f.deployment.name for f in alias.fallbacks.order_by("position")] == [
        "gpt-4o-mini",
        "gemma-3-270m",
    ]
    assert alias.degraded_mode == "message"
    assert alias.degraded_message.startswith("I'm temporarily unavailable")
    assert alias.resilience == {"total_timeout": 12, "max_attempts": 1}
    created = AuditEvent.objects.get(action="config.alias.create")
    assert created.after["fallbacks"] == ["gpt-4o-mini", "gemma-3-270m"]

    # An officer's forced breaker survives an apply; a second apply changes nothing.
    ProviderDeployment.objects.filter(name="gemma-3-270m").update(breaker_override="forced_open")
    before = snapshot()
    assert "0 object(s) changed" in apply(path)
    assert snapshot() == before

    apply(
        write(
            tmp_path,
            RESILIENT.replace(
                "fallbacks: [gpt-4o-mini, gemma-3-270m]", "fallbacks: [gemma-3-270m]"
            ),
        )
    )
    event = AuditEvent.objects.order_by("-id").first()
    assert (event.action, event.before, event.after) == (
        "config.alias.update",
        {"fallbacks": ["gpt-4o-mini", "gemma-3-270m"]},
        {"fallbacks": ["gemma-3-270m"]},
    )


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "retries: {max_attempts: 2,",
            "retries: {max_attempts: 0,",
            "deployments[0].retries.max_attempts: must be between 1 and 10",
        ),
        (
            "breaker: {failure_threshold: 3,",
            "breaker: {failure_treshold: 3,",
            "deployments[0].breaker.failure_treshold: unknown key (did you mean "
            "'failure_threshold'?)",
        ),
        (
            "timeouts: {total: 30,",
            "timeouts: {total: forever,",
            "deployments[0].timeouts.total: must be a number",
        ),
        (
            "fallbacks: [gpt-4o-mini, gemma-3-270m]",
            "fallbacks: [gpt-5]",
            "model_aliases[0].fallbacks: unknown deployment 'gpt-5'",
        ),
        (
            "degraded: {mode: message}",
            "degraded: {mode: silence}",
            "model_aliases[0].degraded.mode: must be one of error, message",
        ),
        (
            "resilience: {timeouts: {total: 12}",
            "resilience: {breaker: {total: 12}",
            "model_aliases[0].resilience.breaker: unknown key",
        ),
    ],
)
def test_invalid_resilience_settings_are_rejected_with_their_path(tmp_path, old, new, message):
    assert old in RESILIENT
    with pytest.raises(CommandError) as excinfo:
        apply(write(tmp_path, RESILIENT.replace(old, new)))
    assert message in str(excinfo.value)
    assert not ProviderDeployment.objects.exists()
