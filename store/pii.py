"""Find personal data in text and apply a tenant's rule to it: keep, mask or refuse.

One rule per tenant covers every memory write (extraction job, `save_memory` tool) and every
traced run (`server.privacy`). The detectors, in the order they run:

- e-mail addresses → `[email]`; WhatsApp addresses (`whatsapp:+5511...`) → `[phone]`;
- international numbers written with `+` and 8 to 15 digits → `[phone]`;
- CNPJ (14 digits, punctuated or not) and CPF (11 digits) → `[cnpj]`, `[cpf]`, only when their
  check digits are right (a random 11-digit number is not a CPF);
- card numbers (13 to 19 digits, spaces or dashes between groups) → `[card]`, only when the
  Luhn check passes;
- Brazilian numbers without `+`: the country code, DDD and number run together
  (`5511999990000`, how WhatsApp ids are written, also after `wa.me/`), a DDD in parentheses
  (`(11) 99999-0000`), a DDD then a space or dash (`11 99999-0000`), either with the mobile's
  leading 9 set apart (`(11) 9 9999-0000`), an 11-digit mobile with its DDD (`11999990000`) or
  a local mobile with its dash (`99999-0000`) → `[phone]`.

Chosen to leave alone: dates (`12/05/2024`, `2024-05-12`), amounts (`1.800,00`,
`R$ 1.234.567,89`), year ranges (`2023-2024`, also after a two-digit number: `11 2023-2024`),
times, and order or protocol numbers of other lengths or shapes. A bare 8- to 10-digit run is
not taken for a phone (landlines without DDD and punctuation are missed on purpose); an 11-digit
run shaped like a mobile with its DDD is, and so is a 12- or 13-digit run starting with 55 and a
DDD. A number after any other `/` (a path, a date) is left alone.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Literal, get_args

PiiPolicy = Literal["keep", "mask", "refuse"]
"""What a memory write does with personal data: store it as written, mask it, or skip the fact."""

POLICIES: tuple[str, ...] = get_args(PiiPolicy)

_NOT_BEFORE = r"(?<![\w@+./-])"
_NOT_AFTER = r"(?![\w@]|[./-]\d)"
_PHONE_NOT_BEFORE = r"(?<![\w@+.-])(?:(?<=wa\.me/)|(?<!/))"
"""As `_NOT_BEFORE`, but a number right after `wa.me/` (a WhatsApp link) counts."""
_NUMBER = r"(?:9[\s.-]?)?\d{4}[\s-]?\d{4}"
"""A number after its DDD: 8 digits, or a mobile's 9 (joined or set apart) and 8 digits."""
_YEAR_RANGE = r"(?!(?:19|20)\d{2}[\s-](?:19|20)\d{2}(?!\d))"
"""Not a year range (`2023-2024`): eight digits that would otherwise pass for a landline."""


class PersonalDataRefused(ValueError):
    """A memory held personal data and the tenant's rule is to refuse such memories."""

    def __init__(self, kinds: list[str]) -> None:
        """Name the `kinds` of personal data found (e.g. `["phone"]`)."""
        self.kinds = kinds
        super().__init__(
            f"not stored: it holds personal data ({', '.join(kinds)}) and this service keeps "
            "no personal data in memory; leave the number or address out"
        )


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def _cpf_ok(text: str) -> bool:
    d = [int(c) for c in _digits(text)]
    if len(d) != 11 or len(set(d)) == 1:
        return False
    for n in (9, 10):
        check = sum(d[i] * (n + 1 - i) for i in range(n)) * 10 % 11 % 10
        if check != d[n]:
            return False
    return True


def _cnpj_ok(text: str) -> bool:
    d = [int(c) for c in _digits(text)]
    if len(d) != 14 or len(set(d)) == 1:
        return False
    for n in (12, 13):
        weights = list(range(n - 7, 1, -1)) + list(range(9, 1, -1))
        rest = sum(a * b for a, b in zip(d[:n], weights, strict=True)) % 11
        if (0 if rest < 2 else 11 - rest) != d[n]:
            return False
    return True


