"""Mail address checks (SPEC B9) and sender-settings validation (A7).

`check_address` applies RFC 5322 dot-atom rules through email-validator (syntax only,
no DNS) plus explicit checks for the mistakes seed 000 lists, so each refusal says
exactly what is wrong: a dot right before @, a leading dot, consecutive dots, no @,
spaces, CR/LF. Non-ASCII local parts are refused (they need SMTPUTF8, which the
relays this product targets do not offer).

`wire_address` is the one rule for what goes on the wire, whether or not the shop's
check is on: an address that cannot be written into an SMTP command or an address
header as it is (angle brackets, spaces, control characters, no local part, a non-ASCII
local part) is refused; an internationalised domain (`hanako@例え.jp`) is sent as its
A-labels (`hanako@xn--r8jz45g.jp`, IDNA 2008 through email-validator) in RCPT TO and in
the To header alike.
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


LIST_MAX = 1000  # seed 002: Reply-To, Cc and BCC lists, in characters


def validate_address_list(field: str, value: str | None) -> None:
    """A comma list (Reply-To, Cc, BCC; seed 002): at most LIST_MAX characters, commas
    not semicolons, every address valid and sendable. ValueError naming field and value."""
    if not value:
        return
    if len(value) > LIST_MAX:
        raise ValueError(
            f"{field}: longer than {LIST_MAX} characters ({len(value)}): {value[:80]!r}…"
        )
    if ";" in value:
        raise ValueError(f"{field}: separate addresses with commas, not semicolons (got {value!r})")
    if found := _CONTROL.search(value):  # before splitting: strip() would hide U+2028 etc.
        raise ValueError(
            f"{field}: contains U+{ord(found.group()):04X} (a line break or control "
            f"character) at position {found.start()} (got {value!r})"
        )
    for item in split_address_list(value):
        reason = check_address(item)
        if reason is None:
            try:
                wire_address(item)
            except AddressError as exc:
                reason = str(exc)
        if reason:
            raise ValueError(f"{field}: {reason}")


def validate_sender_settings(
    from_address: str, reply_to: str, bcc: str | None, cc: str | None = None
) -> None:
    """A7 and seed 002: From exactly one valid address; Reply-To one or more (a comma
    list); Cc and BCC comma lists. Raises ValueError naming the field and the value."""
    if not from_address or not from_address.strip():
        raise ValueError(f"from_address: an address is required (got {from_address!r})")
    if len(split_address_list(from_address)) != 1 or ";" in from_address:
        raise ValueError(f"from_address: exactly one address is allowed (got {from_address!r})")
    if reason := check_address(from_address):
        raise ValueError(f"from_address: {reason}")
    if not reply_to or not split_address_list(reply_to):
        raise ValueError(f"reply_to: an address is required (got {reply_to!r})")
    for field, value in (("reply_to", reply_to), ("cc", cc), ("bcc", bcc)):
        validate_address_list(field, value)


# What any address must be to be sent at all: ASCII atext and dots before exactly one @
# (dots anywhere: legacy carrier addresses like taro..yamada.@ are the reason the shop's
# check can be switched off), a hostname after it. Nothing else can break an SMTP
# command or an address header, so both carry the result verbatim.
_WIRE_LOCAL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+")
_WIRE_DOMAIN = re.compile(r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
WIRE_MAX = 254  # RFC 5321 4.5.3.1.3: a path of 256 octets including the angle brackets


class AddressError(ValueError):
    """An address that cannot be sent; `problem` completes "address 'x' …"."""

    def __init__(self, address: object, problem: str) -> None:
        super().__init__(f"address {address!r} {problem}")
        self.address, self.problem = address, problem


@lru_cache(maxsize=65536)
def wire_address(address: str) -> str:
    """`address` as it goes into SMTP commands and address headers: the local part as
    stored, the domain in A-labels (IDNA 2008). Raises AddressError naming the address
    when it is structurally unusable, whatever the shop's address check says."""
    if not isinstance(address, str) or not address:
        raise AddressError(address, "is empty")
    if _CONTROL.search(address):
        raise AddressError(address, "contains a line break or control character")
    if any(c.isspace() for c in address):
        raise AddressError(address, "contains spaces")
    if address.count("@") != 1:
        raise AddressError(address, "has no @" if "@" not in address else "has more than one @")
    local, domain = address.split("@")
    if not local:
        raise AddressError(address, "has nothing before the @")
    if not domain:
        raise AddressError(address, "has nothing after the @")
    if not local.isascii():
        raise AddressError(
            address, "has non-ASCII characters before the @ (SMTPUTF8 is not used: refused)"
        )
    if not _WIRE_LOCAL.fullmatch(local):
        raise AddressError(
            address,
            "has characters that cannot be sent before the @ "
            "(letters, digits, dots and !#$%&'*+/=?^_`{|}~- only)",
        )
    if not domain.isascii():
        domain = _a_labels(address, domain)
    if not _WIRE_DOMAIN.fullmatch(domain):
        raise AddressError(address, "has characters that cannot be sent after the @")
    wire = f"{local}@{domain}"
    if len(wire) > WIRE_MAX:  # no server takes it; on one header line it could pass 998
        raise AddressError(address, f"is longer than {WIRE_MAX} characters (RFC 5321 path)")
    return wire


def _a_labels(address: str, domain: str) -> str:
    """An internationalised domain as A-labels, by the address check's own library."""
    try:
        checked = validate_email(
            f"a@{domain}", check_deliverability=False, globally_deliverable=False
        )
    except EmailNotValidError as exc:
        raise AddressError(address, f"has a domain that is not a valid IDN: {exc}") from None
    return checked.ascii_domain


def domain_of(address: str) -> str:
    return address.rsplit("@", 1)[-1].strip().lower()
