"""Demo part 3b: bounces for two messages the local SMTP server captured.

Writes into OUT_DIR what would reach the bounce mailbox: a DSN for the first message,
addressed to the signed return path the sink recorded (`Return-Path:`), as a receiving
MTA sends it; and two forged ones about the second message (its X-Automail-Id in a plain
text, and a DSN naming only its recipient), which `automail bounces ingest` records but
never applies. Usage: python scripts/demo-bounces.py SINK_DIR OUT_DIR
"""

from __future__ import annotations

import sys
from email import policy
from email.parser import BytesParser
from pathlib import Path


def _headers(path: Path):  # noqa: ANN202
    return BytesParser(policy=policy.default).parsebytes(path.read_bytes(), headersonly=True)


def _dsn(to: str, recipient: str, returned: str) -> str:
    return f"""\
From: MAILER-DAEMON@mx.example.net
To: {to}
Subject: Undelivered Mail Returned to Sender
MIME-Version: 1.0
Content-Type: multipart/report; report-type=delivery-status; boundary="B"

--B
Content-Type: text/plain

<{recipient}>: host mx.example.net said: 550 5.1.1 User unknown

--B
Content-Type: message/delivery-status

Reporting-MTA: dns; mx.example.net

Final-Recipient: rfc822; {recipient}
Action: failed
Status: 5.1.1
Diagnostic-Code: smtp; 550 5.1.1 <{recipient}>: User unknown

--B
Content-Type: text/rfc822-headers

{returned}
--B--
"""


def main(sink: Path, out: Path) -> None:
    first, second = (_headers(p) for p in sorted(sink.glob("*.eml"))[:2])
    out.mkdir(parents=True, exist_ok=True)
    return_path = str(first["Return-Path"]).strip("<> ")
    returned = f"To: {first['To']}\nMessage-ID: {first['Message-ID']}\n"
    (out / "1-real.eml").write_text(_dsn(return_path, str(first["To"]), returned))
    mailbox = return_path.split("+", 1)[0] + "@" + return_path.rsplit("@", 1)[1]
    (out / "2-forged-id.eml").write_text(
        f"From: MAILER-DAEMON@evil.example\nTo: {mailbox}\nSubject: Undelivered Mail\n\n"
        f"550 5.1.1 user unknown\n\nX-Automail-Id: {second['X-Automail-Id']}\n"
    )
    (out / "3-forged-dsn.eml").write_text(_dsn(mailbox, str(second["To"]), ""))
    print(f"bounce mailbox: {out}/ (a DSN to {return_path}, two forged ones)")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
