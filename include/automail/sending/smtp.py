"""The SMTP side of sending: relay settings (F2, seed 003) and one reused connection.

Settings come from an Airflow connection of type smtp (default `automail_smtp`; a shop
may name its own relay, `shops.smtp_conn_id`). They are read the way the Airflow SMTP
provider reads them: Airflow's own `Connection` parses the URI/JSON (env variable
`AIRFLOW_CONN_<ID>`, secrets backend or metadata DB) and `SmtpHook`'s properties give
host, port, login, password, `disable_ssl`, `disable_tls`, `timeout`, `ssl_context`.
Our extras on top: `ca_file` (a private relay's CA, PEM), `connections` (SMTP
connections one batch opens, default 4) and `max_connections` (the relay's limit for all
batches at once, default 16). No credential is ever written in code.

TLS is verified: implicit TLS and STARTTLS check the certificate and host name against
the system CAs or `ca_file`; only the provider's explicit `ssl_context: none` turns that
off. A TLS or AUTH failure is `SmtpUnavailable` naming the connection: the batch's mails
fail temporarily and, after the normal retries, end in error. Never a plaintext fallback.

`SmtpSession` runs MAIL/RCPT/DATA itself (not `sendmail`) so that it knows where a
failure happened: a dropped connection before the message is handed over is safely
retried once on a new connection; a drop after is reported `in_doubt`, because the
server may have accepted it (never resent blindly). When the server offers PIPELINING
(RFC 2920) the envelope and DATA go out in one write: two round trips per mail.
"""

from __future__ import annotations

import logging
import os
import smtplib
import ssl
import sys
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from automail.addresses import AddressError, wire_address
from automail.models import DEFAULT_RELAY
from automail.sending.retry import find_enhanced

CONN_ID = DEFAULT_RELAY
ENV_VAR = "AIRFLOW_CONN_AUTOMAIL_SMTP"
DEFAULT_CONNECTIONS = 4  # per batch
DEFAULT_MAX_CONNECTIONS = 16  # per relay, all batches together


def _logs_off_stdout() -> None:
    """Importing Airflow points the root logger at stdout; outside a task (the CLI, whose
    stdout is its JSON output) logs belong on stderr."""
    err = sys.__stderr__  # the process's own, not a replaceable wrapper (pytest's capture)
    for handler in logging.root.handlers:
        if type(handler) is logging.StreamHandler and handler.stream is not err:
            handler.setStream(err)


