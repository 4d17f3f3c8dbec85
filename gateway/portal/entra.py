"""Microsoft Entra ID (one directory) for the portal: social-core's v2 tenant backend, matched on
the immutable object id.

social-core's ``azuread-v2-tenant-oauth2`` identifies a person by ``preferred_username`` and
takes it as their email. That claim is a sign-in name a directory administrator (and, for
guest and some synced accounts, the person) can change, and it is not a verified mailbox: a
renamed or re-created account could take over another person's portal link. Here:

- the stored link is the ``oid`` claim (the object id, which never changes for an account and
  is never reused within the directory; the directory itself is checked by ``tid``);
- the email used to match a *first* sign-in to an existing portal account is the ``email``
  claim, and only when Entra says its domain is verified by the directory's owner
  (``xms_edov``, an optional claim the app registration must ask for); otherwise the first
  sign-in is refused and an administrator links the account explicitly (a "User social auth"
  row in the admin with the person's object id).
"""

from __future__ import annotations

from typing import Any

from social_core.backends.azuread_tenant import AzureADV2TenantOAuth2
from social_core.exceptions import AuthMissingParameter


class EntraIDOAuth2(AzureADV2TenantOAuth2):
    name = "azuread-v2-tenant-oauth2"

    def get_user_id(self, details: dict[str, Any], response: dict[str, Any]) -> str:
        oid = response.get("oid")
        if not isinstance(oid, str) or not oid:
            raise AuthMissingParameter(self, "oid")
        return oid

    def get_user_details(self, response: dict[str, Any]) -> dict[str, Any]:
        details = super().get_user_details(response)
        details["email"] = response.get("email") or ""
        return details


def email_verified(response: dict[str, Any]) -> bool:
    """Entra's own word that the email's domain belongs to the directory (``xms_edov``)."""
    claim = response.get("xms_edov")
    return claim is True or str(claim).lower() in {"true", "1"}
