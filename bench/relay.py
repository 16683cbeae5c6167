"""Benchmark: sending through a relay as users meet it — STARTTLS with a verified
certificate, AUTH, PIPELINING, 10 ms each way (RTT 20 ms) — side by side in one run.

The relay is `automail.relay_sim` in its own process (aiosmtpd + a latency proxy, so it
shares no GIL with the sender). Figures:
- automail, the DAG's code path: `plan_run` then every batch through `send_batch` in
  `--workers` processes (the mapped tasks under the `automail_smtp` pool), each batch on
  `--connections` SMTP connections (the relay connection's `connections` extra); the
  store is PostgreSQL (AUTOMAIL_BENCH_PG_URL), freshly seeded;
- (a) a plain smtplib loop on one connection (TLS + AUTH once, `sendmail` per mail), on
  a sample (`--plain`): at 4 round trips per mail 30,000 would take over half an hour;
- (b) Airflow's `send_email` per mail (a new connection, TLS and AUTH each time), sample;
- the zero-latency figure: automail vs the plain loop straight to the relay (TLS + AUTH,
  no proxy), both on all `--mails`;
- the curve: automail mails/s at 1, 4, 16 connections x RTT 2, 20, 100 ms
  (`--curve-mails` each).
Prints JSON lines {"name","value","unit","baseline","ratio"}.
"""

from __future__ import annotations

import argparse
import json
import os
import smtplib
import ssl
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from figures import emit
from send import DEFAULT_PG, prebuilt_messages, reset_store, run_automail, seed

LOGIN, PASSWORD = "relay-user", "relay-password"