def _luhn_ok(text: str) -> bool:
    d = [int(c) for c in _digits(text)]
    if not 13 <= len(d) <= 19 or len(set(d)) == 1:
        return False
    total = 0
    for i, digit in enumerate(reversed(d)):
        if i % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def _always(text: str) -> bool:
    return True


_DETECTORS: list[tuple[str, re.Pattern[str], Callable[[str], bool]]] = [
    ("email", re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"), _always),
    ("phone", re.compile(r"whatsapp:\+?\d[\d\s().-]*\d", re.IGNORECASE), _always),
    ("phone", re.compile(_NOT_BEFORE + r"\+\d(?:[\s().-]{0,2}\d){7,14}" + _NOT_AFTER), _always),
    ("phone", re.compile(_PHONE_NOT_BEFORE + r"55[1-9]{2}9?\d{8}" + _NOT_AFTER), _always),
    ("cnpj", re.compile(_NOT_BEFORE + r"\d{2}\.?\d{3}\.?\d{3}/?\d{4}-?\d{2}" + _NOT_AFTER),
     _cnpj_ok),
    ("cpf", re.compile(_NOT_BEFORE + r"\d{3}\.?\d{3}\.?\d{3}-?\d{2}" + _NOT_AFTER), _cpf_ok),
    ("card", re.compile(_NOT_BEFORE + r"\d(?:[ -]?\d){12,18}" + _NOT_AFTER), _luhn_ok),
    ("phone", re.compile(
        _PHONE_NOT_BEFORE + r"(?:(?:55\s?)?\(\d{2}\)\s?" + _NUMBER  # (11) 99999-0000
        + r"|(?:55[\s-])?[1-9]{2}[\s-]" + _YEAR_RANGE + _NUMBER  # 11 9 9999-0000
        + r"|[1-9]{2}9\d{8}"  # 11999990000
        r"|9\d{4}-\d{4})" + _NOT_AFTER  # 99999-0000
    ), _always),
]  # fmt: skip
"""(kind, pattern, validator) in the order they run; each match becomes `[kind]`."""


def _scan(text: str, found: list[str] | None) -> str:
    for kind, pattern, valid in _DETECTORS:

        def replace(
            match: re.Match[str], kind: str = kind, valid: Callable[[str], bool] = valid
        ) -> str:
            if not valid(match.group(0)):
                return match.group(0)
            if found is not None and kind not in found:
                found.append(kind)
            return f"[{kind}]"

        text = pattern.sub(replace, text)
    return text


def mask_pii(text: str) -> str:
    """Return `text` with every phone number, e-mail, CPF, CNPJ and card number replaced."""
    return _scan(text, None)


def find_pii(text: str) -> list[str]:
    """Name the kinds of personal data in `text` (e.g. `["phone", "cpf"]`), in order found."""
    found: list[str] = []
    _scan(text, found)
    return found


def apply_policy(text: str, policy: str) -> str:
    """Return `text` as a memory may hold it under `policy`; raise `PersonalDataRefused` or,
    for an unknown policy, ValueError."""
    if policy not in POLICIES:
        raise ValueError(f"unknown PII policy {policy!r}; use one of {', '.join(POLICIES)}")
    if policy == "keep":
        return text
    if policy == "mask":
        return mask_pii(text)
    if kinds := find_pii(text):
        raise PersonalDataRefused(kinds)
    return text


def effective_policy(pii_policy: str, trace_privacy: str) -> PiiPolicy:
    """Return the rule a tenant's memory writes follow.

    A tenant with masked traces asked for privacy: its `keep` counts as `mask`, so no phone
    number it did not mean to keep is stored as written.
    """
    if pii_policy == "refuse":
        return "refuse"
    if pii_policy == "mask" or trace_privacy == "masked":
        return "mask"
    return "keep"
