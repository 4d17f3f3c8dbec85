"""The result type of the detector and the names of the entity types it knows."""

from __future__ import annotations

from dataclasses import dataclass

EMAIL = "EMAIL"
PHONE = "PHONE"
US_SSN = "US_SSN"
CREDIT_CARD = "CREDIT_CARD"
IBAN = "IBAN"
IP_ADDRESS = "IP_ADDRESS"
SECRET = "SECRET"  # noqa: S105 - the name of an entity type
DATE_OF_BIRTH = "DATE_OF_BIRTH"
PASSPORT = "PASSPORT"
PERSON = "PERSON"
STREET_ADDRESS = "STREET_ADDRESS"

ENTITY_TYPES: frozenset[str] = frozenset(
    {
        EMAIL,
        PHONE,
        US_SSN,
        CREDIT_CARD,
        IBAN,
        IP_ADDRESS,
        SECRET,
        DATE_OF_BIRTH,
        PASSPORT,
        PERSON,
        STREET_ADDRESS,
    }
)


@dataclass(frozen=True, slots=True)
class Entity:
    """One detected value: ``text[start:end]`` is of ``type``; ``score`` in (0, 1] says how
    sure the recogniser is (checksummed identifiers near 1, name heuristics lower)."""

    type: str
    start: int
    end: int
    score: float


class DetectorError(Exception):
    """The detector failed. Callers fail closed: the text is neither stored nor sent.

    The message never contains the text being scanned."""
