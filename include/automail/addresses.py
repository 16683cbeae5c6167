"""Mail address checks (SPEC B9) and sender-settings validation (A7).

`check_address` applies RFC 5322 dot-atom rules through email-validator (syntax only,
no DNS) plus explicit checks for the mistakes seed 000 lists, so each refusal says
exactly what is wrong: a dot right before @, a leading dot, consecutive dots, no @,
spaces, CR/LF. Non-ASCII local parts are refused (they need SMTPUTF8, which the
relays this product targets do not offer).
"""

from __future__ import annotations

import re
from functools import lru_cache

from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

# Fast path: a plain ASCII dot-atom at a hostname with a letters-only TLD, nothing IDNA
# ("--") and no special-use name, is valid for email-validator too (a property test
# holds the two together); anything else goes through email-validator. Sending checks
# every address, and the library call is ~6x the cost of the match.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
PLAIN_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@(?:{_LABEL}\.)+[A-Za-z]{{2,63}}")
_SPECIAL = frozenset(SPECIAL_USE_DOMAIN_NAMES)


def _plainly_valid(address: str) -> bool:
    if len(address) > 254 or not PLAIN_ADDRESS.fullmatch(address):
        return False
    local, domain = address.rsplit("@", 1)
    return (
        len(local) <= 64 and "--" not in domain and domain.rsplit(".", 1)[1].lower() not in _SPECIAL
    )


def _explicit_problem(address: str) -> str | None:
    if any(c in address for c in "\r\n\0"):
        return "contains a line break or NUL character"
    if address != address.strip() or " " in address or "\t" in address:
        return "contains spaces"
    if "@" not in address:
        return "has no @"
    if address.count("@") > 1:
        return "has more than one @"
    local, domain = address.split("@")
    if not local:
        return "has nothing before the @"
    if not domain:
        return "has nothing after the @"
    if local.startswith("."):
        return "starts with a dot"
    if local.endswith("."):
        return "has a dot right before the @"
    if ".." in local:
        return "has consecutive dots before the @"
    if len(local.encode("utf-8", "replace")) > 64:  # RFC 5321 4.5.3.1.1; email-validator
        return "has more than 64 characters before the @"  # checks it in strict mode only
    return None


@lru_cache(maxsize=65536)
def check_address(address: str) -> str | None:
    """None when `address` is a valid dot-atom address, else a reason naming the address."""
    if not isinstance(address, str) or not address:
        return f"address {address!r} is empty"
    if _plainly_valid(address):
        return None
    problem = _explicit_problem(address)
    if problem is None:
        try:
            validate_email(address, check_deliverability=False, allow_smtputf8=False)
        except EmailNotValidError as exc:
            problem = str(exc).rstrip(".")
            problem = problem[0].lower() + problem[1:] if problem else "is not valid"
    return None if problem is None else f"address {address!r} {_verb(problem)}"


def _verb(problem: str) -> str:
    # email-validator's messages are sentences ("An email address cannot ..."), ours are
    # predicates ("has no @"); glue both into "address 'x' <...>".
    return (
        problem
        if problem.split(" ", 1)[0] in ("has", "starts", "contains", "is")
        else (f"is invalid: {problem}")
    )


def split_address_list(value: str | None) -> list[str]:
    """A comma-separated list (BCC) as trimmed addresses; empty items are dropped."""
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def validate_sender_settings(from_address: str, reply_to: str, bcc: str | None) -> None:
    """A7: From and Reply-To exactly one valid address each, BCC a comma list of valid ones.

    Raises ValueError naming the field and the value.
    """
    for field, value in (("from_address", from_address), ("reply_to", reply_to)):
        if not value or not value.strip():
            raise ValueError(f"{field}: an address is required (got {value!r})")
        if len(split_address_list(value)) != 1 or ";" in value:
            raise ValueError(f"{field}: exactly one address is allowed (got {value!r})")
        reason = check_address(value)
        if reason:
            raise ValueError(f"{field}: {reason}")
    if bcc and ";" in bcc:
        raise ValueError(f"bcc: separate addresses with commas, not semicolons (got {bcc!r})")
    for item in split_address_list(bcc):
        reason = check_address(item)
        if reason:
            raise ValueError(f"bcc: {reason}")


def domain_of(address: str) -> str:
    return address.rsplit("@", 1)[-1].strip().lower()
