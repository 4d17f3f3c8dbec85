"""The PII detector as a user of the gateway meets it: what it finds in ordinary sentences, what
it leaves alone, redaction, reversible pseudonymisation (also streamed and in tool-call
arguments), the ``detect_pii`` command, and hostile input."""

from __future__ import annotations

import itertools
import json
import time
from io import StringIO

import pytest
from django.core.management import call_command

from privacy import pii
from privacy.pii import DetectorError, Entity, Pseudonymizer, detect, redact
from privacy.pii import detector as detector_module

PRIVATE_KEY = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEA7bq9mFq3cVw1nHqJ0k2Zr9sX4tYw\n"
    "q3cVw1nHqJ0k2Zr9sX4tYwMIIEowIBAAKCAQEA7bq9mF\n"
    "-----END RSA PRIVATE KEY-----"
)

# (type, sentence, the value that must be found)
FOUND = [
    ("EMAIL", "Please reply to jane.doe+billing@example.co.uk before Friday.",
     "jane.doe+billing@example.co.uk"),
    ("PHONE", "You can reach me on (415) 867-5309 after 6pm.", "(415) 867-5309"),
    ("PHONE", "Call me at +44 20 7946 0958 tomorrow morning.", "+44 20 7946 0958"),
    ("US_SSN", "My SSN is 536-22-8726, please keep it private.", "536-22-8726"),
    ("CREDIT_CARD", "Charge it to 4111 1111 1111 1111, expiry 09/27.", "4111 1111 1111 1111"),
    ("CREDIT_CARD", "card number 5500005555555559 was declined", "5500005555555559"),
    ("IBAN", "Wire it to DE89 3704 0044 0532 0130 00 please.", "DE89 3704 0044 0532 0130 00"),
    ("IBAN", "my iban is gb82west12345698765432 thanks", "gb82west12345698765432"),
    ("IP_ADDRESS", "The server at 203.0.113.42 keeps timing out.", "203.0.113.42"),
    ("IP_ADDRESS", "Ping 2001:db8::8a2e:370:7334 from the bastion.", "2001:db8::8a2e:370:7334"),
    ("SECRET", "export AWS_ACCESS_KEY_ID=AKIA4J2Q7Z5XW3N8B6RT", "AKIA4J2Q7Z5XW3N8B6RT"),
    ("SECRET", "the token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 leaked",
     "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"),
    ("SECRET", "DATABASE_URL=postgres://admin:s3cr3t-pw@db.internal:5432/app",
     "admin:s3cr3t-pw"),
    ("SECRET", "the wifi password: Tr0ub4dor&3 is on the fridge", "Tr0ub4dor&3"),
    ("SECRET", f"Here is my key:\n{PRIVATE_KEY}\nthanks", PRIVATE_KEY),
    ("DATE_OF_BIRTH", "I was born on 14 March 1987 in Leeds.", "14 March 1987"),
    ("DATE_OF_BIRTH", "Date of birth: 03/07/1991", "03/07/1991"),
    ("PASSPORT", "My passport number is 533380006, expiring next year.", "533380006"),
    ("PERSON", "Hi, my name is Margaret Thornton and I need help with my order.",
     "Margaret Thornton"),
    ("PERSON", "Please forward this to Dr. Okonkwo before noon.", "Okonkwo"),
    ("PERSON", "i lost my card, my name is lena andersson", "lena andersson"),
    ("STREET_ADDRESS", "Send it to 1600 Pennsylvania Avenue, Washington, DC 20500.",
     "1600 Pennsylvania Avenue"),
    ("STREET_ADDRESS", "Ich wohne in der Hauptstraße 12, 10115 Berlin.", "Hauptstraße 12"),
]  # fmt: skip


@pytest.mark.parametrize(("entity_type", "sentence", "value"), FOUND)
def test_it_finds_each_type_in_a_realistic_sentence(entity_type, sentence, value):
    found = [(e.type, sentence[e.start : e.end]) for e in detect(sentence)]
    matches = [text for kind, text in found if kind == entity_type]
    assert any(value in text for text in matches), found


