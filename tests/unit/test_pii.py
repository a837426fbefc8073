"""PII detection on a labelled corpus: true positives and near misses; precision and recall."""

from __future__ import annotations

from broker.tenancy.pii import Redactor, detect

# (text, the kinds that must be found in it)
CORPUS: list[tuple[str, list[str]]] = [
    ("Contact me at jane.doe+work@example.co.uk tomorrow", ["EMAIL"]),
    ("mail: ops@llm-edge.io", ["EMAIL"]),
    ("Call +1 415-555-0199 or (212) 555-0143", ["PHONE", "PHONE"]),
    ("my number is 415.555.0172", ["PHONE"]),
    ("UK office +44 20 7946 0958", ["PHONE"]),
    ("SSN 123-45-6789 on file", ["SSN"]),
    ("card 4111 1111 1111 1111 exp 12/29", ["CREDIT_CARD"]),
    ("pay with 5500-0000-0000-0004", ["CREDIT_CARD"]),
    ("amex 378282246310005", ["CREDIT_CARD"]),
    ("server at 192.168.10.24 is down", ["IPV4"]),
    ("v6 address 2001:db8:85a3::8a2e:370:7334 responds", ["IPV6"]),
    ("fe80::1ff:fe23:4567:890a%eth0", ["IPV6"]),
    ("IBAN GB82 WEST 1234 5698 7654 32 please", ["IBAN"]),
    ("DE89370400440532013000", ["IBAN"]),
    ("key sk-proj-abcdefghijklmnopqrstuvwx0123 leaked", ["SECRET"]),
    ("aws AKIAIOSFODNN7EXAMPLE here", ["SECRET"]),
    ("token ghp_0123456789abcdefghijklmnopqrstuvwxyzAB", ["SECRET"]),
    ("Authorization: Bearer abcdef0123456789abcdef0123456789", ["BEARER"]),
    (
        "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."
        "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        ["JWT"],
    ),
    (
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\n-----END RSA PRIVATE KEY-----",
        ["PRIVATE_KEY"],
    ),
    # near misses: none of these is PII
    ("Order #4111-2222-3333 shipped on 2024-05-17", []),
    ("Invoice 1234567890123 (not a card: fails Luhn)", []),
    ("Released version 10.2.3.4 of the app; build 2.0.1", []),
    ("Meeting at 10:30 on 12/05/2024, room 4-12", []),
    ("ISBN 978-3-16-148410-0", []),
    ("The ratio was 3.14159 and 2.71828", []),
    ("IP-like 999.300.1.1 is not valid", []),
    ("tracking 1Z999AA10123456784", []),
    ("ticket 000-00-0000 placeholder", []),
    ("see https://example.com/path?id=123", []),
    ("hex 0xdeadbeef and time 12:34:56", []),
    ("the sk- prefix alone: sk-short", []),
]


def test_precision_and_recall_on_the_corpus() -> None:
    """Precision and recall on true positives and near misses are both >= 0.95."""
    tp = fp = fn = 0
    misses = []
    for text, expected in CORPUS:
        found = sorted(f.kind for f in detect(text))
        want = sorted(expected)
        for kind in set(found) | set(want):
            hits = min(found.count(kind), want.count(kind))
            tp += hits
            fp += found.count(kind) - hits
            fn += want.count(kind) - hits
        if found != want:
            misses.append((text, found, want))
    precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    print(f"PII corpus: precision {precision:.3f}, recall {recall:.3f}, tp={tp} fp={fp} fn={fn}")
    assert precision >= 0.95, misses
    assert recall >= 0.95, misses


def test_redaction_uses_stable_typed_placeholders() -> None:
    """The same value keeps its placeholder; different values are numbered."""
    redactor = Redactor()
    first = redactor.redact("mail a@x.com and b@y.org, then a@x.com again")
    assert first == "mail [EMAIL_1] and [EMAIL_2], then [EMAIL_1] again"
    assert redactor.redact("write to b@y.org") == "write to [EMAIL_2]"
