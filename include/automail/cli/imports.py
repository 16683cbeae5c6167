"""`automail import …`: load a shop's orders, customers and shipments; see what was refused."""

from __future__ import annotations

import argparse
import sys
import unicodedata

from sqlalchemy import select

from automail.cli import CliError
from automail.db import get_engine
from automail.imports.mapping import KINDS, preset_names
from automail.models import ImportFile, Shop


def register(sub: argparse._SubParsersAction) -> None:
    imp = sub.add_parser("import", help="import orders, customers, shipments (CSV, SQL)")
    cmds = imp.add_subparsers(dest="import_cmd", required=True, metavar="WHAT")
    for kind in KINDS:
        p = cmds.add_parser(kind, help=f"import {kind} CSV file(s)")
        p.add_argument("--shop", help="shop code (rows may name their own shop if mapped)")
        p.add_argument(
            "--mapping",
            help=f"preset ({', '.join(preset_names())}) or a TOML file; default automail_{kind}",
        )
        p.add_argument("files", nargs="+", metavar="FILE", help="path or URL (s3://…)")
        p.set_defaults(func=_import, kind=kind)

    rej = cmds.add_parser("rejects", help="rows an import refused: file, line, column, value, why")
    rej.add_argument("--file", type=int, help="import id (default: the newest with rejects)")
    rej.add_argument("--csv", action="store_true", help="as CSV (as written beside the file)")
    rej.set_defaults(func=_rejects)

    files = cmds.add_parser("files", help="recent imports with their counts")
    files.add_argument("--limit", type=int, default=20)
    files.set_defaults(func=_files)

    scan = cmds.add_parser("scan", help="import new files from the drop location now")
    scan.add_argument("--drop", help="folder or URL (default: setting import_drop_location)")
    scan.set_defaults(func=_scan)

    src = cmds.add_parser("sources", help="SQL sources (an Airflow connection + a query)")
    srcs = src.add_subparsers(dest="sources_cmd", required=True)
    add = srcs.add_parser("add", help="add or change a shop's SQL source")
    add.add_argument("--shop", required=True)
    add.add_argument("--kind", required=True, choices=KINDS)
    add.add_argument("--conn-id", required=True, help="Airflow connection of the shop's DB")
    add.add_argument("--query", required=True, help="SELECT …; columns as the mapping names")
    add.add_argument("--watermark-column", default="updated_at")
    add.add_argument("--mapping", help="preset or TOML file (default automail_<kind>)")
    add.set_defaults(func=_source_add)
    srcs.add_parser("list", help="SQL sources and their watermarks").set_defaults(func=_source_list)
    pull = cmds.add_parser("pull", help="pull every enabled SQL source now")
    pull.set_defaults(func=_pull)


def _import(args: argparse.Namespace) -> int:
    from automail.imports import FileError, MappingError, import_file

    engine = get_engine()
    failed = 0
    for name in args.files:
        try:
            result = import_file(engine, name, args.kind, args.shop, args.mapping)
        except (MappingError, FileNotFoundError) as exc:
            raise CliError(str(exc)) from exc
        except FileError as exc:  # pragma: no cover - import_file records these
            raise CliError(str(exc)) from exc
        print(result.summary())
        failed += result.status == "failed"
    return 1 if failed else 0


def _rejects(args: argparse.Namespace) -> None:
    from automail.imports.run import rejects_of, write_rejects_csv

    engine = get_engine()
    with engine.connect() as conn:
        query = select(ImportFile.id, ImportFile.source)
        if args.file is not None:
            row = conn.execute(query.where(ImportFile.id == args.file)).first()
            if row is None:
                raise CliError(f"--file: no import {args.file}")
        else:
            row = conn.execute(
                query.where(ImportFile.rejected > 0).order_by(ImportFile.id.desc()).limit(1)
            ).first()
            if row is None:
                print("no import has rejected rows")
                return
    file_id, source = row
    if args.csv:
        write_rejects_csv(engine, file_id, source, sys.stdout)
        return
    print(f"import #{file_id}: {source}")
    print(f"{'line':>7}  {_pad('column', 20)} {_pad('value', 24)} reason")
    for line, column, value, reason in rejects_of(engine, file_id):
        shown = repr(value if len(value) <= 21 else value[:18] + "...")
        print(f"{line:>7}  {_pad(column, 20)} {_pad(shown, 24)} {reason}")


def _pad(text: str, width: int) -> str:
    """Left-align in terminal columns: a CJK character takes two."""
    used = sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)
    return text + " " * max(width - used, 1)


def _files(args: argparse.Namespace) -> None:
    engine = get_engine()
    with engine.connect() as conn:
        rows = conn.execute(
            select(*ImportFile.__table__.c, Shop.code)
            .outerjoin(Shop, Shop.id == ImportFile.shop_id)
            .order_by(ImportFile.id.desc())
            .limit(args.limit)
        ).all()
    for row in rows:
        print(
            f"#{row.id} {row.status:<8} {row.code or '-'}/{row.kind} {row.source}: "
            f"read {row.rows_read}, inserted {row.inserted}, updated {row.updated}, "
            f"unchanged {row.unchanged}, rejected {row.rejected}"
            + (f" — {row.error}" if row.error else "")
        )


def _scan(args: argparse.Namespace) -> int:
    from automail.imports.drop import scan_drop

    report = scan_drop(get_engine(), args.drop)
    for result in report.results:
        print(result.summary())
    for problem in report.problems:
        print(f"problem: {problem}", file=sys.stderr)
    if not report.results and not report.problems:
        print("no new files")
    return 1 if report.failed or report.problems else 0


def _source_add(args: argparse.Namespace) -> None:
    from automail.imports.sql_source import add_source

    sid = add_source(
        get_engine(),
        args.shop,
        args.kind,
        args.conn_id,
        args.query,
        args.watermark_column,
        args.mapping,
    )
    print(f"sql source #{sid}: {args.shop}/{args.kind} from connection {args.conn_id}")


def _source_list(_args: argparse.Namespace) -> None:
    from automail.models import ImportSqlSource

    with get_engine().connect() as conn:
        rows = conn.execute(
            select(*ImportSqlSource.__table__.c, Shop.code)
            .join(Shop, Shop.id == ImportSqlSource.shop_id)
            .order_by(ImportSqlSource.id)
        ).all()
    for row in rows:
        print(
            f"#{row.id} {row.code}/{row.kind} conn={row.conn_id} "
            f"{row.watermark_column} >= {row.watermark} "
            f"{'enabled' if row.enabled else 'disabled'}"
        )


def _pull(_args: argparse.Namespace) -> int:
    from automail.imports.sql_source import pull_all

    results = pull_all(get_engine())
    for result in results:
        print(result.summary())
    if not results:
        print("no SQL sources")
    return 1 if any(r.status == "failed" for r in results) else 0
