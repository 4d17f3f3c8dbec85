"""API key format and hashing: ``llmp_<lookup>_<secret>``.

The lookup part finds the row; the secret is checked against an HMAC-SHA256 made with a server
pepper, compared in constant time. An unknown lookup is checked against a dummy hash so it takes
as long as a wrong secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass
from functools import lru_cache

from django.conf import settings

PREFIX = "llmp_"
LOOKUP_LENGTH = 12
SECRET_LENGTH = 40
_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class NewKey:
    plaintext: str
    lookup: str
    secret_hash: str
    pepper_id: str
    last_four: str


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


@lru_cache(maxsize=8)
def _pepper_id(pepper: str) -> str:
    return hashlib.sha256(pepper.encode()).hexdigest()[:12]


def _peppers() -> dict[str, bytes]:
    peppers = [settings.API_KEY_PEPPER, *settings.API_KEY_PEPPERS_PREVIOUS]
    return {_pepper_id(p): p.encode() for p in peppers}


def current_pepper_id() -> str:
    return _pepper_id(settings.API_KEY_PEPPER)


def hash_secret(secret: str, pepper_id: str | None = None) -> str:
    peppers = _peppers()
    pepper = peppers.get(pepper_id or current_pepper_id())
    if pepper is None:
        # A key hashed with a pepper that is no longer configured can never match.
        pepper = b"retired-pepper"
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()


def generate() -> NewKey:
    lookup = _random(LOOKUP_LENGTH)
    secret = _random(SECRET_LENGTH)
    plaintext = f"{PREFIX}{lookup}_{secret}"
    return NewKey(
        plaintext=plaintext,
        lookup=lookup,
        secret_hash=hash_secret(secret),
        pepper_id=current_pepper_id(),
        last_four=secret[-4:],
    )


def split(token: str) -> tuple[str, str] | None:
    """(lookup, secret) of a well-formed key, or None."""
    if not token.startswith(PREFIX):
        return None
    body = token[len(PREFIX) :]
    lookup, sep, secret = body.partition("_")
    if not sep or len(lookup) != LOOKUP_LENGTH or len(secret) != SECRET_LENGTH:
        return None
    return lookup, secret


_DUMMY_HASH = "0" * 64


def verify(secret: str, stored_hash: str | None, pepper_id: str | None) -> bool:
    candidate = hash_secret(secret, pepper_id)
    return hmac.compare_digest(candidate, stored_hash or _DUMMY_HASH) and stored_hash is not None