@pytest.mark.parametrize(
    "sentence",
    [
        "Charge it to 4111 1111 1111 1112, expiry 09/27.",  # Luhn check fails
        "card number 5500005555555558 was declined",
    ],
)
def test_it_does_not_take_a_number_failing_luhn_for_a_card(sentence):
    assert "CREDIT_CARD" not in {e.type for e in detect(sentence)}


@pytest.mark.parametrize(
    "sentence",
    [
        "Wire it to DE88 3704 0044 0532 0130 00 please.",  # check digits wrong
        "my iban is gb82west12345698765433 thanks",
        "Wire it to DE89 3704 0044 0532 0130 0 please.",  # one digit short for Germany
    ],
)
def test_it_does_not_take_an_iban_with_a_bad_checksum_or_length(sentence):
    assert "IBAN" not in {e.type for e in detect(sentence)}


@pytest.mark.parametrize("ssn", ["000-12-3456", "666-12-3456", "912-12-3456", "123-00-4567"])
def test_it_does_not_take_never_issued_numbers_for_an_ssn(ssn):
    assert "US_SSN" not in {e.type for e in detect(f"My SSN is {ssn}.")}


@pytest.mark.parametrize(
    "sentence",
    [
        "Upgrade to Python 3.11.7 and Django 5.2 before 2025-01-31.",
        "Will you grant me access? May I ask why the build failed?",
        "We shipped 1,234,567 units in Q3; see ticket #4521 and version 10.2.3.4 notes.",
        "The meeting moved to 10:30 on 12/03/2024, room 4.",
        "api_key = os.environ.get('OPENAI_API_KEY')",
        "Summarise this article about the history of the printing press in Europe.",
    ],
)
def test_ordinary_chat_text_has_no_pii(sentence):
    assert detect(sentence) == []


def test_entities_are_sorted_and_do_not_overlap():
    text = (
        "Mr. Peter Novak (peter.novak@example.com, +1 415 867 5309) lives at "
        "24 Clarke Avenue, Springfield. Card 4111-1111-1111-1111, SSN 536-22-8726."
    )
    entities = detect(text)
    assert [e.type for e in entities] == [
        "PERSON", "EMAIL", "PHONE", "STREET_ADDRESS", "CREDIT_CARD", "US_SSN",
    ]  # fmt: skip
    for before, after in itertools.pairwise(entities):
        assert before.end <= after.start


def test_only_the_asked_for_types_are_reported():
    text = "Mail peter.novak@example.com or call +1 415 867 5309."
    assert [e.type for e in detect(text, types={"PHONE"})] == ["PHONE"]
    assert detect(text, types=()) == []


def test_redacted_text_contains_none_of_the_detected_values():
    text = (
        "Dear Ms. Ingrid Svensson, your card 4111 1111 1111 1111 and IBAN "
        "DE89 3704 0044 0532 0130 00 are on file; we will write to ingrid@example.se "
        "or 12 Main Street, Springfield. Your server 198.51.100.7 uses token "
        "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789."
    )
    entities = detect(text)
    redacted = redact(text, entities)
    assert len(entities) >= 7
    for entity in entities:
        assert text[entity.start : entity.end] not in redacted
        assert f"<{entity.type}>" in redacted
    assert redacted.startswith("Dear Ms. <PERSON>, your card <CREDIT_CARD> and IBAN")
    assert redact(text) == redacted  # detects by itself when not given entities


def test_unknown_types_are_an_error():
    with pytest.raises(DetectorError):
        detect("hello", types={"SHOE_SIZE"})
    with pytest.raises(DetectorError):
        Pseudonymizer(types={"SHOE_SIZE"})


def test_a_failing_recogniser_raises_detector_error_without_the_text(monkeypatch):
    def broken(text):
        raise ValueError(f"could not parse {text!r}")

    recognizers = list(detector_module.RECOGNIZERS)
    _, reports, always = recognizers[0]
    recognizers[0] = (broken, reports, always)
    monkeypatch.setattr(detector_module, "RECOGNIZERS", tuple(recognizers))
    with pytest.raises(DetectorError) as caught:
        detect("my email is secret.person@example.org")
    assert "secret.person" not in str(caught.value)
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_a_non_string_is_an_error():
    with pytest.raises(DetectorError):
        detect(b"bytes are not text")  # type: ignore[arg-type]


