"""Executors by kind. A rollout names its executor (``Rollout.executor_kind``) and keeps its
settings in ``Rollout.executor_config``; this module turns the two into a ``TrafficExecutor``.

Executors are imported when first used, so a platform that never drives AWS never imports
boto3 for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.utils.module_loading import import_string

from deployments.rollouts.executors import ExecutorError, TrafficExecutor

if TYPE_CHECKING:
    from deployments.rollouts.models import Rollout

GATEWAY = "gateway"
AWS_ECS_ALB = "aws_ecs_alb"

#: kind -> (dotted path of the class, label for forms). Each class takes one ``config`` dict.
EXECUTORS: dict[str, tuple[str, str]] = {
    GATEWAY: (
        "deployments.rollouts.executors.gateway.GatewayExecutor",
        "the gateway's own routing (model version weights)",
    ),
    AWS_ECS_ALB: (
        "deployments.rollouts.executors.aws.EcsAlbExecutor",
        "AWS ECS services behind ALB weighted target groups",
    ),
}


def executor_choices() -> list[tuple[str, str]]:
    return [(kind, label) for kind, (_, label) in EXECUTORS.items()]


def get_executor(kind: str, config: dict[str, Any]) -> TrafficExecutor:
    try:
        path, _ = EXECUTORS[kind]
    except KeyError:
        raise ExecutorError(f"Unknown executor kind {kind!r}.") from None
    try:
        cls = import_string(path)
    except ImportError as exc:
        raise ExecutorError(f"The {kind} executor is not installed ({exc}).") from exc
    return cls(dict(config or {}))


def executor_for(rollout: Rollout) -> TrafficExecutor:
    """The rollout's executor. The gateway executor is told the alias; the split's ``stable``
    and ``candidate`` are always the rollout's ``ModelVersion.version`` names (an AWS executor
    maps them to its services and target groups through its config)."""
    config = dict(rollout.executor_config or {})
    if rollout.executor_kind == GATEWAY:
        config["alias"] = rollout.alias.name
    return get_executor(rollout.executor_kind, config)
