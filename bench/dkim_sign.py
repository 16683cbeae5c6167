"""Per-mail cost of DKIM signing (seed 002) on a typical order confirmation.

Builds the wire bytes of one Japanese order confirmation with mime.render_bytes (what
the send path builds), then times, per mail, in process CPU time (time.process_time, so
other load on the machine does not distort it):
- `render_bytes` alone (the cost without DKIM);
- automail's signer (sending/dkim_sign.py: dkimpy hashes and writes the header, OpenSSL
  makes the RSA signature), 2048-bit key;
- dkimpy's own `dkim.sign` (pure-Python RSA), the baseline.

    .venv/bin/python bench/dkim_sign.py [--mails 2000] [--baseline-mails 100]
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import dkim
import figures
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from automail.mime import HeaderCache, render_bytes
from automail.models import Mail, Shop
from automail.sending.dkim_sign import SIGNED_HEADERS, DkimSigner


def _mail(i: int) -> Mail:
    body = "山田 太郎 様\n\nこの度はご注文いただき誠にありがとうございます。\n" * 8
    return Mail(
        id=i, shop_id=1, kind="order_confirmation", source_key=f"order:{i}",
        to_address=f"user{i}@example.jp", from_address="shop@tea.example.jp",
        from_name="お茶の山田園", reply_to="support@tea.example.jp",
        subject=f"【お茶の山田園】ご注文ありがとうございます（注文番号 {i}）",
        body_text=body + "――――\nお茶の山田園\nsupport@tea.example.jp\n",
    )  # fmt: skip


def _per_mail_ms(fn, n: int) -> float:  # noqa: ANN001
    start = time.process_time()
    for i in range(n):
        fn(i)
    return (time.process_time() - start) / n * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mails", type=int, default=2000)
    ap.add_argument("--baseline-mails", type=int, default=100)
    args = ap.parse_args()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    conn = SimpleNamespace(conn_id="bench", login="s1", host="tea.example.jp", password=pem)
    signer = DkimSigner.from_connection(conn)
    shop, cache, now = Shop(id=1, code="tea", name="tea"), HeaderCache(), datetime.now(UTC)
    mails = [_mail(i) for i in range(args.mails)]
    data = [render_bytes(m, shop, now, cache) for m in mails]
    headers = [h.encode() for h in SIGNED_HEADERS]
    render_ms = _per_mail_ms(lambda i: render_bytes(mails[i], shop, now, cache), args.mails)
    ours_ms = _per_mail_ms(lambda i: signer.sign(data[i]), args.mails)
    base_ms = _per_mail_ms(
        lambda i: dkim.sign(data[i], b"s1", b"tea.example.jp", signer.pem, include_headers=headers),
        args.baseline_mails,
    )
    figures.emit("dkim render_bytes per mail (no signing)", render_ms, "ms CPU", digits=3)
    figures.emit(
        "dkim sign per mail (dkimpy + OpenSSL RSA, 2048-bit)", ours_ms, "ms CPU",
        base_ms, base_ms / ours_ms, digits=3,
    )  # fmt: skip
    figures.emit("dkim sign per mail (dkimpy pure-Python RSA)", base_ms, "ms CPU", digits=3)


if __name__ == "__main__":
    main()
