"""PII scrubbing: emails, phone numbers, payment cards (Luhn-checked) and IBANs become placeholders."""

from __future__ import annotations

import re

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
CARD = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b")
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]\d{2,4}){1,4}(?![\w])")


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


def scrub(text: str) -> str:
    """The text with every email, phone number, valid card number and valid IBAN replaced by a placeholder."""
    if not any(char.isdigit() or char == "@" for char in text):
        return text
    text = CARD.sub(_card, text)
    text = IBAN.sub(_iban, text)
    text = EMAIL.sub("[EMAIL]", text)
    return PHONE.sub(_phone, text)
