"""Every action the audit log records, in one place. The values are what the rows hold (and
what officers search for), so a value never changes; a new action is a new member.

Kept apart from ``llmplatform.audit`` so that ``AuditEvent`` can name them as its choices.
"""

from __future__ import annotations

from django.db import models


class AuditAction(models.TextChoices):
    # --- gateway: tenants, keys, service accounts, the cache, breakers
    TENANT_CREATE = "tenant.create"
    TENANT_SET_TIER = "tenant.set_tier"
    API_KEY_CREATE = "api_key.create"
    API_KEY_ROTATE = "api_key.rotate"
    API_KEY_REVOKE = "api_key.revoke"
    SERVICE_ACCOUNT_CREATE = "service_account.create"
    SERVICE_ACCOUNT_DISABLE = "service_account.disable"
    CACHE_INVALIDATE_ALIAS = "cache.invalidate_alias"
    CACHE_INVALIDATE_TENANT = "cache.invalidate_tenant"
    BREAKER_FORCE = "breaker.force"
    BREAKER_RESET = "breaker.reset"
    GUARDRAIL_SCANNER_ENABLE = "guardrail_scanner.enable"
    GUARDRAIL_SCANNER_DISABLE = "guardrail_scanner.disable"

    # --- gateway: configuration as code (apply_config)
    CONFIG_PROVIDER_CREATE = "config.provider.create"
    CONFIG_PROVIDER_UPDATE = "config.provider.update"
    CONFIG_DEPLOYMENT_CREATE = "config.deployment.create"
    CONFIG_DEPLOYMENT_UPDATE = "config.deployment.update"
    CONFIG_ALIAS_CREATE = "config.alias.create"
    CONFIG_ALIAS_UPDATE = "config.alias.update"
    CONFIG_ALIAS_DISABLE = "config.alias.disable"
    CONFIG_VERSION_CREATE = "config.version.create"
    CONFIG_VERSION_UPDATE = "config.version.update"
    CONFIG_TIER_CREATE = "config.tier.create"
    CONFIG_TIER_UPDATE = "config.tier.update"
    CONFIG_SCANNER_CREATE = "config.scanner.create"
    CONFIG_SCANNER_UPDATE = "config.scanner.update"

    # --- gateway: the demo's bootstrap (bootstrap_demo)
    TIER_CREATE = "tier.create"
    PROVIDER_CREATE = "provider.create"
    PROVIDER_UPDATE = "provider.update"
    PROVIDERDEPLOYMENT_CREATE = "providerdeployment.create"
    MODELALIAS_CREATE = "modelalias.create"
    MODELVERSION_CREATE = "modelversion.create"
    USER_CREATE_SUPERUSER = "user.create_superuser"

    # --- staff sign-in
    AUTH_LOGIN = "auth.login"
    AUTH_LOGIN_FAILED = "auth.login_failed"
    AUTH_LOCKOUT = "auth.lockout"
    AUTH_UNLOCK = "auth.unlock"
    AUTH_CLEANUP_EXPIRED_ATTEMPTS = "auth.cleanup_expired_attempts"
    OTP_DEVICE_ENROLMENT_ALLOWED = "otp_device.enrolment_allowed"
    OTP_DEVICE_ENROLL = "otp_device.enroll"
    OTP_DEVICE_RESET = "otp_device.reset"

    # --- the admin's own saves and deletes (AuditedModelAdmin: admin.<model>.<verb>, for
    # each audited model and each model of its inlines)
    ADMIN_USER_ADD = "admin.user.add"
    ADMIN_USER_CHANGE = "admin.user.change"
    ADMIN_USER_DELETE = "admin.user.delete"
    ADMIN_USER_SET_PASSWORD = "admin.user.set_password"  # noqa: S105 - an action, not a secret
    ADMIN_TOTPDEVICE_ADD = "admin.totpdevice.add"
    ADMIN_TOTPDEVICE_CHANGE = "admin.totpdevice.change"
    ADMIN_TOTPDEVICE_DELETE = "admin.totpdevice.delete"
    ADMIN_TENANT_ADD = "admin.tenant.add"
    ADMIN_TENANT_CHANGE = "admin.tenant.change"
    ADMIN_TENANT_DELETE = "admin.tenant.delete"
    ADMIN_MEMBERSHIP_ADD = "admin.membership.add"
    ADMIN_MEMBERSHIP_CHANGE = "admin.membership.change"
    ADMIN_MEMBERSHIP_DELETE = "admin.membership.delete"
    ADMIN_TENANTPLAN_ADD = "admin.tenantplan.add"
    ADMIN_TENANTPLAN_CHANGE = "admin.tenantplan.change"
    ADMIN_TENANTPLAN_DELETE = "admin.tenantplan.delete"
    ADMIN_TIER_ADD = "admin.tier.add"
    ADMIN_TIER_CHANGE = "admin.tier.change"
    ADMIN_TIER_DELETE = "admin.tier.delete"
    ADMIN_PROVIDER_ADD = "admin.provider.add"
    ADMIN_PROVIDER_CHANGE = "admin.provider.change"
    ADMIN_PROVIDER_DELETE = "admin.provider.delete"
    ADMIN_PROVIDERDEPLOYMENT_ADD = "admin.providerdeployment.add"
    ADMIN_PROVIDERDEPLOYMENT_CHANGE = "admin.providerdeployment.change"
    ADMIN_PROVIDERDEPLOYMENT_DELETE = "admin.providerdeployment.delete"
    ADMIN_MODELALIAS_ADD = "admin.modelalias.add"
    ADMIN_MODELALIAS_CHANGE = "admin.modelalias.change"
    ADMIN_MODELALIAS_DELETE = "admin.modelalias.delete"
    ADMIN_MODELVERSION_ADD = "admin.modelversion.add"
    ADMIN_MODELVERSION_CHANGE = "admin.modelversion.change"
    ADMIN_MODELVERSION_DELETE = "admin.modelversion.delete"
    ADMIN_ALIASFALLBACK_ADD = "admin.aliasfallback.add"
    ADMIN_ALIASFALLBACK_CHANGE = "admin.aliasfallback.change"
    ADMIN_ALIASFALLBACK_DELETE = "admin.aliasfallback.delete"
    ADMIN_GUARDRAILSCANNER_ADD = "admin.guardrailscanner.add"
    ADMIN_GUARDRAILSCANNER_CHANGE = "admin.guardrailscanner.change"
    ADMIN_GUARDRAILSCANNER_DELETE = "admin.guardrailscanner.delete"
    ADMIN_PRIVACYPOLICY_ADD = "admin.privacypolicy.add"
    ADMIN_PRIVACYPOLICY_CHANGE = "admin.privacypolicy.change"
    ADMIN_PRIVACYPOLICY_DELETE = "admin.privacypolicy.delete"
    ADMIN_CHECKLISTTEMPLATE_ADD = "admin.checklisttemplate.add"
    ADMIN_CHECKLISTTEMPLATE_CHANGE = "admin.checklisttemplate.change"
    ADMIN_CHECKLISTTEMPLATE_DELETE = "admin.checklisttemplate.delete"
    ADMIN_CHECKLISTTEMPLATEITEM_ADD = "admin.checklisttemplateitem.add"
    ADMIN_CHECKLISTTEMPLATEITEM_CHANGE = "admin.checklisttemplateitem.change"
    ADMIN_CHECKLISTTEMPLATEITEM_DELETE = "admin.checklisttemplateitem.delete"
    ADMIN_COMPLIANCEFRAMEWORK_ADD = "admin.complianceframework.add"
    ADMIN_COMPLIANCEFRAMEWORK_CHANGE = "admin.complianceframework.change"
    ADMIN_COMPLIANCEFRAMEWORK_DELETE = "admin.complianceframework.delete"
    ADMIN_COMPLIANCEITEM_ADD = "admin.complianceitem.add"
    ADMIN_COMPLIANCEITEM_CHANGE = "admin.complianceitem.change"
    ADMIN_COMPLIANCEITEM_DELETE = "admin.complianceitem.delete"

    # --- privacy: subjects, consent, keys, stored conversations
    PRIVACY_SUBJECT_REGISTER_EMAIL = "privacy.subject.register_email"
    PRIVACY_SUBJECT_ERASE = "privacy.subject.erase"
    PRIVACY_CONSENT_GRANT = "privacy.consent.grant"
    PRIVACY_CONSENT_WITHDRAW = "privacy.consent.withdraw"
    PRIVACY_SUBJECT_KEY_DESTROY = "privacy.subject_key.destroy"
    PRIVACY_MASTER_KEY_ROTATE = "privacy.master_key.rotate"
    PRIVACY_CONVERSATION_READ_PLAINTEXT = "privacy.conversation.read_plaintext"

    # --- privacy: data-subject requests
    SUBJECT_REQUEST_CREATE = "subject_request.create"
    SUBJECT_REQUEST_CODE_ISSUED = "subject_request.code_issued"
    SUBJECT_REQUEST_VERIFY = "subject_request.verify"
    SUBJECT_REQUEST_VERIFY_FAILED = "subject_request.verify_failed"
    SUBJECT_REQUEST_APPROVE = "subject_request.approve"
    SUBJECT_REQUEST_REJECT = "subject_request.reject"
    SUBJECT_REQUEST_EXTEND = "subject_request.extend"
    SUBJECT_REQUEST_EXPIRE = "subject_request.expire"
    SUBJECT_REQUEST_START = "subject_request.start"
    SUBJECT_REQUEST_COMPLETE = "subject_request.complete"
    SUBJECT_REQUEST_FAIL = "subject_request.fail"
    SUBJECT_REQUEST_EXPORT_DOWNLOAD = "subject_request.export_download"
    SUBJECT_REQUEST_EXPORT_EXPIRE = "subject_request.export_expire"

    # --- deployments: rollouts and their checklists (rollout.<RolloutStep.Action>)
    ROLLOUT_CREATED = "rollout.created"
    ROLLOUT_HEALTH_PROBE = "rollout.health_probe"
    ROLLOUT_STARTED = "rollout.started"
    ROLLOUT_ADVANCED = "rollout.advanced"
    ROLLOUT_PAUSED = "rollout.paused"
    ROLLOUT_RESUMED = "rollout.resumed"
    ROLLOUT_GATE_OVERRIDDEN = "rollout.gate_overridden"
    ROLLOUT_SWITCHED_BACK = "rollout.switched_back"
    ROLLOUT_ROLLED_BACK = "rollout.rolled_back"
    ROLLOUT_AUTO_ROLLED_BACK = "rollout.auto_rolled_back"
    ROLLOUT_COMPLETED = "rollout.completed"
    ROLLOUT_SIGNED_OFF = "rollout.signed_off"
    ROLLOUT_LOAD_TEST = "rollout.load_test"

    # --- deployments: compliance
    COMPLIANCE_EVIDENCE_RECHECK = "compliance.evidence_recheck"
    COMPLIANCE_ATTESTATION_CREATE = "compliance.attestation_create"
    COMPLIANCE_ATTESTATION_WITHDRAW = "compliance.attestation_withdraw"

    # --- deployments: backups, restores and the erasure ledger
    BACKUP_REQUEST = "backups.backup.request"
    BACKUP_START = "backups.backup.start"
    BACKUP_SUCCEED = "backups.backup.succeed"
    BACKUP_FAIL = "backups.backup.fail"
    BACKUP_DELETE = "backups.backup.delete"
    BACKUP_RECONCILE = "backups.backup.reconcile"
    BACKUP_DRILL_REQUEST = "backups.drill.request"
    BACKUP_DRILL_RUN = "backups.drill.run"
    BACKUP_RESTORE_RUN = "backups.restore.run"
    BACKUP_PITR_SUCCEED = "backups.pitr_backup.succeed"
    BACKUP_PITR_FAIL = "backups.pitr_backup.fail"
    ERASURE_LEDGER_REPLAY = "backups.erasure_ledger.replay"
    ERASURE_LEDGER_PRUNE = "backups.erasure_ledger.prune"


def audit_action_choices() -> list[tuple[str, str]]:
    """``AuditEvent.action``'s choices: each code as its own label (officers read and search
    the codes). A callable, so a new action needs no migration."""
    return [(action.value, action.value) for action in AuditAction]
