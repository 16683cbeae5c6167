"""The SMTP side of sending: connection settings (F2) and one reused connection.

Settings come from the Airflow connection `automail_smtp` (host, port, login,
password; extras `disable_ssl`, `disable_tls`, `timeout`, same meaning and defaults
as the SMTP provider: implicit SSL and STARTTLS unless disabled). Code outside
Airflow (CLI, UI, tests) builds `SmtpConfig` directly or from the same
`AIRFLOW_CONN_AUTOMAIL_SMTP` variable. No credential is ever written in code.

`SmtpSession` runs MAIL/RCPT/DATA itself (not `sendmail`) so that it knows where a
failure happened: a dropped connection before DATA is safely retried once on a new
connection; a drop after the message was handed over is reported `in_doubt`,
because the server may have accepted it (never resent blindly).
"""

from __future__ import annotations

import json
import os
import smtplib
import ssl
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote, urlsplit

from automail.sending.retry import find_enhanced

CONN_ID = "automail_smtp"
ENV_VAR = "AIRFLOW_CONN_AUTOMAIL_SMTP"


def _flag(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


@dataclass(frozen=True)
class SmtpConfig:
    host: str = "127.0.0.1"
    port: int = 25
    login: str | None = None
    password: str | None = field(default=None, repr=False)
    use_ssl: bool = False
    use_starttls: bool = False
    timeout: float = 30.0

    @classmethod
    def from_fields(
        cls,
        host: str | None,
        port: int | None,
        login: str | None,
        password: str | None,
        extra: dict | None,
    ) -> SmtpConfig:
        extra = extra or {}
        use_ssl = not _flag(extra.get("disable_ssl", False))
        return cls(
            host=host or "localhost",
            port=int(port or (465 if use_ssl else 25)),
            login=login or None,
            password=password or None,
            use_ssl=use_ssl,
            use_starttls=not use_ssl and not _flag(extra.get("disable_tls", False)),
            timeout=float(extra.get("timeout", 30)),
        )

    @classmethod
    def from_uri_or_json(cls, value: str) -> SmtpConfig:
        """Parse an `AIRFLOW_CONN_*` value: a URI or Airflow's JSON connection form."""
        value = value.strip()
        if value.startswith("{"):
            data = json.loads(value)
            extra = data.get("extra") or {}
            if isinstance(extra, str):
                extra = json.loads(extra)
            return cls.from_fields(
                data.get("host"), data.get("port"), data.get("login"), data.get("password"), extra
            )
        parts = urlsplit(value)
        return cls.from_fields(
            unquote(parts.hostname or ""),
            parts.port,
            unquote(parts.username) if parts.username else None,
            unquote(parts.password) if parts.password else None,
            dict(parse_qsl(parts.query)),
        )

    @classmethod
    def from_env(cls, var: str = ENV_VAR) -> SmtpConfig:
        value = os.environ.get(var)
        if not value:
            raise LookupError(f"SMTP settings: environment variable {var} is not set")
        return cls.from_uri_or_json(value)

    @classmethod
    def from_airflow(cls, conn_id: str = CONN_ID) -> SmtpConfig:
        """Inside an Airflow task: the connection from env, secrets backend or metadata DB."""
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
        return cls.from_fields(conn.host, conn.port, conn.login, conn.password, conn.extra_dejson)

    @classmethod
    def resolve(cls) -> SmtpConfig:
        """For the CLI/UI: the env variable, else the Airflow connection."""
        if os.environ.get(ENV_VAR):
            return cls.from_env()
        try:
            return cls.from_airflow()
        except Exception as exc:
            raise LookupError(
                f"no SMTP settings: set {ENV_VAR} or the Airflow connection {CONN_ID!r} ({exc})"
            ) from exc


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

    def __init__(self, config: SmtpConfig) -> None:
        self.config = config
        self.client: smtplib.SMTP | None = None

    def connect(self) -> None:
        cfg = self.config
        try:
            if cfg.use_ssl:
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    cfg.host, cfg.port, timeout=cfg.timeout, context=ssl.create_default_context()
                )
            else:
                client = smtplib.SMTP(cfg.host, cfg.port, timeout=cfg.timeout)
            client.ehlo()
            if cfg.use_starttls:
                client.starttls(context=ssl.create_default_context())
                client.ehlo()
            if cfg.login:
                client.login(cfg.login, cfg.password or "")
        except (OSError, smtplib.SMTPException) as exc:
            self.client = None
            raise SmtpUnavailable(
                f"cannot use SMTP server {cfg.host}:{cfg.port}: {type(exc).__name__}: {exc}"
            ) from exc
        self.client = client

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
        for reconnected in (False, True):
            if self.client is None:
                self.connect()
            try:
                return self._transaction(envelope_from, to_address, bcc, data)
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
        for role, address in (("envelope sender", sender), ("recipient", to)):
            if _unsafe(address):
                return SmtpResult("refused", None, None, f"{role} {address!r}: {UNSAFE}")
        try:
            code, reply = _command(client, "mail", "FROM", sender)
            if code != 250:
                self._rset()
                return _result(code, reply, "MAIL FROM")
            code, reply = _command(client, "rcpt", "TO", to)
            if code not in (250, 251):
                self._rset()
                return _result(code, reply, "RCPT TO")
            refused = {}
            for address in bcc:
                if _unsafe(address):
                    refused[address] = UNSAFE
                    continue
                bcode, breply = _command(client, "rcpt", "TO", address)
                if bcode not in (250, 251):
                    refused[address] = f"{bcode} {_text(breply)}"
            client.putcmd("data")
            code, reply = client.getreply()
            if code != 354:
                self._rset()
                return _result(code, reply, "DATA")
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            raise _DroppedBeforeData(f"{type(exc).__name__}: {exc}") from exc
        # From here the server may have the message: a failure is in doubt, not retried.
        try:
            payload = smtplib._quote_periods(data)  # type: ignore[attr-defined]  # noqa: SLF001 (as smtplib.data)
            if payload[-2:] != b"\r\n":
                payload += b"\r\n"
            client.send(payload + b".\r\n")
            code, reply = client.getreply()
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            self.client = None
            client.close()
            return SmtpResult(
                "in_doubt", None, None, f"connection lost after the message was sent: {exc}"
            )
        result = _result(code, reply, "DATA")
        if refused:
            result = SmtpResult(result.outcome, result.code, result.enhanced, result.text, refused)
        return result

    def _rset(self) -> None:
        try:
            assert self.client is not None
            self.client.rset()
        except (OSError, smtplib.SMTPException):
            self.client = None


class _DroppedBeforeData(Exception):
    pass


UNSAFE = "contains <, >, a space, a line break or NUL; not usable in an SMTP command"


def _unsafe(address: str) -> bool:
    return not address or any(c in address for c in "<>\r\n\0 \t")


def _command(client: smtplib.SMTP, verb: str, keyword: str, address: str) -> tuple[int, bytes]:
    """`MAIL FROM:<a>` / `RCPT TO:<a>` with the bare address as stored.

    smtplib's mail()/rcpt() re-parse each address with email.utils.parseaddr, which
    costs as much as building the message and rewrites legacy local parts (a..b@) that
    a shop may have allowed; our addresses are bare addr-specs, and the characters that
    could break the command line are refused before (`_unsafe`).
    """
    client.putcmd(verb, f"{keyword}:<{address}>")
    return client.getreply()
