"""Where a rollout's traffic split is carried out.

The rollout service decides *what* split should hold (stable version, candidate version, the
candidate's percentage); an executor makes it so somewhere:

- ``gateway``: the gateway itself is the router; the split is written to the alias's
  ``gateway.ModelVersion.weight`` rows (deployments -> gateway is an allowed import).
- ``aws_ecs_alb``: for teams that run the app itself as containers on ECS:
  ECS services scaled and an ALB listener's weighted target groups shifted through boto3
  (``deployments/rollouts/executors/aws.py``).

Both implement ``TrafficExecutor``; a rollout names its executor by ``kind`` and keeps the
executor's settings (ARNs, cluster, service names) in a JSON field.
"""

from __future__ import annotations

from typing import Any, Protocol


class ExecutorError(Exception):
    """The executor could not apply a split or probe health; the message is safe to show."""


class TrafficExecutor(Protocol):
    kind: str

    def apply_split(self, *, stable: str, candidate: str, candidate_percent: int) -> None:
        """Send ``candidate_percent`` % of traffic to ``candidate`` and the rest to ``stable``.
        Idempotent: applying the same split twice changes nothing more."""

    def health_probe(self, *, candidate: str) -> tuple[bool, str]:
        """Is the candidate ready to take traffic (blue-green's gate)? (ok, human reason)."""

    def describe(self) -> dict[str, Any]:
        """The split as the target system reports it now, for the admin timeline."""
