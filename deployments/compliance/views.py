"""Compliance pages for officers: the overview, a report per framework (printable to PDF from
the browser: the admin's navigation is not printed), the GDPR Art. 30 record of processing,
"re-check now", and attestation files.

They are admin pages mounted at /deployments/compliance/: ``admin.site.admin_view`` lets in
only active staff signed in with the admin's second factor (anyone else is sent to the admin
sign-in), and each view then asks for its permission (else 403).
"""

from __future__ import annotations

from urllib.parse import quote

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from deployments.compliance import selectors, services
from deployments.compliance.models import ComplianceFramework
from llmplatform.actors import Actor
from llmplatform.admin.permissions import requires

VIEW_PERMISSION = "compliance.view_compliance_report"
RUN_PERMISSION = "compliance.run_evidence_checks"


def _require(request: HttpRequest, permission: str) -> None:
    if not request.user.has_perm(permission):
        raise PermissionDenied


def _context(request: HttpRequest, title: str, **extra) -> dict:
    return {
        **admin.site.each_context(request),
        "title": title,
        "can_recheck": request.user.has_perm(RUN_PERMISSION),
        "can_attest": request.user.has_perm("compliance.add_attestation"),
        "now": timezone.now(),
        **extra,
    }


@requires(VIEW_PERMISSION)
@require_GET
def overview(request: HttpRequest) -> HttpResponse:
    _require(request, VIEW_PERMISSION)
    return TemplateResponse(
        request,
        "compliance/overview.html",
        _context(
            request,
            "Compliance",
            frameworks=selectors.frameworks_with_counts(),
            failing=selectors.failing_items(),
        ),
    )


@requires(VIEW_PERMISSION)
@require_GET
def framework_report(request: HttpRequest, code: str) -> HttpResponse:
    _require(request, VIEW_PERMISSION)
    framework = get_object_or_404(ComplianceFramework, code=code)
    statuses = selectors.item_statuses(framework)
    return TemplateResponse(
        request,
        "compliance/report.html",
        _context(
            request,
            f"{framework.name} compliance report",
            framework=framework,
            statuses=statuses,
            counts=selectors.state_counts(statuses),
        ),
    )


@requires(VIEW_PERMISSION)
@require_GET
def record_of_processing(request: HttpRequest) -> HttpResponse:
    from deployments.compliance.processing_record import record_of_processing as build

    _require(request, VIEW_PERMISSION)
    return TemplateResponse(
        request,
        "compliance/record_of_processing.html",
        _context(
            request,
            "Record of processing activities (GDPR Art. 30)",
            record=build(),
        ),
    )


@requires(RUN_PERMISSION)
@require_POST
def recheck(request: HttpRequest) -> HttpResponse:
    """Run every live check now (audited), then back to the page it was asked from."""
    _require(request, RUN_PERMISSION)
    rows = services.evidence_checks_run(
        actor=Actor.for_user(request.user), trigger=services.Trigger.MANUAL
    )
    failing = sum(1 for row in rows if not row.ok)
    messages.add_message(
        request,
        messages.WARNING if failing else messages.SUCCESS,
        f"Re-checked {len(rows)} live checks: {failing} failing.",
    )
    target = request.POST.get("next", "")
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = reverse("compliance:overview")
    return redirect(target)


@requires(VIEW_PERMISSION)
@require_GET
def attestation_file(request: HttpRequest, attestation_id: int) -> HttpResponse:
    _require(request, VIEW_PERMISSION)
    attestation = selectors.attestation_with_file(attestation_id)
    if attestation is None:
        raise Http404
    response = HttpResponse(
        bytes(attestation.file_data or b""),
        content_type=attestation.file_content_type or "application/octet-stream",
    )
    # Always a download, never rendered in the platform's origin (an uploaded HTML or SVG
    # must not run as a page of the admin).
    response["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(attestation.file_name)}"
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "no-store"
    return response
