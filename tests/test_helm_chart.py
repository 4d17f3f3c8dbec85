"""The Helm chart (deploy/helm/llmplatform), offline: it renders with its defaults and the
variants users choose (in-cluster PostgreSQL and Redis, CSI secrets, ingress, no HPA), passes
`helm lint --strict`, and every rendered manifest validates strictly against the Kubernetes
schemas. Then what an operator relies on: one beat, the migration hook, locked-down containers,
network policies, no secret in a manifest unless asked for, hostile values refused at render.

Helm runs as a library (helm-python-sdk) and the schemas are bundled (kubernetes-validate): no
cluster and no network."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate.utils as kubernetes_validate
import pytest
import yaml
from django.conf import settings

CHART = Path(settings.BASE_DIR) / "deploy" / "helm" / "llmplatform"
KUBERNETES_VERSION = "1.31"
RELEASE = "llmp"
NAMESPACE = "llm"
FULLNAME = "llmp-llmplatform"
# Custom resources: not in Kubernetes' schemas; their fields are checked by the tests below.
CUSTOM_KINDS = {("monitoring.coreos.com/v1", "ServiceMonitor")}
SENTINEL = "sentinel-secret-value-d41d8cd98f00b204e980"
SENTINEL_FORMS = (SENTINEL, base64.b64encode(SENTINEL.encode()).decode())  # a Secret's data

EXTERNAL = {
    "externalDatabase": {"url": "postgres://llmp@db.internal:5432/llmp"},
    "externalRedis": {"url": "rediss://redis.internal:6380/0"},
}
VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "in-cluster": {
        "postgresql": {"enabled": True},
        "redis": {"enabled": True},
        "secrets": {
            "existingSecret": "",
            "create": True,
            "values": {
                "SECRET_KEY": SENTINEL,
                "LLMP_API_KEY_PEPPER": "p" * 40,
                "LLMP_SUBJECT_HMAC_KEY": "h" * 40,
                "LLMP_MASTER_KEY": "bWFzdGVyLWtleS1tYXN0ZXIta2V5LW1hc3Rlci1rZXk=",
                "POSTGRES_PASSWORD": "trial-password",
            },
        },
    },
    "csi": {
        **EXTERNAL,
        "secrets": {"existingSecret": "", "secretProviderClass": "llmp-aws"},
    },
    "ingress": {
        "ingress": {
            "enabled": True,
            "hosts": ["llm.example.com"],
            "tls": [{"secretName": "llm-example-com-tls", "hosts": ["llm.example.com"]}],
        },
        "metrics": {
            "serviceMonitor": {
                "enabled": True,
                "bearerTokenSecret": {"name": "llmplatform", "key": "LLMP_OBSERVABILITY_TOKEN"},
            }
        },
        "secrets": {
            "files": [
                "SECRET_KEY",
                "LLMP_API_KEY_PEPPER",
                "LLMP_SUBJECT_HMAC_KEY",
                "LLMP_MASTER_KEY",
                "DATABASE_URL",
                "REDIS_URL",
                "CELERY_BROKER_URL",
                "LLMP_OBSERVABILITY_TOKEN",
            ]
        },
        "config": {"file": (CHART.parents[2] / "deploy" / "config.example.yaml").read_text()},
    },
    "no-hpa": {"web": {"replicas": 3, "autoscaling": {"enabled": False}}},
}


def render(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The chart's manifests (NOTES.txt aside) as parsed objects, as `helm template` would."""
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    docs: list[dict[str, Any]] = []
    for path, text in rendered.items():
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def render_text(values: dict[str, Any] | None = None) -> str:
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    return "\n".join(text for path, text in rendered.items() if not path.endswith("NOTES.txt"))


def one(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} rendered"
    return found[0]


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["spec"]
        for d in docs
        if d["kind"] in {"Deployment", "StatefulSet", "Job"}
    }


def env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in container.get("env", [])}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_manifest_validates_strictly_against_kubernetes(variant):
    docs = render(VARIANTS[variant])
    assert docs
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {path}: {exc.message}")