class Relay:
    """`python -m automail.relay_sim` in a child process."""

    def __init__(self, rtt_ms: float) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="automail-relay-"))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "automail.relay_sim", "--dir", str(self.dir),
             "--rtt-ms", str(rtt_ms), "--no-save"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        _, port, direct, ca = self.proc.stdout.readline().split()
        self.port, self.direct_port, self.ca_file = int(port), int(direct), ca

    def count(self) -> int:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("count\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(30)


def smtp_config(relay: Relay, connections: int, direct: bool = False):  # noqa: ANN201
    from automail.sending import SmtpConfig

    conn = {
        "conn_type": "smtp",
        "host": "127.0.0.1",
        "port": relay.direct_port if direct else relay.port,
        "login": LOGIN,
        "password": PASSWORD,
        "extra": {"disable_ssl": True, "ca_file": relay.ca_file, "connections": connections,
                  "timeout": 60},
    }  # fmt: skip
    return SmtpConfig.from_uri_or_json(json.dumps(conn), "automail_smtp")


def run_plain(relay: Relay, messages: list, direct: bool = False) -> float:
    context = ssl.create_default_context(cafile=relay.ca_file)
    t0 = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", relay.direct_port if direct else relay.port) as client:
        client.starttls(context=context)
        client.login(LOGIN, PASSWORD)
        for sender, to, data in messages:
            client.sendmail(sender, [to], data)
    return time.perf_counter() - t0


def run_naive(relay: Relay, n: int) -> float:
    home = tempfile.mkdtemp(prefix="automail-bench-airflow-")
    os.environ.setdefault("AIRFLOW_HOME", home)
    conn = {"conn_type": "smtp", "host": "127.0.0.1", "port": relay.port, "login": LOGIN,
            "password": PASSWORD, "extra": {"disable_ssl": True}}  # fmt: skip
    os.environ.update(
        {
            "AIRFLOW__SMTP__SMTP_HOST": "127.0.0.1",
            "AIRFLOW__SMTP__SMTP_PORT": str(relay.port),
            "AIRFLOW__SMTP__SMTP_SSL": "False",
            "AIRFLOW__SMTP__SMTP_STARTTLS": "True",
            "AIRFLOW__SMTP__SMTP_MAIL_FROM": "shop@tea.example.jp",
            "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(conn),
            "SSL_CERT_FILE": relay.ca_file,  # send_email verifies with the default context
        }
    )
    import logging

    from airflow.utils.email import send_email

    logging.getLogger("airflow.utils.email").setLevel(logging.WARNING)
    send_email(["warmup@example.jp"], "warm-up", "<p>warm-up</p>")
    t0 = time.perf_counter()
    for i in range(n):
        send_email([f"user{i}@example.jp"], "【お茶の山田園】ご注文ありがとうございます",
                   f"<p>山田 花子{i} 様</p>", mime_charset="utf-8")  # fmt: skip
    return time.perf_counter() - t0


def automail_run(url: str, n: int, smtp, workers: int) -> float:  # noqa: ANN001
    from automail import settings
    from automail.db import make_engine, session_factory

    reset_store(url)
    engine = make_engine(url, pool_size=2)
    factory = session_factory(engine)
    seed(factory, n)
    with factory() as session:  # one batch per worker, as many mapped tasks as pool slots
        settings.put(session, "send_batch_size", -(-n // workers))
        session.commit()
    seconds, sent = run_automail(factory, url, smtp, workers)
    engine.dispose()
    assert sent == n, (sent, n)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mails", type=int, default=30000)
    parser.add_argument("--plain", type=int, default=500, help="plain-loop sample via proxy")
    parser.add_argument("--naive", type=int, default=60, help="send_email sample")
    parser.add_argument("--workers", type=int, default=4, help="batches at once (pool slots)")
    parser.add_argument("--connections", type=int, default=4, help="connections per batch")
    parser.add_argument("--rtt-ms", type=float, default=20.0)
    parser.add_argument("--curve-mails", type=int, default=600)
    parser.add_argument("--no-curve", action="store_true")
    parser.add_argument("--pg-url", default=os.environ.get("AUTOMAIL_BENCH_PG_URL", DEFAULT_PG))
    args = parser.parse_args(argv)
    conns = args.workers * args.connections

    relay = Relay(args.rtt_ms)
    try:
        smtp = smtp_config(relay, args.connections)
        auto_s = automail_run(args.pg_url, args.mails, smtp, args.workers)
        delivered = relay.count()
        from automail.db import make_engine, session_factory

        factory = session_factory(make_engine(args.pg_url))
        messages = prebuilt_messages(factory)
        plain_s = run_plain(relay, messages[: args.plain])
        naive_s = run_naive(relay, args.naive)
        # zero latency, straight to the relay: same mails, plain loop then automail
        plain0_s = run_plain(relay, messages, direct=True)
        auto0_s = automail_run(
            args.pg_url, args.mails, smtp_config(relay, args.connections, True), args.workers
        )
    finally:
        relay.close()
    rate = args.mails / auto_s
    plain_rate, naive_rate = args.plain / plain_s, args.naive / naive_s
    tag = f"RTT {args.rtt_ms:g} ms, STARTTLS+AUTH"
    emit(f"automail, {args.mails} mails, {conns} connections, {tag}", rate, "mails/s")
    emit(f"automail wall time for {args.mails} mails, {tag}", auto_s, "s")
    emit(f"relay accepted (of {args.mails})", delivered, "mails")
    emit(f"plain smtplib loop, 1 connection, {tag} ({args.plain}-mail sample)",
         plain_rate, "mails/s")  # fmt: skip
    emit(f"naive airflow send_email per mail, {tag} ({args.naive}-mail sample)",
         naive_rate, "mails/s")  # fmt: skip
    emit(f"automail vs plain loop, {tag}", rate, "mails/s", "plain smtplib loop",
         rate / plain_rate)  # fmt: skip
    emit(f"automail vs naive, {tag}", rate, "mails/s", "airflow send_email per mail",
         rate / naive_rate)  # fmt: skip
    rate0, plain0 = args.mails / auto0_s, args.mails / plain0_s
    emit("automail vs plain loop, zero latency, STARTTLS+AUTH", rate0, "mails/s",
         "plain smtplib loop", rate0 / plain0)  # fmt: skip
    emit("plain smtplib loop, zero latency, STARTTLS+AUTH", plain0, "mails/s")
    if args.no_curve:
        return
    for rtt in (2, 20, 100):
        relay = Relay(rtt)
        try:
            for total in (1, 4, 16):
                workers = min(args.workers, total)
                smtp = replace(smtp_config(relay, total // workers))
                seconds = automail_run(args.pg_url, args.curve_mails, smtp, workers)
                emit(f"curve: automail, {total} connections, RTT {rtt} ms",
                     args.curve_mails / seconds, "mails/s")  # fmt: skip
        finally:
            relay.close()


if __name__ == "__main__":
    main()
