"""The default deployment checklist: the seed's pre-deployment, deployment and post-deployment
lists (best practices, section 4.3). Editable in the admin; rollouts copy it when created."""

from django.db import migrations

NAME = "Seed deployment checklist"

# (phase, text, required, sign-offs, automatic check, check params)
ITEMS = [
    ("pre", "Code reviewed by 2 engineers", True, 2, "", {}),
    ("pre", "All tests passing (unit, integration, e2e)", True, 1, "", {}),
    ("pre", "Load test passed (can handle 2x peak traffic)", True, 0, "load_test_recorded", {}),
    ("pre", "Security scan passed", True, 1, "", {}),
    ("pre", "Rollback plan documented", True, 1, "", {}),
    ("pre", "On-call engineer aware", True, 1, "", {}),
    ("pre", "Maintenance window communicated (if needed)", False, 1, "", {}),
    ("deploy", "Backup database (if applicable)", False, 1, "", {}),
    ("deploy", "Drain existing connections", False, 1, "", {}),
    ("deploy", "Deploy to canary (5% traffic)", True, 0, "canary_started", {}),
    ("deploy", "Monitor for 30 minutes", True, 0, "monitored_for", {"minutes": 30}),
    ("deploy", "Gradually roll out to 100%", True, 0, "full_rollout", {}),
    (
        "post",
        "Monitor error rates (target < 0.5%)",
        True,
        0,
        "error_rate_below",
        {"max_percent": 0.5},
    ),
    ("post", "Monitor latency (target < 5s P95)", True, 0, "p95_latency_below", {"max_ms": 5000}),
    (
        "post",
        "Monitor costs (no unexpected spikes)",
        True,
        0,
        "cost_within_band",
        {"band_percent": 50, "hours": 1},
    ),
    ("post", "Collect user feedback", True, 1, "", {}),
    ("post", "Document any issues", True, 1, "", {}),
    ("post", "Celebrate successful deployment", False, 1, "", {}),
]


def create(apps, schema_editor):
    Template = apps.get_model("rollouts", "ChecklistTemplate")
    Item = apps.get_model("rollouts", "ChecklistTemplateItem")
    if Template.objects.filter(name=NAME).exists():
        return
    template = Template.objects.create(
        name=NAME,
        is_default=not Template.objects.filter(is_default=True).exists(),
        description="The seed's deployment checklist (section 4.3).",
    )
    Item.objects.bulk_create(
        [
            Item(
                template=template,
                phase=phase,
                position=(index + 1) * 10,
                text=text,
                required=required,
                required_signoffs=signoffs,
                automatic_check=check,
                check_params=params,
            )
            for index, (phase, text, required, signoffs, check, params) in enumerate(ITEMS)
        ]
    )


def remove(apps, schema_editor):
    apps.get_model("rollouts", "ChecklistTemplate").objects.filter(name=NAME).delete()


class Migration(migrations.Migration):
    dependencies = [("rollouts", "0001_initial")]

    operations = [migrations.RunPython(create, remove)]
