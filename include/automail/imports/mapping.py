"""Column mappings: which source column feeds which field, how dates and text are read.

A mapping is a small TOML file (or a preset shipped in `mappings/`):

    kind = "orders"                  # orders | customers | shipments
    encoding = "cp932"               # utf-8 (a BOM is always honoured) | cp932 (= Shift_JIS)
    timezone = "Asia/Tokyo"          # zone of dates without an offset
    date_formats = ["%Y/%m/%d %H:%M:%S", "%Y/%m/%d"]   # strptime formats or "ISO8601"
    [columns]                        # source column -> field (FIELDS below)
    "受注番号" = "order_number"
    optional_columns = ["購入者コード"]  # may be absent from a file; others must be there
    [values.carrier]                 # optional: source value -> stored value, per field
    "ヤマト運輸" = "yamato"

Only mapped fields are written: an update never blanks a column the source does not
carry. Per shop, a drop folder's `<shop>/<kind>/mapping.toml` overrides the preset.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PRESETS = Path(__file__).with_name("mappings")
KINDS = ("orders", "customers", "shipments")
ENCODINGS = {"utf-8": "utf-8", "utf8": "utf-8", "utf-8-sig": "utf-8", "cp932": "cp932"}
ENCODINGS |= {"shift_jis": "cp932", "shift-jis": "cp932", "sjis": "cp932", "ms932": "cp932"}


@dataclass(frozen=True)
class Field:
    type: str  # text | int | datetime | bool
    max_len: int = 0  # text: the column's width
    required: bool = False
    multiline: bool = False  # text: line breaks allowed (addresses)


def _text(n: int, **kw: bool) -> Field:
    return Field("text", n, **kw)


_CUSTOMER = {
    "customer_id": _text(320),
    "customer_name": _text(200),
    "customer_kana": _text(200),
    "customer_phone": _text(40),
    "customer_prefecture": _text(20),
    "customer_address": _text(500, multiline=True),
}
FIELDS: dict[str, dict[str, Field]] = {
    "orders": {
        "shop": _text(64),
        "order_number": _text(64, required=True),
        "ordered_at": Field("datetime", required=True),
        "customer_email": _text(320, required=True),
        **_CUSTOMER,
        "purchase_count": Field("int"),
        "subtotal": Field("int"),
        "shipping_fee": Field("int"),
        "tax": Field("int"),
        "total": Field("int"),
        "payment_method": _text(100),
        "ship_to_name": _text(200),
        "ship_to_address": _text(500, multiline=True),
        "sku": _text(64),
        "product_name": _text(300),
        "quantity": Field("int"),
        "unit_price": Field("int"),
        "shipped_at": Field("datetime"),
        "carrier": _text(64),
        "tracking_number": _text(64),
    },
    "customers": {
        "shop": _text(64),
        "customer_email": _text(320, required=True),
        **_CUSTOMER,
        "signed_up_at": Field("datetime"),
        "marketing_opt_in": Field("bool"),
    },
    "shipments": {
        "shop": _text(64),
        "order_number": _text(64, required=True),
        "shipped_at": Field("datetime", required=True),
        "shipment_id": _text(100),
        "carrier": _text(64),
        "tracking_number": _text(64),
    },
}
# The field that identifies a row within its shop (a second row with it is a duplicate).
KEY_FIELD = {"orders": "order_number", "customers": "customer_id", "shipments": "shipment_id"}
KEY_FALLBACK = {"customers": "customer_email", "shipments": "order_number"}
ORDER_LINE_FIELDS = ("sku", "product_name", "quantity", "unit_price")


class MappingError(ValueError):
    """The mapping itself is wrong (unknown field, bad encoding...): no file can use it."""


@dataclass(frozen=True)
class Mapping:
    kind: str
    columns: dict[str, str]  # source column -> field
    encoding: str = "utf-8"
    timezone: str = "Asia/Tokyo"
    date_formats: tuple[str, ...] = ("ISO8601",)
    values: dict[str, dict[str, str]] = field(default_factory=dict)
    optional_columns: frozenset[str] = frozenset()
    name: str = "inline"

    @property
    def field_columns(self) -> dict[str, str]:
        """field -> source column."""
        return {f: c for c, f in self.columns.items()}

    def has(self, name: str) -> bool:
        return name in self.field_columns

    def for_header(self, header: list[str]) -> Mapping:
        """This mapping without the optional columns the file lacks."""
        present = set(header)
        columns = {
            c: f for c, f in self.columns.items() if c in present or c not in self.optional_columns
        }
        return replace(self, columns=columns)

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def mapping_from_dict(data: dict, name: str = "inline", kind: str | None = None) -> Mapping:
    kind = kind or data.get("kind")
    if kind not in KINDS:
        raise MappingError(f"mapping {name}: kind {kind!r} is not one of {', '.join(KINDS)}")
    if data.get("kind", kind) != kind:
        raise MappingError(f"mapping {name}: is for {data['kind']!r}, not {kind!r}")
    columns = {str(k): str(v) for k, v in (data.get("columns") or {}).items()}
    fields = FIELDS[kind]
    unknown = sorted(f for f in columns.values() if f not in fields)
    if unknown:
        raise MappingError(
            f"mapping {name}: field(s) {', '.join(unknown)} unknown for {kind}; "
            f"known: {', '.join(fields)}"
        )
    seen: dict[str, str] = {}
    for col, f in columns.items():
        if f in seen:
            raise MappingError(f"mapping {name}: field {f} mapped from {seen[f]!r} and {col!r}")
        seen[f] = col
    missing = [f for f, spec in fields.items() if spec.required and f not in seen]
    if missing:
        raise MappingError(f"mapping {name}: required field(s) {', '.join(missing)} not mapped")
    raw_enc = str(data.get("encoding", "utf-8")).lower()
    if raw_enc not in ENCODINGS:
        raise MappingError(
            f"mapping {name}: encoding {raw_enc!r} is not one of {', '.join(sorted(ENCODINGS))}"
        )
    tz = str(data.get("timezone", "Asia/Tokyo"))
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise MappingError(f"mapping {name}: timezone {tz!r} unknown") from exc
    values = {
        str(f): {str(k): str(v) for k, v in m.items()} for f, m in data.get("values", {}).items()
    }
    bad = sorted(set(values) - set(fields))
    if bad:
        raise MappingError(f"mapping {name}: [values.{bad[0]}] names no {kind} field")
    optional = frozenset(str(c) for c in data.get("optional_columns", []))
    stray = sorted(optional - set(columns))
    if stray:
        raise MappingError(f"mapping {name}: optional column {stray[0]!r} is not in [columns]")
    required_cols = sorted(c for c in optional if fields[columns[c]].required)
    if required_cols:
        raise MappingError(f"mapping {name}: column {required_cols[0]!r} feeds a required field")
    formats = data.get("date_formats", ["ISO8601"])
    if isinstance(formats, str) or not formats:
        raise MappingError(f"mapping {name}: date_formats must be a non-empty list")
    return Mapping(
        kind=kind,
        columns=columns,
        encoding=ENCODINGS[raw_enc],
        timezone=tz,
        date_formats=tuple(str(f) for f in formats),
        values=values,
        optional_columns=optional,
        name=name,
    )


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.toml"))


def load_mapping(spec: str | Path | None, kind: str) -> Mapping:
    """A preset name (`next_engine_orders`), a TOML file, or None: the kind's native preset."""
    if spec is None or str(spec) == "":
        spec = f"automail_{kind}"
    path = Path(spec)
    if not path.suffix and (PRESETS / f"{spec}.toml").is_file():
        path = PRESETS / f"{spec}.toml"
    if not path.is_file():
        raise MappingError(
            f"mapping {str(spec)!r}: no such file or preset (presets: {', '.join(preset_names())})"
        )
    return mapping_from_text(path.read_text(encoding="utf-8"), str(spec), kind)


def mapping_from_text(text: str, name: str, kind: str) -> Mapping:
    """TOML text; `preset = "next_engine_orders"` starts from a preset and overrides it."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MappingError(f"mapping {name}: not valid TOML: {exc}") from exc
    preset = data.pop("preset", None)
    if preset is not None:
        path = PRESETS / f"{preset}.toml"
        if not path.is_file():
            raise MappingError(
                f"mapping {name}: preset {preset!r} unknown (presets: {', '.join(preset_names())})"
            )
        base = tomllib.loads(path.read_text(encoding="utf-8"))
        for table in ("columns", "values"):
            data[table] = base.get(table, {}) | data.get(table, {})
        data = base | data
        name = f"{name} (preset {preset})"
    return mapping_from_dict(data, name, kind)
