"""PII never reaches the store: emails, phones, Luhn-valid cards and valid IBANs are replaced; look-alikes stay."""

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from roleforge.ingest.pii import luhn_valid, scrub


@pytest.mark.parametrize(("text", "expected"), [
    ("mail jane.doe+x@example.co.uk now", "mail [EMAIL] now"),
    ("call +1 415 555 0199 today", "call [PHONE] today"),
    ("call (030) 1234-5678", "call [PHONE]"),
    ("card 4111 1111 1111 1111 on file", "card [CARD] on file"),
    ("card 4111-1111-1111-1111", "card [CARD]"),
    ("iban DE89 3704 0044 0532 0130 00 ok", "iban [IBAN] ok"),
])
def test_pii_is_replaced(text, expected):
    assert scrub(text) == expected


@pytest.mark.parametrize("text", [
    "Revenue grew 12% to $4.8M in 2026.", "Meet on 2026-12-01 at 10:30.", "What is 417 * 23?",
    "card-like 4111 1111 1111 1112 fails Luhn", "Order 12345 shipped", "DE00 1234 5678 9012 3456 78 is not valid",
    "Calendar entry: Tax deadline, 2027-12-26 16:15.", "Hold 2026-06-22 16.15 for the car service",
    'Action: {"date": "2027-07-21", "time": "09:00"}', "Booked for 2026-12-21T10:30:00Z.",
])
def test_ordinary_text_is_untouched(text):
    assert scrub(text) == text


def test_luhn():
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")


def reference_scrub(text: str) -> str:
    """Every pattern on every text, in order: what `scrub` must equal however it skips work."""
    from roleforge.ingest import pii

    text = pii.CARD.sub(pii._card, text)
    text = pii.IBAN.sub(pii._iban, text)
    text = pii.EMAIL.sub("[EMAIL]", text)
    return pii.PHONE.sub(pii._phone, text)


pieces = st.sampled_from(["call ", "+49 ", "(030) ", "1234", "-", " ", "5678 ", "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00",
                          "GB82WEST12345698765432", "a@b.io", "x.y@mail.example.com", "2026-11-22", "2026-11-22 16:15", ".(", ") ",
                          "\u0663\u0664\u0665", "IBAN ", "no "])


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.text(max_size=40), st.lists(pieces, max_size=8).map("".join)))
def test_skipping_patterns_never_changes_the_result(text):
    assert scrub(text) == reference_scrub(text)


CORPUS = Path(__file__).parent / "data" / "pii_corpus.jsonl"


def test_labelled_corpus_recall_and_false_positives():
    """Every labelled PII item becomes its placeholder (recall) and no PII-free text changes (false positives)."""
    import json

    rows = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    expected = sum(len(row["pii"]) for row in rows)
    found = missed = 0
    changed_clean = []
    for row in rows:
        scrubbed = scrub(row["text"])
        if not row["pii"]:
            if scrubbed != row["text"]:
                changed_clean.append(row["text"])
            continue
        for kind in set(row["pii"]):
            hits = min(scrubbed.count(f"[{kind}]"), row["pii"].count(kind))
            found, missed = found + hits, missed + row["pii"].count(kind) - hits
    clean = sum(not row["pii"] for row in rows)
    assert (expected, clean) == (38, 30)
    assert found / expected == 1.0, f"recall {found}/{expected}"
    assert changed_clean == [], f"false positives: {len(changed_clean)}/{clean}"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.just(""), st.text(max_size=30), st.lists(pieces, max_size=6).map("".join)),
                min_size=60, max_size=120))
def test_scrubbing_many_texts_at_once_is_scrubbing_each(texts):
    from roleforge.ingest.pii import scrub_all

    assert scrub_all(texts) == [scrub(text) for text in texts]
