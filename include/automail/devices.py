"""PC or mobile: which template a recipient gets, from the address's domain (A5, seed 003).

Japanese mobile carriers give their subscribers addresses under a few well-known
domains ("携帯" addresses); those get the mobile template, everything else the PC one.
Sub-domains count (e.g. `pdx.ne.jp` covers `di.pdx.ne.jp`), and case does not matter.
"""

from __future__ import annotations

from typing import Literal

Device = Literal["pc", "mobile"]

# Carrier mail domains: docomo, au (KDDI), SoftBank, Y!mobile/WILLCOM/EMOBILE, Disney Mobile,
# and the MVNO-free legacy ones that are still in shop customer lists.
MOBILE_DOMAINS: frozenset[str] = frozenset(
    {
        "docomo.ne.jp",  # NTT docomo
        "mopera.net",  # docomo ISP mail on handsets
        "ezweb.ne.jp",  # au (legacy)
        "au.com",  # au
        "softbank.ne.jp",  # SoftBank (MMS)
        "i.softbank.jp",  # SoftBank iPhone
        "vodafone.ne.jp",  # SoftBank's predecessor (e.g. d.vodafone.ne.jp)
        "disney.ne.jp",  # Disney Mobile
        "ymobile.ne.jp",  # Y!mobile
        "yahoo.ne.jp",  # Y!mobile (yahoo.ne.jp carrier mail)
        "willcom.com",  # WILLCOM
        "emnet.ne.jp",  # EMOBILE
        "pdx.ne.jp",  # WILLCOM / DDI Pocket (xx.pdx.ne.jp)
        "wcm.ne.jp",  # WILLCOM
        "uqmobile.jp",  # UQ mobile
        "rakumail.jp",  # Rakuten Mobile carrier mail
    }
)


def device_for_address(email: str) -> Device:
    """Return "mobile" for an address under a Japanese mobile carrier domain, else "pc"."""
    domain = email.rpartition("@")[2].strip().rstrip(".").lower()
    if domain in MOBILE_DOMAINS:
        return "mobile"
    # Walk up the labels: a.b.docomo.ne.jp -> b.docomo.ne.jp -> docomo.ne.jp ...
    dot = domain.find(".")
    while dot != -1:
        domain = domain[dot + 1 :]
        if domain in MOBILE_DOMAINS:
            return "mobile"
        dot = domain.find(".")
    return "pc"
