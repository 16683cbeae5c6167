"""PC or mobile by the recipient's address (A5): carrier domains, sub-domains, case."""

from __future__ import annotations

import pytest

from automail.devices import device_for_address


@pytest.mark.parametrize(
    "email",
    [
        "taro@docomo.ne.jp",
        "taro@ezweb.ne.jp",
        "taro@au.com",
        "taro@softbank.ne.jp",
        "taro@i.softbank.jp",
        "taro@disney.ne.jp",
        "taro@ymobile.ne.jp",
        "taro@willcom.com",
        "taro@emnet.ne.jp",
        "taro@di.pdx.ne.jp",  # sub-domain of pdx.ne.jp
        "taro@t.vodafone.ne.jp",
        "Taro.Yamada@DoCoMo.Ne.Jp",  # case does not matter
        "taro@docomo.ne.jp.",  # trailing root dot
    ],
)
def test_mobile_carrier_domains(email: str) -> None:
    assert device_for_address(email) == "mobile"


@pytest.mark.parametrize(
    "email",
    [
        "taro@example.jp",
        "taro@gmail.com",
        "taro@yahoo.co.jp",
        "taro@notdocomo.ne.jp",  # a suffix match must be at a label boundary
        "taro@docomo.ne.jp.example.com",
        "docomo.ne.jp@example.jp",  # only the domain part counts
        "no-at-sign",
        "",
    ],
)
def test_everything_else_is_pc(email: str) -> None:
    assert device_for_address(email) == "pc"
