"""A relay simulated honestly, on loopback: STARTTLS, AUTH and PIPELINING behind latency.

Real relays are 10-100 ms away, want STARTTLS (or implicit TLS) with a certificate the
client verifies, and AUTH PLAIN/LOGIN. This module gives tests, the demo and the
benchmarks such a peer without leaving the machine:

- `make_test_ca(dir)`: a throw-away CA and a server certificate for 127.0.0.1/localhost
  (the client trusts the CA file, exactly as a private relay's CA is configured);
- `RelaySim`: aiosmtpd with that certificate, STARTTLS (required before AUTH and mail),
  AUTH PLAIN/LOGIN against one login/password, and PIPELINING advertised (aiosmtpd reads
  commands in order from its stream, so pipelined commands are served as a real relay
  would); it captures what it accepted like `SmtpSink`;
- `LatencyProxy`: a TCP proxy on loopback that holds every chunk `delay` seconds in each
  direction (order kept), so one round trip costs 2 x delay, as on a real network.

`python -m automail.relay_sim --dir D --rtt-ms 20` runs both and prints the port and the
CA file, for trying the sender against it by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import ipaddress
import ssl
import sys
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from automail.smtp_sink import LOOPBACK, SinkHandler, free_port


@dataclass(frozen=True)
class TestCa:
    """Files of a throw-away CA and the server certificate it signed (PEM)."""

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_test_ca(directory: Path) -> TestCa:
    """A CA and a server certificate valid for 127.0.0.1 and localhost, one day long."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "automail test relay CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(LOOPBACK))]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TestCa(directory / "ca.pem", directory / "relay.pem", directory / "relay.key")
    files.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


@dataclass
class RelayHandler(SinkHandler):
    """The sink's capture and refusals, plus PIPELINING in the EHLO answer and a count of
    logins, so tests can tell how many connections a run opened."""

    logins: int = 0
    ehlo_lines: list[str] = field(default_factory=list)

    async def handle_EHLO(self, server, session, envelope, hostname, responses):  # noqa: ANN001, N802
        session.host_name = hostname
        if "250-PIPELINING" not in responses:
            responses.insert(1, "250-PIPELINING")
        self.ehlo_lines = list(responses)
        return responses


# aiosmtpd sets its own deprecated Session.login_data on every successful AUTH.
warnings.filterwarnings("ignore", message="Session.login_data is deprecated")


class RelaySim:
    """aiosmtpd with STARTTLS required and AUTH PLAIN/LOGIN, on a free loopback port."""

    def __init__(
        self,
        ca: TestCa,
        login: str = "relay-user",
        password: str = "relay-password",
        out_dir: Path | None = None,
        port: int | None = None,
    ) -> None:
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
        self.login, self.password = login, password
        self.handler = RelayHandler(out_dir=out_dir)
        self.port = port or free_port()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(ca.cert_file, ca.key_file)
        self.controller = Controller(
            self.handler,
            hostname=LOOPBACK,
            port=self.port,
            data_size_limit=50 * 2**20,
            tls_context=context,
            require_starttls=True,
            auth_required=True,
            auth_require_tls=True,
            authenticator=self._authenticate,
        )

    def _authenticate(self, server, session, envelope, mechanism, auth_data):  # noqa: ANN001
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == self.login
            and auth_data.password.decode() == self.password
        )
        if ok:
            self.handler.logins += 1
        # handled=False: aiosmtpd then answers 535 itself (True means 'already answered')
        return AuthResult(success=ok, handled=False)

    @property
    def messages(self):  # noqa: ANN201 (list[Captured])
        return self.handler.messages

    def start(self) -> RelaySim:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> RelaySim:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class LatencyProxy:
    """Forwards a loopback port to another, holding each chunk `delay` s per direction.

    Each direction has its own queue of (due time, bytes), so bytes keep their order and
    a pipelined burst costs one delay, not one per command: like a network link.
    """

    def __init__(self, target_port: int, delay: float, port: int | None = None) -> None:
        self.target_port, self.delay = target_port, delay
        self.port = port or free_port()
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, chunk = await queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if not chunk:
                    break
                writer.write(chunk)
                await writer.drain()
            writer.close()

        task = asyncio.ensure_future(deliver())
        try:
            while chunk := await reader.read(65536):
                queue.put_nowait((time.monotonic() + self.delay, chunk))
        except (ConnectionError, OSError):
            pass
        queue.put_nowait((time.monotonic() + self.delay, b""))
        with contextlib.suppress(ConnectionError, OSError):
            await task

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(LOOPBACK, self.target_port)
        except OSError:
            writer.close()
            return
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except asyncio.CancelledError:  # proxy stopping: end quietly (asyncio logs a raise)
            for w in (writer, up_writer):
                w.close()

    def start(self) -> LatencyProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._client, LOOPBACK, self.port), self._loop
        )
        self._server = future.result(10)
        return self

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Loopback relay: STARTTLS + AUTH + latency")
    parser.add_argument("--dir", type=Path, required=True, help="TLS files (and messages)")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="round-trip time added")
    parser.add_argument("--port", type=int, default=None, help="the proxy's port")
    parser.add_argument("--no-save", action="store_true", help="count messages, write none")
    args = parser.parse_args(argv)
    ca = make_test_ca(args.dir / "tls")
    out_dir = None if args.no_save else args.dir / "messages"
    with (
        RelaySim(ca, out_dir=out_dir) as relay,
        LatencyProxy(relay.port, args.rtt_ms / 2000, port=args.port) as proxy,
    ):
        # One line a parent process can read: port, direct port, CA file.
        print(f"relay {proxy.port} {relay.port} {ca.ca_file}", flush=True)
        try:
            for line in sys.stdin:  # "count" asks how many messages were accepted
                if line.strip() == "count":
                    print(len(relay.messages), flush=True)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
