"""PII scrubbing: emails, phone numbers, payment cards (Luhn-checked) and IBANs become placeholders."""

from __future__ import annotations

import re

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
CARD = re.compile(r"(?<![\d+-])\d(?:[ -]?\d){12,18}(?![\d-])")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
# International (+country code, then groups of 1-6 digits as countries write them) or national ((area) and 2-4 digit
# groups); the digit count is checked in _phone.
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}(?:[ .-]?\(\d{1,4}\))?(?:[ .-]\d{1,6}){1,6}|\+\d{8,15}"
                   r"|(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4})(?![\w])")


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char)
        if position % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def iban_valid(candidate: str) -> bool:
    compact = candidate.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    rearranged = compact[4:] + compact[:4]
    return int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group())
    return "[CARD]" if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group()


def _iban(match: re.Match[str]) -> str:
    return "[IBAN]" if iban_valid(match.group()) else match.group()


def _phone(match: re.Match[str]) -> str:
    text = match.group()
    digits = sum(char.isdigit() for char in text)
    # A phone number has 9-15 digits; dates, amounts and years in running text have fewer or no separators.
    looks_like_date = re.fullmatch(r"\d{4}-\d{2}-\d{2}", text) is not None
    return "[PHONE]" if 9 <= digits <= 15 and not looks_like_date else text


IBAN_START = re.compile(r"[A-Z][A-Z][0-9][0-9]")
ASCII_DIGITS = b"0123456789"


def scrub(text: str) -> str:
    """The text with every email, phone number, valid card number and valid IBAN replaced by a placeholder.

    Each pattern runs only where it can match: an email needs "@", a card 13 or more digits, a phone number nine,
    an IBAN a country code and two check digits. Most text runs none of them."""
    if not text.isascii():  # the patterns' \d also matches other scripts' digits: run them all
        digits = 19
    else:
        encoded = text.encode("ascii")
        digits = len(encoded) - len(encoded.translate(None, ASCII_DIGITS))
    if digits >= 13:
        text = CARD.sub(_card, text)
    if digits >= 2 and (digits >= 19 or IBAN_START.search(text)):
        text = IBAN.sub(_iban, text)
    if "@" in text:
        text = EMAIL.sub("[EMAIL]", text)
    return PHONE.sub(_phone, text) if digits >= 9 else text
