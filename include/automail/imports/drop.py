"""The drop location the `automail_import` DAG scans: `<root>/<shop code>/<kind>/*.csv`.

The root is the setting `import_drop_location`: a local folder (default var/import) or
any URL `airflow.sdk.ObjectStoragePath` understands (s3://bucket/prefix, gs://…), with
its credentials in the Airflow connection the URL names (`s3://conn_id@bucket/…`).
A shop may put `mapping.toml` in a kind's folder (e.g. `preset = "next_engine_orders"`);
otherwise the kind's own CSV format applies (automail_<kind>.toml).

A file is read once it has been unchanged for `import_settle_seconds` (a copy still
in progress is left for the next scan); writers can also drop under a dot-name or
`.part` suffix and rename. A file already recorded with the same size and time is not
read again; the same bytes under another name are recognised by checksum.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, select

from automail import settings
from automail.db import project_home, session_scope
from automail.imports.mapping import KINDS, Mapping, MappingError, load_mapping, mapping_from_text
from automail.imports.run import ImportResult, Location, import_file, shop_ids
from automail.models import ImportFile

log = logging.getLogger(__name__)
MAPPING_FILE = "mapping.toml"
REJECTS_SUFFIX = ".rejects.csv"


def drop_root(engine: Engine) -> str:
    with session_scope(engine) as session:
        configured = settings.get(session, "import_drop_location")
    return configured or str(project_home() / "var" / "import")


@dataclass
class ScanReport:
    results: list[ImportResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # folders/mappings that could not be used

    @property
    def changed_orders(self) -> bool:
        """Orders or shipments were added or changed: creation has work."""
        return any(r.kind in ("orders", "shipments") and r.changed for r in self.results)

    @property
    def failed(self) -> list[ImportResult]:
        return [r for r in self.results if r.status == "failed"]


def _is_candidate(name: str) -> bool:
    low = name.lower()
    return (
        low.endswith(".csv")
        and not low.endswith(REJECTS_SUFFIX)
        and not name.startswith(".")
        and not low.endswith(".part")
    )


def _mapping_for(folder: Location, kind: str) -> Mapping:
    candidate = Location(folder.path / MAPPING_FILE)
    if candidate.path.exists():
        with candidate.path.open("rb") as fh:
            text = fh.read().decode("utf-8")
        return mapping_from_text(text, str(candidate), kind)
    return load_mapping(None, kind)


def _seen(engine: Engine, source: str, size: int, mtime: datetime) -> bool:
    with engine.connect() as conn:
        row = conn.execute(
            select(ImportFile.id).where(
                ImportFile.source == source,
                ImportFile.size == size,
                ImportFile.modified_at == mtime,
                ImportFile.status.in_(("done", "failed", "skipped")),
            )
        ).first()
    return row is not None


def scan_drop(engine: Engine, root: str | None = None, now: datetime | None = None) -> ScanReport:
    """Import every new file under the drop root; returns what each import did."""
    root_loc = Location(root or drop_root(engine))
    now = now or datetime.now(UTC)
    with session_scope(engine) as session:
        settle = timedelta(seconds=settings.get(session, "import_settle_seconds"))
        chunk_rows = settings.get(session, "import_chunk_rows")
    report = ScanReport()
    if not root_loc.path.exists():
        log.info("drop location %s does not exist yet: nothing to import", root_loc)
        return report
    shops = shop_ids(engine)
    for shop_dir in sorted(root_loc.path.iterdir(), key=lambda p: p.name):
        if not shop_dir.is_dir() or shop_dir.name.startswith("."):
            continue
        if shop_dir.name not in shops:
            report.problems.append(f"{shop_dir}: no shop with code {shop_dir.name!r}")
            continue
        for kind in KINDS:
            folder = Location(shop_dir / kind)
            if not folder.path.is_dir():
                continue
            try:
                mapping = _mapping_for(folder, kind)
            except (MappingError, UnicodeDecodeError) as exc:
                report.problems.append(f"{folder}: {exc}")
                continue
            files = [Location(p) for p in folder.path.iterdir() if _is_candidate(p.name)]
            for loc in sorted(files, key=lambda loc: (loc.stat()[1], loc.name)):
                size, mtime = loc.stat()
                if now - mtime < settle or _seen(engine, str(loc), size, mtime):
                    continue
                result = import_file(engine, loc, kind, shop_dir.name, mapping, chunk_rows)
                log.info("%s", result.summary())
                report.results.append(result)
    return report
