"""Hostile import files, and imports killed mid-file (issue 15).

Every hostile file either fails as a whole with an error naming the problem (nothing
written) or is imported with each record accounted for: imported, or rejected with
its line and reason. Named counters: `import_rows_lost` (a good row missing from the
store, or a record neither imported nor rejected) and `import_rows_duplicated` (a
key stored twice, a reject recorded twice) must stay 0; `import_kills` counts SIGKILLs.

Knobs: FAULTS_IMPORT_FUZZ (mutated files per store, default 60), FAULTS_IMPORT_KILLS
(kills per store, default 4), FAULTS_SEED.
"""

from __future__ import annotations

import csv
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy.exc import DBAPIError

from automail.db import make_engine, session_factory
from automail.imports import import_file
from automail.imports.run import rejects_csv
from automail.models import ImportFile, ImportReject, Order
from automail.sample_data import make_shop

from .conftest import FaultTotals, env_int

HERE = Path(__file__).resolve().parent
NE = "next_engine_orders"
HEADER = "受注番号,受注日,購入者名,購入者メールアドレス,発送日"


def _good(n: int, prefix: str = "G") -> list[str]:
    return [f"{prefix}-{i},2026/11/20 10:{i % 60:02d},山田 花子,h{i}@example.jp," for i in range(n)]


def _file(tmp: Path, name: str, lines: list[str], enc: str = "cp932", head: bytes = b"") -> Path:
    path = tmp / name
    path.write_bytes(head + "\r\n".join([HEADER, *lines]).encode(enc) + b"\r\n")
    return path


def _shop(engine: Engine) -> None:
    with session_factory(engine)() as s:
        make_shop(s, "tea")
        s.commit()


def _numbers(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(select(Order.order_number)))


def _account(engine: Engine, result, good: set[str], totals: FaultTotals) -> None:  # noqa: ANN001
    """Every record imported or rejected once; every good row stored once."""
    stored = _numbers(engine)
    lost = len(good - set(stored))
    dup = len(stored) - len(set(stored))
    if result.status == "done":
        lost += result.read - (
            result.inserted + result.updated + result.unchanged + result.rejected
        )
        with engine.connect() as conn:
            lines = conn.execute(
                select(ImportReject.line, ImportReject.column, func.count())
                .where(ImportReject.import_file_id == result.file_id)
                .group_by(ImportReject.line, ImportReject.column)
                .having(func.count() > 1)
            ).all()
        dup += len(lines)
    totals.count("import_rows_lost", lost)
    totals.count("import_rows_duplicated", dup)
    totals.inputs += 1
    assert (lost, dup) == (0, 0), result.summary()