# --- pseudonymisation ----------------------------------------------------------------------


def test_pseudonymize_and_restore_round_trip_across_messages():
    p = Pseudonymizer()
    first = p.pseudonymize("I am Ingrid Svensson, mail me at ingrid@example.se.")
    second = p.pseudonymize("Again: ingrid@example.se, and bob@example.org too.")
    assert "ingrid@example.se" not in first + second
    assert "<EMAIL_1>" in first and "<PERSON_1>" in first
    # The same value keeps its placeholder; a new one gets the next number.
    assert second == "Again: <EMAIL_1>, and <EMAIL_2> too."
    assert p.mapping == {
        "<PERSON_1>": "Ingrid Svensson",
        "<EMAIL_1>": "ingrid@example.se",
        "<EMAIL_2>": "bob@example.org",
    }
    reply = "Sure <PERSON_1>, I wrote to <EMAIL_2> and to <EMAIL_1>."
    assert p.restore(reply) == (
        "Sure Ingrid Svensson, I wrote to bob@example.org and to ingrid@example.se."
    )


def test_restore_leaves_unknown_and_user_written_placeholders_alone():
    p = Pseudonymizer()
    text = p.pseudonymize("My template uses <EMAIL_1>; my own address is ann@example.org")
    assert "<EMAIL_1>" in text  # the user's literal text
    assert p.mapping == {"<EMAIL_2>": "ann@example.org"}
    assert p.restore("<EMAIL_1> <EMAIL_2> <PHONE_9>") == "<EMAIL_1> ann@example.org <PHONE_9>"


def test_only_the_tenants_types_are_pseudonymized():
    p = Pseudonymizer(types={"EMAIL"})
    assert p.pseudonymize("Ingrid Svensson, ingrid@example.se") == "Ingrid Svensson, <EMAIL_1>"


def test_stream_restorer_holds_back_a_placeholder_split_across_chunks():
    p = Pseudonymizer()
    p.pseudonymize("Write to ingrid@example.se and call +1 415 867 5309")
    restorer = p.stream_restorer()
    chunks = ["Sure! I will write to <EMA", "IL_1> tomorrow and call <", "PHONE_1", "> at 5 < 6"]
    emitted = [restorer.feed(chunk) for chunk in chunks]
    assert "<EMA" not in emitted[0]
    assert emitted[0] == "Sure! I will write to "
    out = "".join(emitted) + restorer.flush()
    assert out == (
        "Sure! I will write to ingrid@example.se tomorrow and call +1 415 867 5309 at 5 < 6"
    )


def test_stream_restorer_flushes_an_unfinished_placeholder_as_it_is():
    p = Pseudonymizer()
    p.pseudonymize("ingrid@example.se")
    restorer = p.stream_restorer()
    assert restorer.feed("bye <EMAIL_") == "bye "
    assert restorer.flush() == "<EMAIL_"


def test_placeholders_in_tool_call_arguments_are_restored_as_valid_json():
    p = Pseudonymizer()
    prompt = p.pseudonymize(
        'Ship to "Ingrid Svensson" at 24 Clarke Avenue\nSpringfield, mail ingrid@example.se'
    )
    assert "ingrid@example.se" not in prompt
    address = p.mapping["<STREET_ADDRESS_1>"]
    assert "\n" in address  # restoring it raw would break the JSON string
    arguments = json.dumps({"to": "<EMAIL_1>", "address": "<STREET_ADDRESS_1>"})
    restored = json.loads(p.restore_json(arguments))
    assert restored == {"to": "ingrid@example.se", "address": address}
    # Some serializers escape "<" and ">".
    escaped = '{"to": "\\u003cEMAIL_1\\u003e"}'
    assert json.loads(p.restore_json(escaped)) == {"to": "ingrid@example.se"}


