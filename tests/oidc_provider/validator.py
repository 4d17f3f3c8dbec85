from __future__ import annotations

from oauth2_provider.oauth2_validators import OAuth2Validator

# Users in this group get email_verified=false, like an address the provider never confirmed.
UNVERIFIED_GROUP = "email-unverified"


class ClaimsValidator(OAuth2Validator):
    """Standard claims from the Django user; released by scope (profile, email) as usual."""

    def get_additional_claims(self, request):
        user = request.user
        return {
            "preferred_username": user.username,
            "name": user.get_full_name() or user.username,
            "given_name": user.first_name,
            "family_name": user.last_name,
            "email": user.email,
            "email_verified": not user.groups.filter(name=UNVERIFIED_GROUP).exists(),
        }
