"""Celery tasks of data-subject requests. They take ids and call one service each; running one
twice is harmless, because ``subject_request_execute`` claims its request with a conditional
UPDATE and does nothing when the claim fails."""

from __future__ import annotations

from celery import shared_task

from privacy.subject_requests import execution, export
from privacy.subject_requests import selectors as request_selectors
from privacy.subject_requests import services as request_services


@shared_task(name="privacy.execute_subject_request", acks_late=True, ignore_result=True)
def execute_subject_request(request_id: int) -> str:
    return execution.subject_request_execute(request_id).state


@shared_task(name="privacy.send_request_code", ignore_result=True)
def send_request_code(request_id: int) -> bool:
    """The public page's verification code (off the page's request path: see
    ``privacy.subject_requests.services.subject_request_send_code``)."""
    return request_services.subject_request_issue_code(request_id)


@shared_task(name="privacy.resume_stalled_subject_requests", ignore_result=True)
def resume_stalled_subject_requests() -> dict[str, int]:
    """Periodic: (re)start approved requests whose task was lost, failed ones with retries left
    and in-progress ones whose worker died; close public requests never verified; delete exports
    whose link expired unused."""
    ids = request_selectors.claimable_request_ids()
    for request_id in ids:
        execute_subject_request.delay(request_id)
    return {
        "resumed": len(ids),
        "closed_unverified": request_services.subject_requests_close_unverified(),
        "exports_expired": export.subject_request_exports_expire(),
    }
