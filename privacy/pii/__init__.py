"""PII detection, redaction and reversible pseudonymisation, offline and without a model.

>>> from privacy.pii import detect, redact
>>> redact("Mail alice@example.org")
'Mail <EMAIL>'
"""

from __future__ import annotations

from .detector import detect, redact, warm_up
from .entities import (
    CREDIT_CARD,
    DATE_OF_BIRTH,
    EMAIL,
    ENTITY_TYPES,
    IBAN,
    IP_ADDRESS,
    PASSPORT,
    PERSON,
    PHONE,
    SECRET,
    STREET_ADDRESS,
    US_SSN,
    DetectorError,
    Entity,
)
from .pseudonymize import Pseudonymizer, StreamRestorer

__all__ = [
    "CREDIT_CARD",
    "DATE_OF_BIRTH",
    "EMAIL",
    "ENTITY_TYPES",
    "IBAN",
    "IP_ADDRESS",
    "PASSPORT",
    "PERSON",
    "PHONE",
    "SECRET",
    "STREET_ADDRESS",
    "US_SSN",
    "DetectorError",
    "Entity",
    "Pseudonymizer",
    "StreamRestorer",
    "detect",
    "redact",
    "warm_up",
]
