"""The sending process the fault suite kills: the real `run_send_cycle`, nothing mocked.

Modes (all print one line per event on stdout and flush it):

- `serve URL PORT`: a fork server. It imports everything once, then for each stdin
  line `run RUN_ID NOW_ISO` forks a fresh process that opens its own engine, prints
  `ready PID`, runs one whole send cycle at time NOW (`-` = the real clock) and
  prints `done PID {summary json}`. The next stdin line is `kill` (the server sends
  it SIGKILL, whether it is still running or not) or `wait`; then the server reaps
  it and prints `exit PID CODE` (CODE = -9 when the kill hit it running). Only the
  server, its parent, signals it, before reaping it, so a pid is never reused. Forking instead of starting a new Python
  keeps 100+ kills inside the time budget; each forked process is still a separate
  OS process with its own connections, killed by the parent with SIGKILL.
- `loop URL PORT RUN_PREFIX STOP_FILE`: send cycles back to back on the real clock
  until STOP_FILE exists and a cycle found nothing; prints `ready`, then
  `done {totals json}` (the concurrent-runs test starts two of these).
- `batch URL PORT CLAIM_ID IDS_FILE GO_FILE`: one `send_batch` of the ids in IDS_FILE
  (JSON) under CLAIM_ID, started when GO_FILE appears; as when Airflow runs a mapped
  send task a second time while the first try still runs.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from datetime import datetime
from pathlib import Path

from automail.db import make_engine, session_factory
from automail.sending import SendSummary, SmtpConfig, run_send_cycle, send_batch


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _smtp(port: int) -> SmtpConfig:
    """The loopback sink, or the relay named by FAULTS_SMTP_CONN (a connection's JSON:
    STARTTLS, AUTH, PIPELINING, several connections per batch)."""
    conn = os.environ.get("FAULTS_SMTP_CONN")
    if conn:
        return SmtpConfig.from_uri_or_json(conn, "automail_smtp")
    return SmtpConfig(host="127.0.0.1", port=port, timeout=10)


def _engine(url: str):  # noqa: ANN202
    engine = make_engine(url)
    with engine.connect() as conn:  # connected before "ready": kills land in the cycle
        conn.exec_driver_sql("SELECT 1")
    return engine


def run_one(url: str, port: int, run_id: str, now: datetime | None) -> None:
    engine = _engine(url)
    say(f"ready {os.getpid()}")
    summary = run_send_cycle(session_factory(engine), _smtp(port), run_id, now)
    say(f"done {os.getpid()} {json.dumps(summary.as_dict())}")


def serve(url: str, port: int) -> None:
    for line in sys.stdin:
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "quit":
            return
        _, run_id, when = parts
        now = None if when == "-" else datetime.fromisoformat(when)
        pid = os.fork()
        if pid == 0:  # the sender: its own engine, its own connections
            code = 0
            try:
                run_one(url, port, run_id, now)
            except BaseException as exc:  # reported to the parent, which fails the test
                say(f"error {os.getpid()} {type(exc).__name__}: {exc}")
                code = 1
            finally:
                os._exit(code)
        say(f"pid {pid}")
        if sys.stdin.readline().strip() == "kill":
            os.kill(pid, signal.SIGKILL)  # unreaped, so still ours even if it has exited
        _, status = os.waitpid(pid, 0)
        say(f"exit {pid} {os.waitstatus_to_exitcode(status)}")


def loop(url: str, port: int, prefix: str, stop_file: Path) -> None:
    factory = session_factory(_engine(url))
    total = SendSummary()
    say("ready")
    n = 0
    while True:
        stopping = stop_file.exists()
        summary = run_send_cycle(factory, _smtp(port), f"{prefix}-{n}")
        total.merge(summary)
        n += 1
        if summary.claimed == 0:
            if stopping:
                break
            time.sleep(0.005)
    say(f"done {json.dumps({'cycles': n, **total.as_dict()})}")


def batch(url: str, port: int, claim_id: str, ids_file: Path, go_file: Path) -> None:
    factory = session_factory(_engine(url))
    ids = json.loads(ids_file.read_text())
    say("ready")
    while not go_file.exists():
        time.sleep(0.001)
    summary = send_batch(factory, ids, claim_id, _smtp(port), "fault-suite")
    say(f"done {json.dumps(summary.as_dict())}")


def main(argv: list[str]) -> None:
    mode, url, port = argv[0], argv[1], int(argv[2])
    if mode == "serve":
        serve(url, port)
    elif mode == "batch":
        batch(url, port, argv[3], Path(argv[4]), Path(argv[5]))
    elif mode == "loop":
        loop(url, port, argv[3], Path(argv[4]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