def test_streamed_tool_call_arguments_are_restored_across_chunks():
    p = Pseudonymizer()
    p.pseudonymize("mail ingrid@example.se")
    arguments = '{"to": "<EMAIL_1>", "cc": "\\u003cEMAIL_1\\u003e"}'  # cc escaped, as some do
    restorer = p.stream_restorer(json_string=True)
    out = "".join(restorer.feed(arguments[i : i + 5]) for i in range(0, len(arguments), 5))
    out += restorer.flush()
    assert json.loads(out) == {"to": "ingrid@example.se", "cc": "ingrid@example.se"}


def test_pseudonymize_fails_closed_when_detection_fails(monkeypatch):
    def broken(text, types=None):
        raise DetectorError("PII recogniser failed (ValueError)")

    monkeypatch.setattr("privacy.pii.pseudonymize.detect", broken)
    with pytest.raises(DetectorError):
        Pseudonymizer().pseudonymize("ingrid@example.se")


# --- the detect_pii command ----------------------------------------------------------------


def test_detect_pii_writes_the_documented_fields_for_each_line(tmp_path):
    source = tmp_path / "in.jsonl"
    lines = [
        {"id": 1, "text": "Mail me at alice@example.org or call +1 415 867 5309"},
        {"id": "b", "text": "Nothing personal here."},
    ]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    output = tmp_path / "out.jsonl"
    call_command("detect_pii", str(source), output=str(output), stderr=StringIO())
    results = [json.loads(line) for line in output.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in results] == [1, "b"]
    first = results[0]
    assert set(first) == {"id", "entities", "redacted"}
    assert [set(e) for e in first["entities"]] == [{"type", "start", "end"}] * 2
    text = lines[0]["text"]
    email = first["entities"][0]
    assert (email["type"], text[email["start"] : email["end"]]) == ("EMAIL", "alice@example.org")
    assert first["redacted"] == "Mail me at <EMAIL> or call <PHONE>"
    assert results[1] == {"id": "b", "entities": [], "redacted": "Nothing personal here."}


def test_detect_pii_reports_a_malformed_line_and_goes_on(tmp_path):
    source = tmp_path / "in.jsonl"
    source.write_text(
        '{"id": 1, "text": "ssn 536-22-8726"}\n'
        "this is not json, says jane@example.org\n"
        '{"id": 3}\n'
        '{"id": 4, "text": 42}\n'
        "\n"
        '{"id": 5, "text": "ok"}\n',
        encoding="utf-8",
    )
    stdout = StringIO()
    call_command("detect_pii", str(source), stdout=stdout, stderr=StringIO())
    results = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert [r.get("error") for r in results] == [
        None, "not valid JSON", "no 'text' field", "'text' is not a string", None,
    ]  # fmt: skip
    assert results[1]["line"] == 2
    assert "jane@example.org" not in stdout.getvalue()  # errors never quote the input
    assert results[4] == {"id": 5, "entities": [], "redacted": "ok"}


# --- hostile input -------------------------------------------------------------------------

HOSTILE = {
    "one long word": "a" * 1_000_000,
    "digits and spaces": "1 " * 500_000,
    "at signs": "a@" * 500_000,
    "long local parts": ("x" * 60 + "@") * 16_000,
    "key headers with no end": "-----BEGIN PRIVATE KEY-----\n" * 35_000,
    "capitalised words": "Aa Bb " * 160_000,
    "street-like": "12 Main Street " * 66_000,
    "iban-like": "GB82 " * 200_000,
    "colons": "a:" * 500_000,
    "assignments": "password: " * 100_000,
    "read-out digits after phone words": "call me five five " * 55_000,
    "spaced digits after phone words": "phone 1 2 3 4 " * 70_000,
    "passport words": "passport AB1234567 " * 52_000,
    "birth words": "born on 1 May 1990 " * 52_000,
    "birth words and years in words": "born on the first of May nineteen " * 30_000,
    "URL credentials": "://a:b@" * 140_000,
    "Japanese address-like": "東京都渋谷区1-" * 110_000,
}


@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_input_of_a_megabyte_is_scanned_in_linear_time(text):
    pii.warm_up()
    started = time.process_time()
    entities = detect(text)
    elapsed = time.process_time() - started
    # Linear scans take well under a few seconds per megabyte here; quadratic behaviour on a
    # megabyte takes minutes.
    assert elapsed < 15, elapsed
    assert all(isinstance(e, Entity) for e in entities)
