"""Rollouts on AWS: ECS services behind an Application Load Balancer with weighted target groups.

For teams that run the app itself as containers on ECS (a blue/green or canary shift): the
stable and candidate versions are two ECS services, each registered in its own target group, and
one ALB listener (its default action, or one listener rule) forwards to both with weights.

What each call does:

- ``apply_split(candidate_percent=p)`` with ``p > 0``: scales the candidate service up first
  (to ``candidate_desired_count``, or else to the stable service's desired count, at least 1;
  a candidate already larger is left alone). When ``p`` is more than the candidate has now, it
  must pass ``health_probe`` first; if it does not (its tasks are still starting), no weight
  changes and an ``ExecutorError`` says why, so the same call succeeds once the tasks are up.
  Then the forward action's weights become ``stable: 100 - p, candidate: p`` in one
  ``modify_listener`` / ``modify_rule`` call. The stable service is never scaled: at 100 % it
  keeps running with weight 0, so switching back is instant (nothing to start); scaling it down
  later is a deliberate step outside the rollout.
- ``apply_split(candidate_percent=0)``: all traffic back to stable first; then, when this took
  traffic away from the candidate (a rollback), the candidate is scaled to 0 as CodeDeploy does
  with a failed replacement (``scale_down_on_rollback``, default true). A candidate that had no
  traffic is left as it is: that is a green slot deployed ahead of a blue-green switch. (If the
  weights change but the scale-down call then fails, a retry finds no traffic to take away and
  leaves the candidate running, idle: the safe side.)
- ``health_probe``: the candidate service is active, runs as many tasks as it wants (more
  than 0), has no failed or unfinished deployment, and its target group has at least that many
  targets, every one of them ``healthy`` (draining ones aside).
- Every step reads the current state first and writes only what differs: applying the same
  split twice makes no second write.
- Other actions of a rule (authenticate-oidc / -cognito before the forward) and the forward's
  stickiness settings are kept; a listener that forwards to a target group which is neither the
  stable nor the candidate one is refused rather than taken over.

Credentials come from boto3's standard chain (environment, shared config, container/instance
role) or from the ``session`` handed in; they are never part of ``config``, never logged and
never in an error message. botocore retries throttling and transient errors in its standard mode.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from botocore import exceptions as boto
from botocore.config import Config

from deployments.rollouts.executors import ExecutorError

_PARTITION = r"aws(?:-[a-z]+)*"
_REGION = r"[a-z]{2}(?:-[a-z]+)+-\d+"
_ACCOUNT = r"\d{12}"
_ID = r"[0-9A-Za-z]+"
_ELB = rf"arn:(?P<partition>{_PARTITION}):elasticloadbalancing:(?P<region>{_REGION}):{_ACCOUNT}:"
_LISTENER_ARN = re.compile(rf"{_ELB}listener/app/[A-Za-z0-9-]{{1,32}}/{_ID}/{_ID}")
_RULE_ARN = re.compile(rf"{_ELB}listener-rule/app/[A-Za-z0-9-]{{1,32}}/{_ID}/{_ID}/{_ID}")
_TARGET_GROUP_ARN = re.compile(rf"{_ELB}targetgroup/[A-Za-z0-9-]{{1,32}}/{_ID}")
_REGION_NAME = re.compile(_REGION)
# An ECS cluster or service: its name or its ARN.
_ECS_NAME = re.compile(rf"[A-Za-z0-9_-]{{1,255}}|arn:{_PARTITION}:ecs:{_REGION}:{_ACCOUNT}:\S+")
# Anything that looks like an AWS access key id, in case an error message quotes one.
_ACCESS_KEY_ID = re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA|ANVA|AIPA)[A-Z0-9]{12,}\b")

_REQUIRED = (
    "region",
    "cluster",
    "stable_service",
    "candidate_service",
    "listener_arn",
    "stable_target_group_arn",
    "candidate_target_group_arn",
)
_OPTIONAL = (
    "endpoint_url",
    "rule_arn",
    "candidate_desired_count",
    "scale_down_on_rollback",
    "connect_timeout",
    "read_timeout",
    "max_attempts",
)
_CREDENTIAL_HINTS = ("secret", "access_key", "session_token", "password", "credential")

_DEFAULT_CONNECT_TIMEOUT = 5.0
_DEFAULT_READ_TIMEOUT = 15.0
_DEFAULT_MAX_ATTEMPTS = 5  # in all, the first try included; standard mode backs off with jitter
_MAX_ERROR_DETAIL = 300
# States a target passes through on its way out; they neither count nor block readiness.
_LEAVING_STATES = {"draining"}


class EcsAlbExecutor:
    """Shifts an ALB listener's weights between two ECS services' target groups."""

    kind = "aws_ecs_alb"

    def __init__(self, config: dict[str, Any], *, session: Any | None = None) -> None:
        self._settings = _validated(config)
        self._session = session
        self._ecs_client: Any = None
        self._elbv2_client: Any = None

    # TrafficExecutor ---------------------------------------------------------------------------

    def apply_split(self, *, stable: str, candidate: str, candidate_percent: int) -> None:
        if (
            isinstance(candidate_percent, bool)
            or not isinstance(candidate_percent, int)
            or not 0 <= candidate_percent <= 100
        ):
            raise ExecutorError(
                f"candidate_percent must be a whole number from 0 to 100, not {candidate_percent!r}"
            )
        s = self._settings
        actions = self._read_actions()
        index, forward = _forward_action(actions, where=self._action_owner())
        current = _weights(forward)
        self._refuse_foreign_target_groups(current)
        wanted = {
            s["stable_target_group_arn"]: 100 - candidate_percent,
            s["candidate_target_group_arn"]: candidate_percent,
        }
        candidate_had_traffic = current.get(s["candidate_target_group_arn"], 0) > 0

        if candidate_percent > 0:
            self._scale_candidate_up(candidate)
        if candidate_percent > _candidate_percent(current, s["candidate_target_group_arn"]):
            # More traffic only to a candidate that can take it: a target group without healthy
            # targets would answer the users sent to it with errors.
            ok, reason = self.health_probe(candidate=candidate)
            if not ok:
                raise ExecutorError(
                    f"no traffic shifted: {reason}; apply the split again once it is ready"
                )
        if current != wanted:
            new_actions = [_reusable(action) for action in actions]
            new_actions[index] = _with_weights(forward, wanted)
            self._write_actions(new_actions)
        if candidate_percent == 0 and candidate_had_traffic and s["scale_down_on_rollback"]:
            # Only after the traffic is gone: scaling first would fail the candidate's share.
            self._set_desired_count(s["candidate_service"], 0)

    def health_probe(self, *, candidate: str) -> tuple[bool, str]:
        s = self._settings
        service = self._services()[s["candidate_service"]]
        name = f"candidate {candidate!r} (ECS service {s['candidate_service']})"
        if service is None:
            return False, f"{name} does not exist in cluster {s['cluster']}"
        if service.get("status") != "ACTIVE":
            return False, f"{name} is {service.get('status', 'not active')}"
        desired = int(service.get("desiredCount", 0))
        running = int(service.get("runningCount", 0))
        if desired == 0:
            return False, f"{name} has a desired count of 0: no task is meant to run"
        if running < desired:
            return False, f"{name} has {running} of {desired} tasks running"
        failed = [d for d in service.get("deployments", []) if d.get("rolloutState") == "FAILED"]
        if failed:
            return False, f"{name} has a failed deployment: {failed[0].get('rolloutStateReason')}"
        if len(service.get("deployments", [])) > 1:
            return False, f"{name} is still replacing tasks (more than one deployment)"

        descriptions = self._call(
            self._elbv2().describe_target_health,
            TargetGroupArn=s["candidate_target_group_arn"],
        )["TargetHealthDescriptions"]
        targets = [t for t in descriptions if t["TargetHealth"]["State"] not in _LEAVING_STATES]
        group = f"target group {_short(s['candidate_target_group_arn'])}"
        if not targets:
            return False, f"{group} has no registered targets"
        not_healthy = [t for t in targets if t["TargetHealth"]["State"] != "healthy"]
        if not_healthy:
            first = not_healthy[0]
            health = first["TargetHealth"]
            reason = health.get("Reason") or health.get("Description") or ""
            return False, (
                f"{len(targets) - len(not_healthy)} of {len(targets)} targets healthy in "
                f"{group}; {first['Target']['Id']} is {health['State']}"
                + (f" ({reason})" if reason else "")
            )
        if len(targets) < desired:
            return False, f"{group} has {len(targets)} healthy targets for {desired} tasks"
        return True, (
            f"{name}: {running} of {desired} tasks running, "
            f"{len(targets)} healthy targets in {group}"
        )

    def describe(self) -> dict[str, Any]:
        s = self._settings
        actions = self._read_actions()
        _, forward = _forward_action(actions, where=self._action_owner())
        weights = _weights(forward)
        services = self._services()

        def role(service_name: str, target_group_arn: str) -> dict[str, Any]:
            service = services[service_name]
            return {
                "service": service_name,
                "target_group_arn": target_group_arn,
                "weight": weights.get(target_group_arn, 0),
                "desired_count": None if service is None else service.get("desiredCount"),
                "running_count": None if service is None else service.get("runningCount"),
                "pending_count": None if service is None else service.get("pendingCount"),
                "status": "MISSING" if service is None else service.get("status"),
            }

        return {
            "kind": self.kind,
            "region": s["region"],
            "cluster": s["cluster"],
            "listener_arn": s["listener_arn"],
            "rule_arn": s["rule_arn"],
            "candidate_percent": _candidate_percent(weights, s["candidate_target_group_arn"]),
            "weights": weights,
            "stable": role(s["stable_service"], s["stable_target_group_arn"]),
            "candidate": role(s["candidate_service"], s["candidate_target_group_arn"]),
        }

    # The listener or rule -----------------------------------------------------------------------

    def _action_owner(self) -> str:
        s = self._settings
        if s["rule_arn"]:
            return f"listener rule {_short(s['rule_arn'])}"
        return f"listener {_short(s['listener_arn'])}"

    def _read_actions(self) -> list[dict[str, Any]]:
        s = self._settings
        if s["rule_arn"]:
            rules = self._call(self._elbv2().describe_rules, RuleArns=[s["rule_arn"]])["Rules"]
            if not rules:
                raise ExecutorError(f"{self._action_owner()} does not exist")
            return rules[0]["Actions"]
        listeners = self._call(self._elbv2().describe_listeners, ListenerArns=[s["listener_arn"]])[
            "Listeners"
        ]
        if not listeners:
            raise ExecutorError(f"{self._action_owner()} does not exist")
        return listeners[0]["DefaultActions"]

    def _write_actions(self, actions: list[dict[str, Any]]) -> None:
        s = self._settings
        if s["rule_arn"]:
            self._call(self._elbv2().modify_rule, RuleArn=s["rule_arn"], Actions=actions)
        else:
            self._call(
                self._elbv2().modify_listener, ListenerArn=s["listener_arn"], DefaultActions=actions
            )

    def _refuse_foreign_target_groups(self, weights: dict[str, int]) -> None:
        s = self._settings
        ours = {s["stable_target_group_arn"], s["candidate_target_group_arn"]}
        foreign = [arn for arn, weight in weights.items() if arn not in ours]
        if foreign:
            raise ExecutorError(
                f"{self._action_owner()} forwards to target group {_short(foreign[0])}, which is "
                "neither the stable nor the candidate one; refusing to take it over"
            )

    # ECS ---------------------------------------------------------------------------------------

    def _services(self) -> dict[str, dict[str, Any] | None]:
        s = self._settings
        names = [s["stable_service"], s["candidate_service"]]
        found = self._call(self._ecs().describe_services, cluster=s["cluster"], services=names)
        by_name: dict[str, dict[str, Any] | None] = dict.fromkeys(names)
        for service in found.get("services", []):
            for name in names:
                if name in (service.get("serviceName"), service.get("serviceArn")):
                    by_name[name] = service
        return by_name

    def _scale_candidate_up(self, label: str) -> None:
        s = self._settings
        services = self._services()
        candidate = services[s["candidate_service"]]
        if candidate is None or candidate.get("status") != "ACTIVE":
            raise ExecutorError(
                f"candidate {label!r}: ECS service {s['candidate_service']} does not exist or is "
                f"not active in cluster {s['cluster']}"
            )
        target = s["candidate_desired_count"]
        if target is None:
            stable = services[s["stable_service"]]
            target = max(int(stable.get("desiredCount", 0)) if stable else 0, 1)
        if int(candidate.get("desiredCount", 0)) < target:
            self._set_desired_count(s["candidate_service"], target)

    def _set_desired_count(self, service: str, count: int) -> None:
        self._call(
            self._ecs().update_service,
            cluster=self._settings["cluster"],
            service=service,
            desiredCount=count,
        )

    # boto3 -------------------------------------------------------------------------------------

    def _boto_session(self) -> Any:
        if self._session is None:
            import boto3

            # A session of its own reads the standard credential chain once.
            self._session = boto3.session.Session()
        return self._session

    def _client(self, service_name: str) -> Any:
        s = self._settings
        try:
            return self._boto_session().client(
                service_name,
                region_name=s["region"],
                endpoint_url=s["endpoint_url"],
                config=Config(
                    connect_timeout=s["connect_timeout"],
                    read_timeout=s["read_timeout"],
                    retries={"mode": "standard", "total_max_attempts": s["max_attempts"]},
                ),
            )
        except boto.BotoCoreError as exc:
            raise ExecutorError(
                f"cannot build the AWS {service_name} client ({type(exc).__name__})"
            ) from None
        except ValueError:  # botocore's "Invalid endpoint"
            raise ExecutorError(f"invalid AWS endpoint_url {s['endpoint_url']!r}") from None

    def _ecs(self) -> Any:
        if self._ecs_client is None:
            self._ecs_client = self._client("ecs")
        return self._ecs_client

    def _elbv2(self) -> Any:
        if self._elbv2_client is None:
            self._elbv2_client = self._client("elbv2")
        return self._elbv2_client

    def _call(self, method: Any, **kwargs: Any) -> dict[str, Any]:
        """One AWS call; every botocore failure becomes an ExecutorError that is safe to show.

        ``from None``: the original exception is dropped, so no traceback or exception report
        carries the request (signed headers) along."""
        operation = getattr(method, "__name__", "call")
        where = self._settings["endpoint_url"] or f"AWS {self._settings['region']}"
        try:
            return method(**kwargs)
        except boto.ClientError as exc:
            error = exc.response.get("Error", {})
            code = error.get("Code", "Error")
            message = self._scrub(str(error.get("Message", "")))
            detail = f": {message}" if message else ""
            raise ExecutorError(f"AWS {operation} failed with {code}{detail}") from None
        except boto.NoCredentialsError:
            raise ExecutorError(
                f"AWS {operation}: no AWS credentials found (environment, shared config or "
                "instance/task role)"
            ) from None
        except (boto.EndpointConnectionError, boto.ConnectionClosedError):
            raise ExecutorError(f"AWS {operation}: cannot reach {where}") from None
        except (boto.ConnectTimeoutError, boto.ReadTimeoutError):
            raise ExecutorError(f"AWS {operation}: {where} timed out") from None
        except boto.ParamValidationError as exc:
            raise ExecutorError(
                f"AWS {operation}: invalid parameters ({self._scrub(str(exc))})"
            ) from None
        except boto.BotoCoreError as exc:
            raise ExecutorError(f"AWS {operation} failed ({type(exc).__name__})") from None

    def _scrub(self, text: str) -> str:
        """An AWS message with anything credential-like taken out, kept short."""
        secrets: list[str] = []
        try:
            credentials = self._boto_session().get_credentials()
        except boto.BotoCoreError:
            credentials = None
        if credentials is not None:
            frozen = credentials.get_frozen_credentials()
            secrets = [v for v in (frozen.access_key, frozen.secret_key, frozen.token) if v]
        for secret in secrets:
            text = text.replace(secret, "***")
        text = _ACCESS_KEY_ID.sub("***", text)
        if len(text) > _MAX_ERROR_DETAIL:
            text = text[: _MAX_ERROR_DETAIL - 1] + "…"
        return text


# The forward action ---------------------------------------------------------------------------


def _forward_action(actions: list[dict[str, Any]], *, where: str) -> tuple[int, dict[str, Any]]:
    forwards = [i for i, action in enumerate(actions) if action.get("Type") == "forward"]
    if len(forwards) != 1:
        kinds = ", ".join(str(a.get("Type")) for a in actions) or "none"
        raise ExecutorError(f"{where} has no forward action to weight (its actions: {kinds})")
    return forwards[0], actions[forwards[0]]


def _weights(forward: dict[str, Any]) -> dict[str, int]:
    groups = (forward.get("ForwardConfig") or {}).get("TargetGroups")
    if groups:
        # AWS's default weight is 1 when a group is listed without one.
        return {g["TargetGroupArn"]: int(g.get("Weight", 1)) for g in groups}
    if forward.get("TargetGroupArn"):
        return {forward["TargetGroupArn"]: 1}
    return {}


def _candidate_percent(weights: dict[str, int], candidate_target_group_arn: str) -> int:
    total = sum(weights.values())
    return round(100 * weights.get(candidate_target_group_arn, 0) / total) if total else 0


def _with_weights(forward: dict[str, Any], weights: dict[str, int]) -> dict[str, Any]:
    action: dict[str, Any] = {"Type": "forward"}
    if "Order" in forward:
        action["Order"] = forward["Order"]
    config: dict[str, Any] = {
        "TargetGroups": [{"TargetGroupArn": arn, "Weight": w} for arn, w in weights.items()]
    }
    stickiness = (forward.get("ForwardConfig") or {}).get("TargetGroupStickinessConfig")
    if stickiness:
        config["TargetGroupStickinessConfig"] = stickiness
    action["ForwardConfig"] = config
    return action


def _reusable(action: dict[str, Any]) -> dict[str, Any]:
    """An action as read back, made fit to be written again: an OIDC client secret is never
    returned by AWS, so the existing one is kept by asking for it explicitly."""
    action = dict(action)
    oidc = action.get("AuthenticateOidcConfig")
    if oidc is not None and "ClientSecret" not in oidc:
        action["AuthenticateOidcConfig"] = {**oidc, "UseExistingClientSecret": True}
    return action


def _short(arn: str) -> str:
    """The resource part of an ARN, for messages."""
    return arn.split(":", 5)[-1]


# Config ---------------------------------------------------------------------------------------


def _validated(config: Any) -> dict[str, Any]:
    if not isinstance(config, dict):
        raise ExecutorError("the aws_ecs_alb executor's config must be a JSON object")
    credential_like = sorted(
        k for k in config if any(h in str(k).lower() for h in _CREDENTIAL_HINTS)
    )
    if credential_like:
        # The value is not repeated: it may be a real secret typed in the wrong place.
        raise ExecutorError(
            f"aws_ecs_alb config must not hold credentials ({', '.join(credential_like)}); "
            "they come from the standard AWS chain (environment, shared config or task role)"
        )
    unknown = sorted(str(k) for k in config if k not in _REQUIRED and k not in _OPTIONAL)
    if unknown:
        raise ExecutorError(
            f"aws_ecs_alb config has unknown keys: {', '.join(unknown)} "
            f"(known: {', '.join(_REQUIRED + _OPTIONAL)})"
        )
    missing = [k for k in _REQUIRED if config.get(k) in (None, "")]
    if missing:
        raise ExecutorError(f"aws_ecs_alb config is missing: {', '.join(missing)}")
    for key in (*_REQUIRED, "endpoint_url", "rule_arn"):
        if config.get(key) is not None and not isinstance(config[key], str):
            raise ExecutorError(f"aws_ecs_alb config {key} must be a string")

    region = config["region"]
    if not _REGION_NAME.fullmatch(region):
        raise ExecutorError(f"aws_ecs_alb config region {region!r} is not an AWS region name")
    arn_patterns = {
        "listener_arn": (_LISTENER_ARN, "an application load balancer listener ARN"),
        "rule_arn": (_RULE_ARN, "an application load balancer listener rule ARN"),
        "stable_target_group_arn": (_TARGET_GROUP_ARN, "a target group ARN"),
        "candidate_target_group_arn": (_TARGET_GROUP_ARN, "a target group ARN"),
    }
    for key, (pattern, what) in arn_patterns.items():
        value = config.get(key)
        if not value:
            continue
        match = pattern.fullmatch(value)
        if match is None:
            raise ExecutorError(f"aws_ecs_alb config {key} {value!r} is not {what}")
        if match["region"] != region:
            raise ExecutorError(
                f"aws_ecs_alb config {key} is in region {match['region']}, not {region}"
            )
    if config["stable_target_group_arn"] == config["candidate_target_group_arn"]:
        raise ExecutorError("aws_ecs_alb config: stable and candidate target groups are the same")
    rule_arn = config.get("rule_arn")
    if rule_arn:
        rule_listener = rule_arn.replace(":listener-rule/", ":listener/", 1).rsplit("/", 1)[0]
        if rule_listener != config["listener_arn"]:
            raise ExecutorError("aws_ecs_alb config rule_arn does not belong to listener_arn")
    for key in ("cluster", "stable_service", "candidate_service"):
        if not _ECS_NAME.fullmatch(config[key]):
            raise ExecutorError(
                f"aws_ecs_alb config {key} {config[key]!r} is not an ECS name or ARN"
            )
    if config["stable_service"] == config["candidate_service"]:
        raise ExecutorError("aws_ecs_alb config: stable and candidate services are the same")

    endpoint_url = config.get("endpoint_url") or None
    if endpoint_url is not None:
        parts = urlsplit(endpoint_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ExecutorError("aws_ecs_alb config endpoint_url must be an http(s) URL")
        if parts.username or parts.password:
            raise ExecutorError("aws_ecs_alb config endpoint_url must not hold credentials")

    return {
        **{k: config[k] for k in _REQUIRED},
        "endpoint_url": endpoint_url,
        "rule_arn": rule_arn or None,
        "candidate_desired_count": _positive_int(config, "candidate_desired_count", None),
        "scale_down_on_rollback": _boolean(config, "scale_down_on_rollback", True),
        "connect_timeout": _positive_number(config, "connect_timeout", _DEFAULT_CONNECT_TIMEOUT),
        "read_timeout": _positive_number(config, "read_timeout", _DEFAULT_READ_TIMEOUT),
        "max_attempts": _positive_int(config, "max_attempts", _DEFAULT_MAX_ATTEMPTS),
    }


def _positive_int(config: dict[str, Any], key: str, default: int | None) -> int | None:
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ExecutorError(f"aws_ecs_alb config {key} must be a whole number of at least 1")
    return value


def _positive_number(config: dict[str, Any], key: str, default: float) -> float:
    value = config.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise ExecutorError(f"aws_ecs_alb config {key} must be a number of seconds above 0")
    return float(value)


def _boolean(config: dict[str, Any], key: str, default: bool) -> bool:
    value = config.get(key)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ExecutorError(f"aws_ecs_alb config {key} must be true or false")
    return value
