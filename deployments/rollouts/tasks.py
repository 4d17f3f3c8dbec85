from __future__ import annotations

from celery import shared_task

from deployments.rollouts import services


@shared_task(name="rollouts.evaluate_rollouts")
def evaluate_rollouts() -> dict[str, int]:
    """Every 15 s (llmplatform/celery.py): the automatic guard and the canary schedule of each
    live rollout. Idempotent: each change claims its rollout with a conditional UPDATE, so two
    overlapping runs cannot both roll back or advance the same rollout."""
    return services.evaluate_live_rollouts()
