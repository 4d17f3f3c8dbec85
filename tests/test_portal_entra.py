"""Entra ID sign-ins are linked by the immutable object id, and a first sign-in is matched by
email only when Entra vouches for the address (security review: the email claim was trusted
without verification)."""

from __future__ import annotations

import pytest
from social_django.utils import load_strategy

from gateway.portal.entra import EntraIDOAuth2
from gateway.portal.oidc import SignInRefused, require_verified_email

pytestmark = pytest.mark.django_db

CLAIMS = {
    "oid": "6f1c2d3e-0000-4000-8000-00000000abcd",
    "tid": "tenant-guid",
    "preferred_username": "alice@contoso.com",
    "email": "alice@contoso.com",
    "name": "Alice",
}


def backend(rf):
    from django.contrib.sessions.backends.db import SessionStore

    request = rf.get("/")
    request.session = SessionStore()
    return EntraIDOAuth2(load_strategy(request), redirect_uri="/oauth/complete/")


def test_the_link_is_the_object_id_not_the_changeable_sign_in_name(rf):
    entra = backend(rf)
    assert entra.get_user_id({}, CLAIMS) == CLAIMS["oid"]
    renamed = {**CLAIMS, "preferred_username": "bob@contoso.com"}
    assert entra.get_user_id({}, renamed) == CLAIMS["oid"]  # the same person
    impostor = {**CLAIMS, "oid": "another-object", "preferred_username": "alice@contoso.com"}
    assert entra.get_user_id({}, impostor) != CLAIMS["oid"]  # not Alice's link
    with pytest.raises(Exception, match="oid"):
        entra.get_user_id({}, {k: v for k, v in CLAIMS.items() if k != "oid"})


def test_a_first_sign_in_matches_by_email_only_when_entra_vouches_for_it(rf):
    entra = backend(rf)
    details = entra.get_user_details(CLAIMS)
    with pytest.raises(SignInRefused) as caught:
        require_verified_email(entra, details, CLAIMS)
    assert caught.value.reason == "email_not_verified"
    require_verified_email(entra, details, {**CLAIMS, "xms_edov": True})  # accepted
    # The sign-in name is never taken for the email.
    assert entra.get_user_details({**CLAIMS, "email": None})["email"] == ""
