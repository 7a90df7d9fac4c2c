"""Phone numbers in one form, E.164, everywhere: ingest stores it, erasure looks it up."""

from __future__ import annotations

import hashlib
import hmac


def to_e164(raw: str, default_region: str, *, valid_only: bool = True) -> str:
    """Normalise a number as written by a person or a workflow; ValueError if it is not one.

    "06 12 34 56 78" with region FR becomes "+33612345678". Ingest takes only numbers
    valid today (valid_only); erasure takes any number of a possible length, because
    the ranges a country assigns change, and a number recorded before must still be
    erasable. The error never repeats the number.
    """
    import phonenumbers

    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException:
        raise ValueError("is not a phone number") from None
    if valid_only and not phonenumbers.is_valid_number(number):
        raise ValueError("is not a valid phone number for its country")
    if not phonenumbers.is_possible_number(number):
        raise ValueError("is not a possible phone number for its country")
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def phone_hash(secret: bytes, phone_number: str) -> bytes:
    """HMAC-SHA256 of the E.164 number, keyed with ARCHIVE_INDEX_SECRET: how the
    archive's index, the erasure audit (the tombstone of a number) and replay name a
    number without keeping it."""
    return hmac.new(secret, phone_number.encode(), hashlib.sha256).digest()
