"""Who acts: a signed-in person (staff in the admin, a tenant's member in the portal), an API key
(a tenant's app, or one of its service accounts), someone not signed in (a data subject on the
public pages, a failed sign-in), or the platform itself (a Celery task, a management command).

Every service that changes governed data takes one as ``actor``; the audit log, and the
``created_by``-style columns, keep its ``label``, a frozen string that still says who it was
after the user or key is gone.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractUser, AnonymousUser

# The audit log's actor column (and every ``*_by`` column that copies it) is this long.
MAX_LABEL = 200


class ActorKind(StrEnum):
    USER = "user"
    API_KEY = "api_key"
    ANONYMOUS = "anonymous"
    SYSTEM = "system"


@dataclass(frozen=True, slots=True)
class Actor:
    kind: ActorKind
    label: str
    #: the person, for a ``USER`` actor (permission checks, sign-offs); None for the others
    user: AbstractUser | None = None

    @classmethod
    def for_user(cls, user: AbstractUser | AnonymousUser) -> Actor:
        """A signed-in person, recorded as ``user:<username>``."""
        # Imported here: this module is imported before the apps are loaded (the API's doors).
        from django.contrib.auth.models import AnonymousUser

        if isinstance(user, AnonymousUser):
            raise TypeError("only a signed-in user can act")
        return cls(ActorKind.USER, f"user:{user.get_username()}"[:MAX_LABEL], user)

    @classmethod
    def for_api_key(cls, *, key_id: int, name: str) -> Actor:
        """A tenant's API key, recorded as ``api_key:<name>#<id>`` (never a part of its
        secret)."""
        return cls(ActorKind.API_KEY, f"api_key:{name}#{key_id}"[:MAX_LABEL])

    @classmethod
    def anonymous(cls, label: str = "anonymous") -> Actor:
        """Someone not signed in, named by where they acted (``public_page``), never by their
        address: the audit log outlives an erasure."""
        return cls(ActorKind.ANONYMOUS, label[:MAX_LABEL])

    @classmethod
    def system(cls, name: str = "system") -> Actor:
        """The platform: a task (``system:backups``) or a command (``command:run_backup``)."""
        return cls(ActorKind.SYSTEM, name[:MAX_LABEL])

    def has_perm(self, permission: str) -> bool:
        """Whether the person holds ``permission``; never for a key, a visitor or the system."""
        return self.user is not None and self.user.has_perm(permission)

    def __str__(self) -> str:
        return self.label


SYSTEM = Actor.system()
