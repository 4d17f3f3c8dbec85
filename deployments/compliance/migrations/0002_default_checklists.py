"""The default checklists: the seed's compliance checklist (GDPR, HIPAA, SOC 2, CCPA), each item
either attested by a person or mapped to a live check, plus the items the platform can evidence
live (storage limitation, staff second factor, backups, restore drills). Officers edit them in
the admin afterwards; this only adds what is missing, so it never overwrites their edits."""

from __future__ import annotations

from django.db import migrations

ENCRYPTION = "privacy.conversation_encryption"
AUDIT_LOG = "audit.append_only_recent"
RETENTION = "privacy.retention_purge_recent"
REQUESTS = "privacy.subject_requests_on_time"
SECOND_FACTOR = "auth.staff_second_factor"
TLS = "security.tls_required"
BACKUPS = "backups.within_rpo"
RESTORE_DRILL = "backups.restore_drill_recent"

# (code, name, scope, [(item code, text, reference, live check or "", guidance)])
FRAMEWORKS = [
    (
        "gdpr",
        "GDPR",
        "EU users",
        [
            (
                "privacy-policy-updated",
                "Privacy policy updated",
                "GDPR Art. 12-14",
                "",
                "Attach the current privacy policy and note its version (the version consent is "
                "given to, in each tenant's privacy policy settings). Set an expiry for the next "
                "review.",
            ),
            (
                "data-deletion",
                "Data deletion implemented: erasure and other data-subject requests "
                "answered on time",
                "GDPR Art. 12(3), 15, 17",
                REQUESTS,
                "",
            ),
            (
                "storage-limitation",
                "Storage limitation: the retention purge ran in the last 24 h",
                "GDPR Art. 5(1)(e)",
                RETENTION,
                "",
            ),
            (
                "security-of-processing",
                "Security of processing: conversation records encrypted, "
                "master key not a development key",
                "GDPR Art. 32(1)(a)",
                ENCRYPTION,
                "",
            ),
            (
                "dpa-signed",
                "Data processing agreement signed",
                "GDPR Art. 28",
                "",
                "Attach the signed data processing agreement of each provider listed as a recipient "
                "on the record of processing.",
            ),
            (
                "record-of-processing",
                "Record of processing activities kept and reviewed",
                "GDPR Art. 30",
                "",
                "Review the generated record of processing (Compliance > Record of processing) and "
                "attest the review, with the printed record attached.",
            ),
        ],
    ),
    (
        "hipaa",
        "HIPAA",
        "Healthcare",
        [
            (
                "encryption-at-rest",
                "Encryption at rest: conversation records encrypted, master key "
                "not a development key",
                "45 CFR 164.312(a)(2)(iv)",
                ENCRYPTION,
                "",
            ),
            (
                "encryption-in-transit",
                "Encryption in transit: TLS required",
                "45 CFR 164.312(e)(1)",
                TLS,
                "",
            ),
            (
                "access-logs",
                "Access logs maintained: audit log append-only and written in the last 24 h",
                "45 CFR 164.312(b)",
                AUDIT_LOG,
                "",
            ),
            (
                "baa-signed",
                "Business Associate Agreement (BAA) signed",
                "45 CFR 164.308(b)",
                "",
                "Attach the signed BAA of each provider that receives protected health information.",
            ),
            (
                "person-authentication",
                "Person or entity authentication: second factor for all staff",
                "45 CFR 164.312(d)",
                SECOND_FACTOR,
                "",
            ),
            (
                "data-backup",
                "Data backup plan: backups succeeded within the RPO",
                "45 CFR 164.308(a)(7)(ii)(A)",
                BACKUPS,
                "",
            ),
            (
                "contingency-testing",
                "Contingency plan tested: restore drill within the last 90 days",
                "45 CFR 164.308(a)(7)(ii)(D)",
                RESTORE_DRILL,
                "",
            ),
        ],
    ),
    (
        "soc2",
        "SOC 2 Type II",
        "Enterprise customers",
        [
            (
                "controls-documented",
                "Security controls documented",
                "SOC 2 CC1-CC5",
                "",
                "Attach the control descriptions (policies, system description) given to the auditor.",
            ),
            (
                "audit-logging",
                "Audit logging enabled: append-only and written in the last 24 h",
                "SOC 2 CC7.2",
                AUDIT_LOG,
                "",
            ),
            (
                "annual-audit",
                "Annual audit scheduled",
                "SOC 2 Type II",
                "",
                "Attach the auditor's engagement letter; set the expiry to the audit date.",
            ),
            (
                "logical-access",
                "Logical access: second factor for all staff",
                "SOC 2 CC6.1",
                SECOND_FACTOR,
                "",
            ),
            ("transmission", "Data in transit protected: TLS required", "SOC 2 CC6.7", TLS, ""),
            ("backups", "Backups succeeded within the RPO", "SOC 2 A1.2", BACKUPS, ""),
            (
                "recovery-testing",
                "Restore drill within the last 90 days",
                "SOC 2 A1.3",
                RESTORE_DRILL,
                "",
            ),
        ],
    ),
    (
        "ccpa",
        "CCPA",
        "California users",
        [
            (
                "data-disclosure",
                "Data disclosure implemented: requests to know and to delete "
                "answered within 45 days",
                "Cal. Civ. Code 1798.100, 1798.105, 1798.130",
                REQUESTS,
                "",
            ),
            (
                "opt-out",
                "Opt-out mechanism provided (Do Not Sell or Share; Global Privacy Control "
                "honoured)",
                "Cal. Civ. Code 1798.120, 1798.135",
                "",
                "The public request page (/privacy/request/) and the Sec-GPC signal are built in; "
                "attest that each app links to the page, with a screenshot.",
            ),
            (
                "notice-at-collection",
                "Notice at collection and privacy policy updated",
                "Cal. Civ. Code 1798.100(b), 1798.130(a)(5)",
                "",
                "Attach the notice shown where personal information is collected.",
            ),
        ],
    ),
]


def forwards(apps, schema_editor):
    framework_model = apps.get_model("compliance", "ComplianceFramework")
    item_model = apps.get_model("compliance", "ComplianceItem")
    for order, (code, name, scope, items) in enumerate(FRAMEWORKS, start=1):
        framework, _ = framework_model.objects.get_or_create(
            code=code, defaults={"name": name, "scope": scope, "order": order}
        )
        for position, (item_code, text, reference, check, guidance) in enumerate(items, 1):
            item_model.objects.get_or_create(
                framework=framework,
                code=item_code,
                defaults={
                    "text": text,
                    "reference": reference,
                    "guidance": guidance,
                    "kind": "live" if check else "manual",
                    "check_code": check,
                    "order": position * 10,
                },
            )


class Migration(migrations.Migration):
    dependencies = [("compliance", "0001_initial")]

    operations = [migrations.RunPython(forwards, migrations.RunPython.noop)]