def env_var(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


class RelayConfigError(ValueError):
    """A relay connection's settings are unusable; the message names the connection."""


def parse_connection(value: str, conn_id: str, kind: str = "SMTP") -> Any:
    """An `AIRFLOW_CONN_*` value (URI or JSON) as Airflow's own `Connection`."""
    from airflow.sdk import Connection

    _logs_off_stdout()
    value = value.strip()
    try:
        if value.startswith("{"):
            return Connection.from_json(value, conn_id=conn_id)
        return Connection.from_uri(value, conn_id=conn_id)
    except Exception as exc:  # Airflow raises several types for a malformed value
        raise RelayConfigError(
            f"{kind} connection {conn_id!r}: cannot parse {env_var(conn_id)}: {exc}"
        ) from exc


def airflow_connection(conn_id: str, kind: str = "SMTP") -> Any:
    """The connection `conn_id` (SMTP relays, DKIM keys): the env variable
    `AIRFLOW_CONN_<ID>` when set (CLI, tests, the demo), else Airflow's own lookup
    (secrets backend, metadata DB). RelayConfigError for a malformed value, LookupError
    when there is none; both name the connection."""
    if value := os.environ.get(env_var(conn_id)):
        return parse_connection(value, conn_id, kind)
    try:
        from airflow.sdk import BaseHook

        return BaseHook.get_connection(conn_id)
    except Exception as exc:
        raise LookupError(
            f"no {kind} settings: set {env_var(conn_id)} or the Airflow connection "
            f"{conn_id!r} ({exc})"
        ) from exc


def _positive_int(conn_id: str, extra: dict, key: str, default: int) -> int:
    raw = extra.get(key, default)
    text = str(raw).strip()
    if isinstance(raw, bool) or not text.isdigit() or int(text) < 1:
        raise RelayConfigError(
            f"SMTP connection {conn_id!r}: extra {key}={raw!r} must be a whole number >= 1"
        )
    return int(text)


def _strict_flag(conn_id: str, extra: dict, key: str) -> None:
    """The provider reads flags with bool(): the string "false" would mean *true*.
    Refuse such a value instead of reading it differently from the provider."""
    raw = extra.get(key)
    if isinstance(raw, str) and raw.strip().lower() not in ("true", "1", "yes", "on"):
        raise RelayConfigError(
            f"SMTP connection {conn_id!r}: extra {key}={raw!r} is ambiguous (the SMTP "
            f"provider treats any non-empty text as true); remove it or use a JSON boolean"
        )


@dataclass(frozen=True)
class SmtpConfig:
    host: str = "127.0.0.1"
    port: int = 25
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    use_ssl: bool = False
    use_starttls: bool = False
    timeout: float = 30.0
    name: str = CONN_ID  # the Airflow connection id, named in every error
    verify: bool = True  # check the relay's certificate and host name
    ca_file: str | None = None
    connections: int = 1  # per batch; Airflow connections default to DEFAULT_CONNECTIONS
    max_connections: int = DEFAULT_MAX_CONNECTIONS

    @classmethod
    def from_connection(cls, conn: Any) -> SmtpConfig:
        """From an Airflow `Connection`, through `SmtpHook`'s own reading of it."""
        from airflow.providers.smtp.hooks.smtp import SmtpHook

        conn_id = conn.conn_id or CONN_ID
        hook = SmtpHook(smtp_conn_id=conn_id)
        hook.smtp_connection = conn
        extra = conn.extra_dejson
        for key in ("disable_ssl", "disable_tls"):
            _strict_flag(conn_id, extra, key)
        if hook.ssl_context not in (None, "default", "none"):
            raise RelayConfigError(
                f"SMTP connection {conn_id!r}: extra ssl_context={hook.ssl_context!r} must be "
                "'default' or 'none' (as in the SMTP provider)"
            )
        ca_file = extra.get("ca_file") or None
        if ca_file is not None and not os.path.isfile(ca_file):
            raise RelayConfigError(f"SMTP connection {conn_id!r}: ca_file {ca_file!r} not found")
        if not hook.host:
            raise RelayConfigError(f"SMTP connection {conn_id!r}: no host")
        use_ssl = hook.use_ssl
        return cls(
            host=hook.host,
            port=int(conn.port or (465 if use_ssl else 25)),
            login=hook.smtp_user or None,
            password=hook.smtp_password or None,
            use_ssl=use_ssl,
            use_starttls=not use_ssl and hook.smtp_starttls,
            timeout=float(hook.timeout),
            name=conn_id,
            verify=hook.ssl_context != "none",
            ca_file=ca_file,
            connections=_positive_int(conn_id, extra, "connections", DEFAULT_CONNECTIONS),
            max_connections=_positive_int(
                conn_id, extra, "max_connections", DEFAULT_MAX_CONNECTIONS
            ),
        )

    @classmethod
    def from_uri_or_json(cls, value: str, conn_id: str = CONN_ID) -> SmtpConfig:
        """An `AIRFLOW_CONN_*` value (URI or JSON), parsed by Airflow's `Connection`."""
        return cls.from_connection(parse_connection(value, conn_id))

    @classmethod
    def from_env(cls, conn_id: str = CONN_ID) -> SmtpConfig:
        value = os.environ.get(env_var(conn_id))
        if not value:
            raise LookupError(f"SMTP settings: environment variable {env_var(conn_id)} is not set")
        return cls.from_uri_or_json(value, conn_id)

    @classmethod
    def from_airflow(cls, conn_id: str = CONN_ID) -> SmtpConfig:
        """Inside an Airflow task: the connection from env, secrets backend or metadata DB."""
        from airflow.sdk import BaseHook

        return cls.from_connection(BaseHook.get_connection(conn_id))

    @classmethod
    def resolve(cls, conn_id: str = CONN_ID) -> SmtpConfig:
        """For the CLI/UI: the env variable, else the Airflow connection."""
        return cls.from_connection(airflow_connection(conn_id))

    def tls_context(self) -> ssl.SSLContext:
        if not self.verify:  # the provider's `ssl_context: none`
            return ssl._create_unverified_context()  # noqa: S323, SLF001
        return ssl.create_default_context(cafile=self.ca_file)


@dataclass
class RelayConfigs:
    """SmtpConfig per relay, read once per process. `fixed` sends every relay's mail to
    one server (tests, the demo's local sink); otherwise `read` (the Airflow connection
    inside a task, the env variable or connection outside)."""

    fixed: SmtpConfig | None = None
    read: Callable[[str], SmtpConfig] = SmtpConfig.resolve
    _cache: dict[str, SmtpConfig] = field(default_factory=dict)

    def __call__(self, conn_id: str) -> SmtpConfig:
        if self.fixed is not None:
            return self.fixed
        if conn_id not in self._cache:
            self._cache[conn_id] = self.read(conn_id)
        return self._cache[conn_id]


Relays = SmtpConfig | RelayConfigs  # one server for every relay, or each its own


def as_relays(smtp: Relays | None) -> RelayConfigs:
    if isinstance(smtp, RelayConfigs):
        return smtp
    return RelayConfigs(fixed=smtp)


@dataclass(frozen=True)
class SmtpResult:
    """What the server said about one message. outcome: accepted|temp_fail|perm_fail|in_doubt."""

    outcome: str
    code: int | None
    enhanced: str | None
    text: str
    refused_bcc: dict[str, str] = field(default_factory=dict)


class SmtpUnavailable(Exception):
    """No usable connection (refused, timeout, TLS/auth failure): nothing was sent."""


class Messenger(Protocol):
    """One SMTP session as the send loop sees it (listmonk's "messenger"): it carries a
    message to the relay and says what the relay answered. `SmtpSession` is the real
    one; tests drive the loop with fakes too. The loop's other dependency, the store
    (claim, in_flight before DATA, outcome), is `batch.BatchSender`."""

    def send(self, envelope_from: str, to_address: str, bcc: list[str], data: bytes) -> SmtpResult:
        """One transaction; raises SmtpUnavailable when no connection can be had."""
        ...

    def close(self) -> None: ...


MessengerFactory = Callable[[SmtpConfig, Mapping[str, int]], Messenger]


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _result(code: int, reply: bytes | str, stage: str) -> SmtpResult:
    text = _text(reply)
    full = f"{code} {text}" if stage == "DATA" else f"{stage}: {code} {text}"
    if 200 <= code < 300:
        return SmtpResult("accepted", code, find_enhanced(text), full)
    outcome = "temp_fail" if 400 <= code < 500 else "perm_fail"
    return SmtpResult(outcome, code, find_enhanced(text), full)


class SmtpSession:
    """One SMTP connection reused for a batch; reconnects once when it was dropped."""

    def __init__(self, config: SmtpConfig, per_session: Mapping[str, int] | None = None) -> None:
        self.config = config
        self.client: smtplib.SMTP | None = None
        self.pipelining = False
        self.per_session = per_session or {}  # recipients per connection, by domain
        self.domain_counts: Counter[str] = Counter()

    def connect(self) -> None:
        cfg = self.config
        try:
            if cfg.use_ssl:
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    cfg.host, cfg.port, timeout=cfg.timeout, context=cfg.tls_context()
                )
            else:
                client = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
            client.ehlo()
            if cfg.use_starttls:
                client.starttls(context=cfg.tls_context())
                client.ehlo()
            if cfg.login:
                client.login(cfg.login, cfg.password or "")
        except (OSError, smtplib.SMTPException) as exc:
            self.client = None
            stage = _failed_stage(exc)
            raise SmtpUnavailable(
                f"SMTP connection {cfg.name!r} ({cfg.host}:{cfg.port}): {stage} failed: "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self.client = client
        self.pipelining = client.has_extn("pipelining")
        self.domain_counts.clear()

    def close(self) -> None:
        if self.client is not None:
            try:
                self.client.quit()
            except (OSError, smtplib.SMTPException):
                self.client.close()
            self.client = None

    def __enter__(self) -> SmtpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(
        self,
        envelope_from: str,
        to_address: str,
        bcc: list[str],
        data: bytes,
    ) -> SmtpResult:
        """One SMTP transaction. Raises SmtpUnavailable when no connection can be had."""
        domain = to_address.rpartition("@")[2].lower()
        limit = self.per_session.get(domain)
        if limit and self.client is not None and self.domain_counts[domain] >= limit:
            self.close()  # e.g. docomo: at most 100 recipients per SMTP session
        for reconnected in (False, True):
            if self.client is None:
                self.connect()
            try:
                result = self._transaction(envelope_from, to_address, bcc, data)
                self.domain_counts[domain] += 1
                return result
            except _DroppedBeforeData as exc:
                self.client = None
                if reconnected:
                    raise SmtpUnavailable(f"connection dropped again before DATA: {exc}") from exc
        raise AssertionError("unreachable")

    def _transaction(
        self,
        sender: str,
        to: str,
        bcc: list[str],
        data: bytes,
    ) -> SmtpResult:
        client = self.client
        assert client is not None
        try:  # the wire forms (IDN domains as A-labels), or this mail is refused
            sender, to = _wire("envelope sender", sender), _wire("recipient", to)
        except AddressError as exc:
            return SmtpResult("refused", None, None, str(exc))
        refused: dict[str, str] = {}
        bcc_wire: dict[str, str] = {}  # wire form -> the address as stored
        for address in bcc:
            try:
                bcc_wire[_wire("bcc", address)] = address
            except AddressError as exc:
                refused[address] = str(exc)
        rcpts = [to, *bcc_wire]
        try:
            if self.pipelining:
                replies = _pipelined(client, sender, rcpts)
            else:
                replies = _one_by_one(client, sender, rcpts)
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            raise _DroppedBeforeData(f"{type(exc).__name__}: {exc}") from exc
        (mail_code, mail_reply), *rcpt_replies, (data_code, data_reply) = replies
        failure = None
        if mail_code != 250:
            failure = _result(mail_code, mail_reply, "MAIL FROM")
        elif rcpt_replies[0][0] not in (250, 251):
            failure = _result(*rcpt_replies[0], "RCPT TO")
        elif data_code != 354:
            failure = _result(data_code, data_reply, "DATA")
        if failure is not None:
            if data_code == 354:  # a server that took DATA anyway: abandon the connection
                self._drop()
            else:
                self._rset()
            return failure
        for wire, (code, reply) in zip(rcpts[1:], rcpt_replies[1:], strict=True):
            if code not in (250, 251):
                refused[bcc_wire[wire]] = f"{code} {_text(reply)}"
        # From here the server may have the message: a failure is in doubt, not retried.
        try:
            payload = smtplib._quote_periods(data)  # type: ignore[attr-defined]  # noqa: SLF001 (as smtplib.data)
            if payload[-2:] != b"\r\n":
                payload += b"\r\n"
            client.send(payload + b".\r\n")
            code, reply = client.getreply()
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            self._drop()
            return SmtpResult(
                "in_doubt", None, None, f"connection lost after the message was sent: {exc}"
            )
        result = _result(code, reply, "DATA")
        if refused:
            result = SmtpResult(result.outcome, result.code, result.enhanced, result.text, refused)
        return result

    def _drop(self) -> None:
        if self.client is not None:
            self.client.close()
        self.client = None

    def _rset(self) -> None:
        try:
            assert self.client is not None
            self.client.rset()
        except (OSError, smtplib.SMTPException):
            self.client = None


class _DroppedBeforeData(Exception):
    pass


def _wire(role: str, address: str) -> str:
    """`address` as an SMTP command carries it (addresses.wire_address: A-label domains;
    nothing that could break the command line). Raises AddressError naming the role."""
    try:
        return wire_address(address)
    except AddressError as exc:
        raise AddressError(address, f"({role}) {exc.problem}") from None


def _failed_stage(exc: BaseException) -> str:
    """Which step of opening a connection failed, for the operator's message."""
    if isinstance(exc, smtplib.SMTPAuthenticationError):
        return "AUTH (login refused)"
    if isinstance(exc, ssl.SSLError | smtplib.SMTPNotSupportedError):
        return "TLS"
    if isinstance(exc, smtplib.SMTPException):
        return "SMTP greeting/EHLO"
    return "connect"


def _pipelined(client: smtplib.SMTP, sender: str, rcpts: list[str]) -> list[tuple[int, bytes]]:
    """RFC 2920: MAIL, every RCPT and DATA in one write, then their replies in order."""
    lines = [f"MAIL FROM:<{sender}>", *(f"RCPT TO:<{a}>" for a in rcpts), "DATA"]
    client.send("".join(line + "\r\n" for line in lines))
    return [client.getreply() for _ in lines]


def _one_by_one(client: smtplib.SMTP, sender: str, rcpts: list[str]) -> list[tuple[int, bytes]]:
    """Without PIPELINING: stop at the first refusal the transaction cannot survive; the
    replies not asked for read as 503 so the caller sees one shape either way."""
    skipped = (503, b"not sent")
    mail = _command(client, "mail", "FROM", sender)
    if mail[0] != 250:
        return [mail, *[skipped] * len(rcpts), skipped]
    replies = [mail, _command(client, "rcpt", "TO", rcpts[0])]
    if replies[1][0] not in (250, 251):
        return [*replies, *[skipped] * (len(rcpts) - 1), skipped]
    replies += [_command(client, "rcpt", "TO", a) for a in rcpts[1:]]
    client.putcmd("data")
    return [*replies, client.getreply()]


def _command(client: smtplib.SMTP, verb: str, keyword: str, address: str) -> tuple[int, bytes]:
    """`MAIL FROM:<a>` / `RCPT TO:<a>` with the bare address as stored.

    smtplib's mail()/rcpt() re-parse each address with email.utils.parseaddr, which
    costs as much as building the message and rewrites legacy local parts (a..b@) that
    a shop may have allowed; our addresses are bare addr-specs, and the characters that
    could break the command line are refused before (`_wire`).
    """
    client.putcmd(verb, f"{keyword}:<{address}>")
    return client.getreply()
