"""A real SMTP server on loopback (aiosmtpd) that captures what was really sent.

Used by the demo, the tests and the benchmarks. Each captured message starts with a
`Return-Path:` header holding the envelope sender, as a delivering MTA writes it. It
can be told to refuse some recipients permanently (550 5.1.1) or to fail the next N
transactions temporarily (451), so retry and bounce paths are exercised against a real
protocol peer.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path

from aiosmtpd.controller import Controller

LOOPBACK = "127.0.0.1"
# aiosmtpd logs every command and connection at INFO on "mail.log"; keep its warnings.
logging.getLogger("mail.log").setLevel(logging.WARNING)


@dataclass
class Captured:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)


@dataclass
class SinkHandler:
    """aiosmtpd handler: records every accepted message, optionally refusing some."""

    out_dir: Path | None = None
    reject: dict[str, str] = field(default_factory=dict)  # address -> full SMTP reply
    temp_failures: int = 0  # fail this many DATA commands with 451 first
    delay: float = 0.0  # seconds before answering DATA: a slow relay (kill-mid-batch tests)
    delay_domain: str | None = None  # only for recipients at this domain (None: all)
    messages: list[Captured] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: ANN001, N802
        reply = self.reject.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: ANN001, N802
        if self.delay and (
            self.delay_domain is None
            or any(a.lower().endswith("@" + self.delay_domain) for a in envelope.rcpt_tos)
        ):
            await asyncio.sleep(self.delay)
        with self.lock:
            if self.temp_failures > 0:
                self.temp_failures -= 1
                return "451 4.3.0 Temporary failure, try again later"
            # The envelope sender as a delivering MTA records it, so a test or the demo
            # can bounce a captured message to its real (signed) return path.
            data = f"Return-Path: <{envelope.mail_from}>\r\n".encode() + envelope.content
            captured = Captured(envelope.mail_from, list(envelope.rcpt_tos), data)
            self.messages.append(captured)
            n = len(self.messages)
        if self.out_dir is not None:
            (self.out_dir / f"{time.time_ns()}-{n:06d}.eml").write_bytes(data)
        return "250 2.0.0 Message accepted"

    def message_id_counts(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for m in self.messages:
            for line in m.data.split(b"\r\n\r\n", 1)[0].splitlines():
                if line.lower().startswith(b"message-id:"):
                    counts[line.split(b":", 1)[1].strip().decode()] += 1
        return counts


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


class SmtpSink:
    """Context manager: a running sink on a free loopback port."""

    def __init__(
        self,
        out_dir: Path | None = None,
        port: int | None = None,
        delay: float = 0.0,
        delay_domain: str | None = None,
    ) -> None:
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        self.handler = SinkHandler(out_dir=out_dir, delay=delay, delay_domain=delay_domain)
        self.port = port or free_port()
        self.controller = Controller(
            self.handler, hostname=LOOPBACK, port=self.port, data_size_limit=50 * 2**20
        )

    @property
    def messages(self) -> list[Captured]:
        return self.handler.messages

    def start(self) -> SmtpSink:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> SmtpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Loopback SMTP sink that saves .eml files")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument(
        "--delay-ms", type=float, default=0.0, help="wait before each reply to DATA"
    )
    parser.add_argument("--delay-domain", help="delay only mail to this recipient domain")
    args = parser.parse_args(argv)
    with SmtpSink(args.dir, args.port, args.delay_ms / 1000, args.delay_domain) as sink:
        print(f"smtp sink on {LOOPBACK}:{sink.port}, writing to {args.dir}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
