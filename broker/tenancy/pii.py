"""PII and secret detection and redaction, in process (no external service).

Each detector is a regex plus, where the format has one, a checksum or range check that
turns near misses away: card numbers must pass Luhn, IBANs mod-97, IPv4 octets must be
<= 255, SSNs must not use never-issued areas. Redaction replaces each distinct value with a
typed placeholder (``[EMAIL_1]``); the same value gets the same placeholder within a request,
so the model still sees which mentions are the same person.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Finding", "PiiMode", "Redactor", "detect"]


class PiiMode(enum.StrEnum):
    """Per-tenant handling of PII in requests."""

    OFF = "off"
    REDACT = "redact"
    BLOCK = "block"


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _card(match: str) -> bool:
    digits = re.sub(r"[ -]", "", match)
    return 13 <= len(digits) <= 19 and len(set(digits)) > 1 and _luhn(digits)


def _iban(match: str) -> bool:
    compact = match.replace(" ", "").upper()
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(c, 36)) for c in rearranged)
    return 15 <= len(compact) <= 34 and int(number) % 97 == 1


def _ipv4(match: str) -> bool:
    return all(int(part) <= 255 for part in match.split(".")) and not match.startswith("0.")


def _ipv6(match: str) -> bool:
    try:
        return match.count(":") >= 2 and ipaddress.IPv6Address(match) is not None
    except ValueError:
        return False


def _ssn(match: str) -> bool:
    area, group, serial = match.split("-")
    return (
        area not in {"000", "666"}
        and not area.startswith("9")
        and group != "00"
        and serial != "0000"
    )


@dataclass(frozen=True, slots=True)
class _Detector:
    kind: str
    pattern: re.Pattern[str]
    check: Callable[[str], bool] | None = None


_DETECTORS = (
    _Detector(
        "PRIVATE_KEY",
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]+?-----END [A-Z ]*PRIVATE KEY-----"),
    ),
    _Detector(
        "JWT", re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
    ),
    _Detector(
        "SECRET",
        re.compile(
            r"\b(?:sk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{36,}"
            r"|xox[baprs]-[A-Za-z0-9-]{10,})"
        ),
    ),
    _Detector("BEARER", re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]{20,}")),
    _Detector(
        "EMAIL",
        re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
    ),
    _Detector(
        "IBAN", re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?\b"), _iban
    ),
    _Detector("CREDIT_CARD", re.compile(r"\b(?:\d[ -]?){12,18}\d\b"), _card),
    _Detector("SSN", re.compile(r"\b\d{3}-\d{2}-\d{4}\b"), _ssn),
    _Detector(
        "IPV6",
        re.compile(
            r"(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){2,7}[0-9A-Fa-f]{1,4}(?![\w:])"
            r"|(?<![\w:])(?:[0-9A-Fa-f]{1,4}:){1,7}:(?:[0-9A-Fa-f]{1,4}(?::[0-9A-Fa-f]{1,4})*)?"
            r"(?![\w:])"
        ),
        _ipv6,
    ),
    # "version 10.2.3.4" and "v1.2.3.4" are versions, not addresses
    _Detector(
        "IPV4",
        re.compile(
            r"(?<![\d.])(?<![vV])(?<!version )(?<!release )(?:\d{1,3}\.){3}\d{1,3}(?![\d.])"
        ),
        _ipv4,
    ),
    _Detector(
        "PHONE",
        re.compile(
            r"(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{3}\)|\d{3})[ .-]\d{3}[ .-]\d{4}(?!\w)"
            r"|(?<![\w+])\+\d{1,3}(?:[ .-]?\d{2,4}){2,5}(?!\w)"
        ),
    ),
)


@dataclass(frozen=True, slots=True)
class Finding:
    """One detected value: its kind and span in the text."""

    kind: str
    start: int
    end: int


def detect(text: str) -> list[Finding]:
    """Non-overlapping findings in ``text`` (earlier detectors win overlaps)."""
    findings: list[Finding] = []
    taken: list[tuple[int, int]] = []
    for detector in _DETECTORS:
        for match in detector.pattern.finditer(text):
            start, end = match.span()
            if any(start < e and s < end for s, e in taken):
                continue
            if detector.check is not None and not detector.check(match.group()):
                continue
            findings.append(Finding(detector.kind, start, end))
            taken.append((start, end))
    return sorted(findings, key=lambda f: f.start)


@dataclass
class Redactor:
    """Redacts the texts of one request; the same value keeps the same placeholder."""

    placeholders: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def redact(self, text: str) -> str:
        """``text`` with every finding replaced by its placeholder."""
        findings = detect(text)
        if not findings:
            return text
        out, last = [], 0
        for finding in findings:
            value = text[finding.start : finding.end]
            placeholder = self.placeholders.get(value)
            if placeholder is None:
                self.counts[finding.kind] = self.counts.get(finding.kind, 0) + 1
                placeholder = f"[{finding.kind}_{self.counts[finding.kind]}]"
                self.placeholders[value] = placeholder
            out += [text[last : finding.start], placeholder]
            last = finding.end
        out.append(text[last:])
        return "".join(out)
