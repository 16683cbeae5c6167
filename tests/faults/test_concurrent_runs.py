"""Two send runs at once over the same queue: nothing is sent twice (issue 8, F3).

1. Two sender processes (tests/faults/sender_child.py `loop`) run send cycles back to
   back while new mails keep arriving in waves, so both really claim and send.
2. The same claimed batch is sent by two processes at once, as when Airflow starts a
   second try of a mapped send task while the first still runs. On PostgreSQL one of
   the two tries may still be aborted by the server's deadlock detector (its open
   transaction rolls back); that is tolerated and counted (`aborted_tries`), as long
   as afterwards (lease recovery + one more run) every mail is sent once or held in
   doubt, and no Message-ID arrives twice.
Both on PostgreSQL (SKIP LOCKED) and SQLite (write lock). Every mail must end `sent`
with exactly one message at the sink (a separate process) carrying its Message-ID.

Knobs: FAULTS_CONCURRENT_WAVES (default 30 waves of FAULTS_CONCURRENT_WAVE=20 mails,
after an initial queue of 200), FAULTS_SEED.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from automail.db import session_factory
from automail.sending import SmtpConfig, plan_run, run_send_cycle

from .conftest import (
    SENDER_CHILD,
    FaultTotals,
    RelayProcess,
    SinkProcess,
    env_int,
    fault_shop,
    judge,
    queue_mails,
)

STORES = pytest.mark.parametrize("store_url", ["postgres", "sqlite"], indirect=True)


def _spawn(*args: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, str(SENDER_CHILD), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line == "ready", f"sender did not start: {line!r}"
    return proc


def _wait_for_messages(sink: SinkProcess, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while sum(1 for _ in sink.dir.glob("*.eml")) < n:
        assert time.monotonic() < deadline, f"the sink did not receive {n} messages"
        time.sleep(0.002)


def _result(proc: subprocess.Popen, timeout: float = 180) -> dict:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0 and "DeadlockDetected" in (err or ""):
        return {"aborted": True, "sent": 0, "skipped": 0}
    assert proc.returncode == 0, f"sender exited with {proc.returncode}: {out}"
    [line] = [x for x in out.splitlines() if x.startswith("done ")]
    return json.loads(line[5:])


def _record(totals: FaultTotals, name: str, runs: int, verdict, extra: dict) -> None:  # noqa: ANN001
    totals.runs += runs
    totals.mails += verdict.mails
    totals.sent += verdict.sent
    totals.lost += len(verdict.lost)
    totals.duplicated += len(verdict.duplicated)
    info = {
        "mails": verdict.mails,
        "sent": verdict.sent,
        "lost": len(verdict.lost),
        "duplicated": len(verdict.duplicated),
        **extra,
    }
    totals.lines.append(f"{name}: {json.dumps(info)}")


def _assert_all_sent_once(verdict) -> None:  # noqa: ANN001
    assert verdict.duplicated == [], f"Message-IDs received twice: {verdict.duplicated}"
    assert verdict.lost == [], f"mails not sent: {verdict.lost}"
    assert verdict.strays == []
    assert verdict.sent == verdict.mails


@STORES
def test_two_send_runs_over_one_queue_send_each_mail_once(
    engine: Engine, store_url: str, tmp_path: Path, fault_totals: FaultTotals
) -> None:
    waves = env_int("FAULTS_CONCURRENT_WAVES", 30)
    wave = env_int("FAULTS_CONCURRENT_WAVE", 20)
    shop = fault_shop(engine)
    ids = queue_mails(engine, shop, 200, "concurrent")
    stop = tmp_path / "stop"
    with SinkProcess(tmp_path / "sink") as sink:
        procs = [_spawn("loop", store_url, str(sink.port), name, str(stop)) for name in "ab"]
        try:
            for _ in range(waves):
                ids += queue_mails(engine, shop, wave, "concurrent")
                time.sleep(0.03)
            stop.touch()
            results = [_result(p) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        counts = sink.message_id_counts()
    with session_factory(engine)() as session:
        verdict = judge(session, ids, counts)
    sent_by = [r["sent"] for r in results]
    _record(
        fault_totals,
        f"concurrent runs ({engine.dialect.name})",
        sum(r["cycles"] for r in results),
        verdict,
        {"sent_by_run": sent_by},
    )
    _assert_all_sent_once(verdict)
    assert sum(sent_by) == len(ids)
    assert all(n > 0 for n in sent_by), f"one run never got a mail: {sent_by}"


@STORES
@pytest.mark.parametrize("second_try", ["at once", "mid-batch"])
@pytest.mark.parametrize("path", ["sink", "relay"])
def test_same_batch_sent_by_two_processes_at_once_sends_each_mail_once(
    engine: Engine,
    store_url: str,
    tmp_path: Path,
    fault_totals: FaultTotals,
    second_try: str,
    path: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # "mid-batch": the second try starts while the first has a group in flight, as when
    # Airflow re-runs a mapped task whose first try still runs. It must skip that group,
    # not hold it in doubt: the first try is alive and finishes it. "relay": both tries
    # send through a STARTTLS + AUTH relay with PIPELINING on 4 parallel lanes each.
    if path == "relay" and engine.dialect.name != "postgresql":
        pytest.skip("parallel lanes run on PostgreSQL only (SQLite: one writer)")
    shop = fault_shop(engine)
    ids = queue_mails(engine, shop, 150, "twice")
    plan = plan_run(session_factory(engine), "twice", datetime.now(UTC))
    [batch] = plan.batches
    assert sorted(batch) == ids
    (tmp_path / "ids.json").write_text(json.dumps(batch))
    gos = [tmp_path / "go-first", tmp_path / "go-second"]
    server = (
        RelayProcess(tmp_path / "relay", 2) if path == "relay" else SinkProcess(tmp_path / "sink")
    )
    with server as sink:
        cfg = SmtpConfig(host="127.0.0.1", port=sink.port, timeout=10)
        if isinstance(sink, RelayProcess):
            conn = sink.connection(4)
            monkeypatch.setenv("FAULTS_SMTP_CONN", conn)  # the spawned tries read it
            cfg = SmtpConfig.from_uri_or_json(conn)
        args = ("batch", store_url, str(sink.port), plan.claim_id, str(tmp_path / "ids.json"))
        procs = [_spawn(*args, str(go)) for go in gos]
        try:
            gos[0].touch()
            if second_try == "mid-batch":
                _wait_for_messages(sink, 40)
            gos[1].touch()
            results = [_result(p) for p in procs]
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        aborted = sum(1 for r in results if r.get("aborted"))
        if aborted:  # what the DAG does next: recover the lapsed claims, send the rest
            later = datetime.now(UTC) + timedelta(hours=1)
            run_send_cycle(session_factory(engine), cfg, "twice-after", later)
        counts = sink.message_id_counts()
    with session_factory(engine)() as session:
        verdict = judge(session, ids, counts)
    _record(
        fault_totals,
        f"same batch twice, {second_try}, {path} ({engine.dialect.name})",
        2 + (1 if aborted else 0),
        verdict,
        {
            "sent_by_try": [r["sent"] for r in results],
            "skipped": [r["skipped"] for r in results],
            "aborted_tries": aborted,
            "in_doubt_held": verdict.in_doubt,
        },
    )
    assert aborted <= 1, "both tries aborted"
    assert verdict.duplicated == [], f"Message-IDs received twice: {verdict.duplicated}"
    assert verdict.lost == [], f"mails neither sent nor held in doubt: {verdict.lost}"
    assert verdict.sent + verdict.in_doubt == verdict.mails
    if not aborted:
        _assert_all_sent_once(verdict)