def _reset(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in ("import_rejects", "import_files", "shipments", "order_lines", "orders"):
            conn.execute(text(f"DELETE FROM {table}"))


def _cases(tmp: Path) -> list[tuple[str, Path, str, set[str]]]:
    """(name, file, expectation, good order numbers): 'failed:<text>' or 'done:<n rejected>'."""
    g = _good(3)
    good = {"G-0", "G-1", "G-2"}
    formula = ["F-1,2026/11/20 10:00,=cmd|' /C calc'!A0,f1@example.jp,",
               "F-2,=1+1,@SUM(A1),f2@example.jp,"]  # fmt: skip
    cases = [
        ("formula cells", _file(tmp, "formula.csv", g + formula), "done:1", good | {"F-1"}),
        ("huge field", _file(tmp, "huge.csv", g + ["H-1,2026/11/20,名" * 1 + "x" * 2_000_000 + ",h@example.jp,"]), "done:1", good),
        ("field beyond the CSV limit", _file(tmp, "huger.csv", g + ["H-2,2026/11/20," + "y" * 17_000_000 + ",h@example.jp,"] + _good(2, "A")), "done:1", good | {"A-0", "A-1"}),
        ("NUL bytes", _file(tmp, "nul.csv", g + ["N-1,2026/11/20,山田\x00花子,n@example.jp,", "N-2\x00,2026/11/20,x,n2@example.jp,"]), "done:2", good),
        ("mixed encodings", _file(tmp, "mixed.csv", g, head=b"") , "", good),
        ("wrong delimiter", tmp / "semicolon.csv", "failed:are not in the header", set()),
        ("10k-column row", _file(tmp, "wide.csv", g + ["W-1," + ",".join(["x"] * 10_000)]), "done:1", good),
        ("newline in quoted fields", _file(tmp, "newline.csv", ['Q-1,2026/11/20,"山田\n花子",q@example.jp,', 'Q-2,2026/11/20,"a\r\nb\nc",q2@example.jp,'] + g), "done:2", good),
        ("unterminated quote", _file(tmp, "quote.csv", g + ['U-1,2026/11/20,"never closed,u@example.jp,']), "done:1", good),
        ("blank and short lines", _file(tmp, "short.csv", g + ["", "S-1,2026/11/20", ",,,,"]), "done:2", good),
        ("UTF-8 BOM on a CP932 mapping", _file(tmp, "bom8.csv", g, "utf-8", b"\xef\xbb\xbf"), "done:0", good),
        ("UTF-8 BOM twice", _file(tmp, "bom2.csv", g, "utf-8", b"\xef\xbb\xbf\xef\xbb\xbf"), "failed:'受注番号'", set()),
        ("UTF-16 LE BOM", tmp / "bom16le.csv", "failed:UTF-16 byte-order mark", set()),
        ("UTF-16 BE BOM", tmp / "bom16be.csv", "failed:UTF-16 byte-order mark", set()),
        ("UTF-32 BOM", tmp / "bom32.csv", "failed:UTF-32 byte-order mark", set()),
        ("empty file", tmp / "empty.csv", "failed:no header line", set()),
        ("header only", _file(tmp, "header.csv", []), "done:0", set()),
        ("CR-only line ends", tmp / "cr.csv", "done:0", good),
    ]  # fmt: skip
    text_ = "\r\n".join([HEADER, *g])
    (tmp / "bom16le.csv").write_bytes(b"\xff\xfe" + text_.encode("utf-16-le"))
    (tmp / "bom16be.csv").write_bytes(b"\xfe\xff" + text_.encode("utf-16-be"))
    (tmp / "bom32.csv").write_bytes(b"\xff\xfe\x00\x00" + text_.encode("utf-32-le"))
    (tmp / "empty.csv").write_bytes(b"")
    (tmp / "semicolon.csv").write_bytes(text_.replace(",", ";").encode("cp932"))
    (tmp / "cr.csv").write_bytes("\r".join([HEADER, *g]).encode("cp932"))
    mixed = ("\r\n".join([HEADER, *g]) + "\r\n").encode(
        "cp932"
    ) + "M-1,2026/11/20,様,m@example.jp,\r\n".encode()
    (tmp / "mixed.csv").write_bytes(mixed)
    cases[4] = ("mixed encodings", tmp / "mixed.csv", "failed:line 5: bytes", set())
    return cases


def test_hostile_files_lose_and_duplicate_nothing(engine, fault_totals, tmp_path):
    _shop(engine)
    for name, path, expect, good in _cases(tmp_path):
        _reset(engine)
        result = import_file(engine, path, "orders", "tea", NE)
        state, _, detail = expect.partition(":")
        assert result.status == state, f"{name}: {result.summary()}"
        if state == "failed":
            assert detail in result.error, f"{name}: {result.error}"
            assert _numbers(engine) == [], f"{name}: a failed file wrote rows"
        else:
            assert result.rejected == int(detail), f"{name}: {result.summary()}"
        _account(engine, result, good, fault_totals)
    fault_totals.lines.append(
        f"import hostile files ({engine.dialect.name}): {len(_cases(tmp_path))} cases"
    )


def test_rejects_file_never_runs_a_formula(engine, fault_totals, tmp_path):
    _shop(engine)
    path = _file(tmp_path, "f.csv", ['F-2,=HYPERLINK("x"),@SUM(A1),f2@example.jp,', "F-3,+1,-2,,"])
    result = import_file(engine, path, "orders", "tea", NE)
    rows = list(csv.reader(rejects_csv(engine, result.file_id, "f.csv").splitlines()))
    values = [r[3] for r in rows[1:]]
    assert values == ['\'=HYPERLINK("x")', "'+1", ""], values
    assert all(not v.startswith(("=", "+", "-", "@")) for v in values)
    fault_totals.inputs += 1


def test_fuzzed_files_account_for_every_record(engine, fault_totals, tmp_path):
    """Seeded mutations of a good export: quotes, separators, bytes, line breaks."""
    _shop(engine)
    rng = random.Random(env_int("FAULTS_SEED", 8))
    base = ("\r\n".join([HEADER, *_good(30)]) + "\r\n").encode("cp932")
    junk = [b'"', b",", b"\r\n", b"\n", b"\x00", b"\x82", b"\xff", b";", b"\t", b"=", "様".encode()]
    for i in range(env_int("FAULTS_IMPORT_FUZZ", 60)):
        data = bytearray(base)
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(len(HEADER.encode("cp932")) + 2, len(data))
            data[at : at + rng.randint(0, 3)] = rng.choice(junk)
        _reset(engine)
        path = tmp_path / f"fuzz{i}.csv"
        path.write_bytes(bytes(data))
        result = import_file(engine, path, "orders", "tea", NE)
        if result.status == "failed":
            assert "line" in result.error and _numbers(engine) == [], result.error
            fault_totals.inputs += 1
            continue
        _account(engine, result, set(), fault_totals)


def _wait_for_a_chunk(engine: Engine, proc: subprocess.Popen, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        with engine.connect() as conn:
            if conn.scalar(select(func.max(ImportFile.rows_read))):
                return True
        time.sleep(0.02)
    return False


def test_killed_import_rerun_stores_each_row_once(engine, store_url, fault_totals, tmp_path):
    """SIGKILL the importing process after a chunk or more; the rerun finishes the file."""
    _shop(engine)
    rng = random.Random(env_int("FAULTS_SEED", 8))
    rows = 6000
    path = _file(tmp_path, "big.csv", _good(rows, "K"))
    for _ in range(env_int("FAULTS_IMPORT_KILLS", 4)):
        _reset(engine)
        proc = subprocess.Popen(
            [sys.executable, str(HERE / "import_child.py"), store_url, str(path), "tea", NE, "500"],
            stdout=subprocess.PIPE,
            env=os.environ.copy(),
        )
        started = _wait_for_a_chunk(engine, proc)
        time.sleep(rng.uniform(0, 0.5))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            fault_totals.count("import_kills")
        proc.wait(30)
        assert started, "the child never committed a chunk"
        with engine.connect() as conn:
            states = list(conn.scalars(select(ImportFile.status)))
        killed = proc.returncode == -signal.SIGKILL
        if killed:  # a partial file is never marked done
            assert states == ["running"], states
        result = import_file(engine, path, "orders", "tea", NE)
        assert result.status == ("done" if killed else "skipped"), result.summary()
        with engine.connect() as conn:
            assert list(conn.scalars(select(ImportFile.status))) == (
                ["done"] if killed else ["done", "skipped"]
            )
        good = {f"K-{i}" for i in range(rows)}
        stored = _numbers(engine)
        fault_totals.count("import_rows_lost", len(good - set(stored)))
        fault_totals.count("import_rows_duplicated", len(stored) - len(set(stored)))
        fault_totals.inputs += 1
        assert sorted(stored) == sorted(good)
    fault_totals.lines.append(f"import kills ({engine.dialect.name}): rerun stored every row once")


def test_store_outage_mid_import_stops_the_read_ahead_and_rerun_stores_each_row_once(
    engine, store_url, fault_totals, tmp_path
):
    """The import's server connection is cut after a chunk: the import fails with the
    store's error, its read-ahead thread ends with it, the file stays `running`, and the
    rerun stores every row once."""
    if engine.dialect.name != "postgresql":
        pytest.skip("cutting a server connection needs a server")
    _shop(engine)
    rows = 20_000
    path = _file(tmp_path, "outage.csv", _good(rows, "O"))
    victim = make_engine(store_url, connect_args={"application_name": "automail-import-cut"})
    cut = threading.Event()

    def cut_after_a_chunk() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with engine.connect() as conn:
                if conn.scalar(select(func.max(ImportFile.rows_read))):
                    conn.execute(
                        text(
                            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                            "WHERE application_name = 'automail-import-cut'"
                        )
                    )
                    cut.set()
                    return
            time.sleep(0.01)

    cutter = threading.Thread(target=cut_after_a_chunk)
    cutter.start()
    with pytest.raises(DBAPIError):
        import_file(victim, path, "orders", "tea", NE, 500)
    cutter.join()
    victim.dispose()
    assert cut.is_set()
    assert not [t for t in threading.enumerate() if t.name == "import-read-ahead"]
    fault_totals.count("import_outages")
    with engine.connect() as conn:
        assert list(conn.scalars(select(ImportFile.status))) == ["running"]
    result = import_file(engine, path, "orders", "tea", NE)
    assert (result.status, result.read, result.rejected) == ("done", rows, 0), result.summary()
    stored = _numbers(engine)
    fault_totals.count("import_rows_lost", rows - len(set(stored)))
    fault_totals.count("import_rows_duplicated", len(stored) - len(set(stored)))
    fault_totals.inputs += 1
    assert sorted(stored) == sorted(f"O-{i}" for i in range(rows))
    fault_totals.lines.append("import outage (postgresql): read-ahead stopped, rerun stored once")


pytestmark = pytest.mark.filterwarnings("ignore::sqlalchemy.exc.SAWarning")