def test_the_validation_catches_a_field_kubernetes_does_not_know():
    """The strict check above can fail: a misspelt field in a Deployment is refused."""
    deployment = copy.deepcopy(one(render(), "Deployment", f"{FULLNAME}-web"))
    deployment["spec"]["template"]["spec"]["containers"][0]["readynessProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_helm_lint_strict_finds_nothing(variant):
    report = helm.lint(CHART, VARIANTS[variant], strict=True, namespace=NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2]  # warnings and errors
    assert not problems and not report["errors"], report


def test_defaults_render_every_part_of_the_platform():
    docs = render()
    kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
    for kind, name in [
        ("Deployment", f"{FULLNAME}-web"),
        ("Deployment", f"{FULLNAME}-worker"),
        ("Deployment", f"{FULLNAME}-beat"),
        ("Job", f"{FULLNAME}-migrate"),
        ("Service", FULLNAME),
        ("HorizontalPodAutoscaler", f"{FULLNAME}-web"),
        ("PodDisruptionBudget", f"{FULLNAME}-web"),
        ("NetworkPolicy", f"{FULLNAME}-web"),
        ("ServiceAccount", FULLNAME),
    ]:
        assert (kind, name) in kinds
    # Managed PostgreSQL and Redis by default: nothing of them in the cluster.
    assert not [d for d in docs if "postgresql" in d["metadata"]["name"]]
    assert not [d for d in docs if "redis" in d["metadata"]["name"]]
    assert not [d for d in docs if d["kind"] in {"Ingress", "Secret", "ServiceMonitor"}]


def test_beat_is_exactly_one_pod_and_only_web_is_autoscaled():
    for values in VARIANTS.values():
        docs = render(values)
        beat = one(docs, "Deployment", f"{FULLNAME}-beat")
        assert beat["spec"]["replicas"] == 1
        assert beat["spec"]["strategy"]["type"] == "Recreate"  # never two during a rollout
        for hpa in (d for d in docs if d["kind"] == "HorizontalPodAutoscaler"):
            assert hpa["spec"]["scaleTargetRef"]["name"] == f"{FULLNAME}-web"
    # Asking for more beats is refused, not ignored.
    with pytest.raises(helm.HelmValuesError, match="/beat"):
        render({"beat": {"replicas": 2}})


def test_web_replicas_are_the_hpas_or_the_values():
    docs = render()
    assert "replicas" not in one(docs, "Deployment", f"{FULLNAME}-web")["spec"]
    hpa = one(docs, "HorizontalPodAutoscaler", f"{FULLNAME}-web")
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (2, 10)
    assert hpa["spec"]["metrics"][0]["resource"]["name"] == "cpu"
    docs = render(VARIANTS["no-hpa"])
    assert one(docs, "Deployment", f"{FULLNAME}-web")["spec"]["replicas"] == 3
    assert not [d for d in docs if d["kind"] == "HorizontalPodAutoscaler"]


def test_migrations_run_as_a_hook_before_install_and_upgrade():
    job = one(render(), "Job", f"{FULLNAME}-migrate")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "hook-succeeded" in annotations["helm.sh/hook-delete-policy"]
    assert job["spec"]["template"]["spec"]["containers"][0]["args"] == ["migrate"]
    # A trial's in-cluster database exists only once installed: migrated right after it.
    trial = one(render(VARIANTS["in-cluster"]), "Job", f"{FULLNAME}-migrate")
    assert trial["metadata"]["annotations"]["helm.sh/hook"] == "post-install,pre-upgrade"


def test_the_configuration_file_is_applied_after_install_and_upgrade():
    docs = render(VARIANTS["ingress"])
    config_map = one(docs, "ConfigMap", f"{FULLNAME}-config")
    assert "tiers:" in config_map["data"]["config.yaml"]
    job = one(docs, "Job", f"{FULLNAME}-apply-config")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"] == ["manage", "apply_config", "/etc/llmplatform/config.yaml"]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_container_runs_as_non_root_on_a_read_only_root_without_capabilities(variant):
    for where, spec in pod_specs(render(VARIANTS[variant])).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert "add" not in context["capabilities"], where
            assert container["resources"]["requests"] and container["resources"]["limits"], where


def test_web_drains_open_streams_before_it_is_killed():
    web = one(render(), "Deployment", f"{FULLNAME}-web")
    spec = web["spec"]["template"]["spec"]
    container = spec["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    graceful = int(env_of(container)["LLMP_GRACEFUL_SHUTDOWN_SECONDS"])
    # Kubernetes counts the preStop sleep inside the grace period: both must fit before SIGKILL.
    assert spec["terminationGracePeriodSeconds"] > int(pre_stop[1]) + graceful
    # A rollout never takes a serving pod away before its replacement is ready.
    assert web["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = one(render(), "PodDisruptionBudget", f"{FULLNAME}-web")
    assert pdb["spec"]["selector"]["matchLabels"] == web["spec"]["selector"]["matchLabels"]


def test_the_ingress_terminates_tls_and_limits_the_body_size():
    docs = render(VARIANTS["ingress"])
    ingress = one(docs, "Ingress", FULLNAME)
    assert ingress["spec"]["tls"] == [
        {"secretName": "llm-example-com-tls", "hosts": ["llm.example.com"]}
    ]
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "12m"
    assert annotations["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"  # streams
    rule = ingress["spec"]["rules"][0]
    assert rule["host"] == "llm.example.com"
    assert rule["http"]["paths"][0]["backend"]["service"]["name"] == FULLNAME
    env = env_of(
        one(docs, "Deployment", f"{FULLNAME}-web")["spec"]["template"]["spec"]["containers"][0]
    )
    assert env["ALLOWED_HOSTS"].split(",")[0] == "llm.example.com"
    assert env["CSRF_TRUSTED_ORIGINS"] == "https://llm.example.com"
    assert env["LLMP_TRUSTED_PROXY_HOPS"] == "1"


def test_the_service_monitor_scrapes_metrics_with_the_observability_token():
    monitor = one(render(VARIANTS["ingress"]), "ServiceMonitor", FULLNAME)
    endpoint = monitor["spec"]["endpoints"][0]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    assert endpoint["authorization"]["credentials"] == {
        "name": "llmplatform",
        "key": "LLMP_OBSERVABILITY_TOKEN",
    }
    assert monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "web"


def test_only_the_ingress_and_prometheus_reach_web_and_nothing_reaches_the_workers():
    docs = render()
    web_policy = one(docs, "NetworkPolicy", f"{FULLNAME}-web")
    assert web_policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "web"
    peers = web_policy["spec"]["ingress"][0]["from"]
    names = [p["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for p in peers]
    assert names == ["ingress-nginx", "monitoring"]
    closed = one(docs, "NetworkPolicy", f"{FULLNAME}-no-ingress")
    components = {
        tuple(e["values"])
        for e in closed["spec"]["podSelector"]["matchExpressions"]
        if e["key"] == "app.kubernetes.io/component"
    }
    assert components == {("worker", "beat", "migrate", "apply-config")}
    assert closed["spec"]["policyTypes"] == ["Ingress"] and "ingress" not in closed["spec"]
    # An empty list of allowed peers would mean "everyone": refused.
    with pytest.raises(helm.HelmValuesError, match="ingressFrom"):
        render({"networkPolicy": {"ingressFrom": []}})


def test_only_the_platforms_pods_reach_the_in_cluster_postgresql_and_redis():
    docs = render(VARIANTS["in-cluster"])
    for component, port in [("postgresql", 5432), ("redis", 6379)]:
        policy = one(docs, "NetworkPolicy", f"{FULLNAME}-{component}")
        selector = policy["spec"]["podSelector"]["matchLabels"]
        assert selector["app.kubernetes.io/component"] == component
        (rule,) = policy["spec"]["ingress"]
        assert rule["ports"] == [{"port": port, "protocol": "TCP"}]
        (peer,) = rule["from"]
        expressions = {e["key"]: e["values"] for e in peer["podSelector"]["matchExpressions"]}
        assert expressions["app.kubernetes.io/instance"] == [RELEASE]
        assert "web" in expressions["app.kubernetes.io/component"]
        assert "worker" in expressions["app.kubernetes.io/component"]
        assert component not in expressions["app.kubernetes.io/component"]
    web = one(docs, "Deployment", f"{FULLNAME}-web")["spec"]["template"]["spec"]["containers"][0]
    env = env_of(web)
    assert env["DATABASE_URL"] == f"postgres://llmplatform@{FULLNAME}-postgresql:5432/llmplatform"
    assert env["REDIS_URL"] == f"redis://{FULLNAME}-redis:6379/0"


def test_secrets_are_mounted_by_reference_and_read_as_files():
    docs = render()
    assert not [d for d in docs if d["kind"] == "Secret"]
    spec = one(docs, "Deployment", f"{FULLNAME}-web")["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == "secrets")
    assert volume["secret"]["secretName"] == "llmplatform"
    env = env_of(spec["containers"][0])
    assert env["SECRET_KEY_FILE"] == "/var/run/secrets/llmplatform/SECRET_KEY"
    assert "SECRET_KEY" not in env and "DATABASE_URL" not in env

    docs = render(VARIANTS["csi"])
    assert not [d for d in docs if d["kind"] == "Secret"]
    spec = one(docs, "Deployment", f"{FULLNAME}-worker")["spec"]["template"]["spec"]
    volume = next(v for v in spec["volumes"] if v["name"] == "secrets")
    assert volume["csi"] == {
        "driver": "secrets-store.csi.k8s.io",
        "readOnly": True,
        "volumeAttributes": {"secretProviderClass": "llmp-aws"},
    }
    env = env_of(spec["containers"][0])
    # Given in values, the database and Redis URLs are not also read from the store.
    assert env["DATABASE_URL"] == "postgres://llmp@db.internal:5432/llmp"
    assert "DATABASE_URL_FILE" not in env and "REDIS_URL_FILE" not in env
    assert env["LLMP_MASTER_KEY_FILE"] == "/var/run/secrets/llmplatform/LLMP_MASTER_KEY"


def test_no_secret_from_the_values_is_rendered_unless_the_user_opts_in():
    values = copy.deepcopy(VARIANTS["in-cluster"])
    values["secrets"]["create"] = False
    values["secrets"]["existingSecret"] = "llmplatform"
    text = render_text(values)
    assert not [form for form in SENTINEL_FORMS if form in text]
    # Opted in (trials): the chart makes the Secret, and only it holds the value.
    docs = render(VARIANTS["in-cluster"])
    holders = [d for d in docs if any(form in yaml.safe_dump(d) for form in SENTINEL_FORMS)]
    assert [(d["kind"], d["metadata"]["name"]) for d in holders] == [
        ("Secret", f"{FULLNAME}-secrets")
    ]
    assert base64.b64decode(holders[0]["data"]["SECRET_KEY"]).decode() == SENTINEL
    # A secret slipped into the plain settings is refused, naming the key.
    with pytest.raises(helm.HelmRenderError, match=r"config\.extraEnv\.LLMP_MASTER_KEY"):
        render({"config": {"extraEnv": {"LLMP_MASTER_KEY": SENTINEL}}})


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"web": {"replicas": -1}}, r"/web/replicas': minimum"),
        ({"worker": {"replicas": "3; rm -rf /"}}, r"/worker/replicas"),
        ({"image": {"tag": "v1\nkind: Secret"}}, r"/image/tag"),
        ({"image": {"repository": "evil.io/x y"}}, r"/image/repository"),
        (
            {
                "web": {
                    "resources": {
                        "requests": {"cpu": "lots", "memory": "1Gi"},
                        "limits": {"cpu": "1", "memory": "1Gi"},
                    }
                }
            },
            r"/web/resources/requests/cpu",
        ),
        ({"ingress": {"enabled": True, "hosts": ["llm.example.com\n- evil"]}}, r"/ingress/hosts/0"),
        ({"ingress": {"enabled": True, "hosts": ["LLM.Example.com"]}}, r"/ingress/hosts/0"),
        ({"ingress": {"maxBodySize": "12m\nx: y"}}, r"/ingress/maxBodySize"),
        ({"config": {"extraEnv": {"bad name": "x"}}}, r"/config/extraEnv"),
        (
            {"config": {"extraEnv": {"LLMP_UPSTREAM_HOSTS": 5}}},
            r"/config/extraEnv/LLMP_UPSTREAM_HOSTS",
        ),
        ({"externalDatabase": {"url": "mysql://x"}}, r"/externalDatabase/url"),
        ({"web": {"drain": {"preStopSeconds": 10, "gracefulShutdownSeconds": 0}}}, r"/web/drain"),
        ({"webb": {}}, r"additional properties 'webb'"),
    ],
)
def test_bad_values_are_refused_at_render_with_the_key_named(values, error):
    with pytest.raises(helm.HelmValuesError, match=error):
        render(values)


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"secrets": {"existingSecret": ""}}, "set exactly one of secrets.existingSecret"),
        ({"secrets": {"secretProviderClass": "also"}}, "set exactly one of secrets.existingSecret"),
        (
            {"postgresql": {"enabled": True}, "externalDatabase": {"url": "postgres://x@y/z"}},
            "choose one database",
        ),
        (
            {"web": {"autoscaling": {"minReplicas": 5, "maxReplicas": 2}}},
            "minReplicas is larger than maxReplicas",
        ),
    ],
)
def test_contradictory_values_are_refused_with_a_clear_error(values, error):
    with pytest.raises(helm.HelmRenderError, match=error):
        render(values)
