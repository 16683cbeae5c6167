"""Checking one chunk of source rows: typed values out, every refusal kept with its reason.

Works a column at a time (pandas), never a row at a time, so a million rows cost
seconds. A row with any refused value is rejected as a whole and reported once per
bad value (line, source column, value, reason); the other rows go on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from automail.imports.mapping import FIELDS, KEY_FALLBACK, KEY_FIELD, Mapping

INT32 = 2**31 - 1
CONTROL_SINGLE = re.compile(r"[\x00-\x1f\x7f]")  # names, numbers, codes: one line
CONTROL_MULTI = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # addresses: line breaks ok
TRUE = {"1", "true", "yes", "y", "t", "はい", "希望する", "する"}
FALSE = {"0", "false", "no", "n", "f", "いいえ", "希望しない", "しない"}
REJECT_COLUMNS = ["line", "column", "value", "reason"]


@dataclass
class Checked:
    good: pd.DataFrame  # typed field columns + line, shop_id, key (+ customer_key)
    rejects: pd.DataFrame  # REJECT_COLUMNS


class _Rejects:
    def __init__(self, lines: pd.Series) -> None:
        self.lines = lines
        self.parts: list[pd.DataFrame] = []
        self.bad = np.zeros(len(lines), dtype=bool)

    def add(self, mask: np.ndarray, column: str, values: pd.Series, reason: object) -> None:
        if not mask.any():
            return
        self.bad |= mask
        reasons = reason[mask] if isinstance(reason, pd.Series) else reason
        self.parts.append(
            pd.DataFrame(
                {
                    "line": self.lines[mask].to_numpy(),
                    "column": column,
                    "value": values[mask].to_numpy(),
                    "reason": np.asarray(reasons, dtype=object)
                    if isinstance(reasons, pd.Series)
                    else reasons,
                }
            )
        )

    def frame(self) -> pd.DataFrame:
        if not self.parts:
            return pd.DataFrame(columns=REJECT_COLUMNS)
        return pd.concat(self.parts, ignore_index=True)


EDGE_SPACE = re.compile(r"(?:^|\x00)\s|\s(?:\x00|$)")
PLAIN_INTS = re.compile(r"(?:-?[0-9]{1,18}\x00)*-?[0-9]{1,18}")


def _strip(s: pd.Series) -> pd.Series:
    """Values without surrounding white space. One C-speed search over the column
    (values joined by NUL) first: most exports have none, and then nothing is copied.
    A value holding NUL + space only makes the search say yes: the per-value pass runs."""
    values = s.to_numpy(dtype=object)
    if len(values) and not EDGE_SPACE.search("\x00".join(values)):
        return pd.Series(values, index=s.index, dtype=object)
    return pd.Series(list(map(str.strip, values)), index=s.index, dtype=object)


def _any_match(s: pd.Series, pattern: re.Pattern[str]) -> bool:
    """One C-speed search over the joined column before any per-value work."""
    return bool(pattern.search("".join(s)))


def check(
    frame: pd.DataFrame,
    mapping: Mapping,
    shops: dict[str, int],
    default_shop_id: int | None,
) -> Checked:
    """`frame` has one column per mapped field (source strings) and `line`."""
    specs = FIELDS[mapping.kind]
    columns = mapping.field_columns
    lines = frame["line"]
    rejects = _Rejects(lines)
    out = pd.DataFrame({"line": lines.to_numpy()}, index=frame.index)
    for name, column in columns.items():
        spec = specs[name]
        s = _strip(frame[name])
        if name in mapping.values:
            s = s.replace(mapping.values[name])
        empty = (s == "").to_numpy()
        if spec.required:
            rejects.add(empty, column, s, f"missing: {name} is required")
        if spec.type == "text":
            out[name] = _text(s, empty, spec.max_len, spec.multiline, column, rejects)
        elif spec.type == "int":
            out[name] = _int(s, empty, column, rejects)
        elif spec.type == "datetime":
            out[name] = _datetime(s, empty, mapping, column, rejects)
        else:
            out[name] = _bool(s, empty, column, rejects)
    out["shop_id"] = _shop(out, mapping, shops, default_shop_id, columns.get("shop", ""), rejects)
    if "customer_email" in out:
        cid = out.get("customer_id")
        out["customer_key"] = _customer_key(out["customer_email"], cid)
    key_field = KEY_FIELD[mapping.kind]
    fallback = KEY_FALLBACK.get(mapping.kind)
    if mapping.kind == "customers":
        out["key"] = out["customer_key"]
    elif key_field in out and fallback:
        out["key"] = out[key_field].where(out[key_field].notna(), out[fallback])
    elif key_field in out:
        out["key"] = out[key_field]
    else:
        out["key"] = out[fallback]
    good = out[~rejects.bad]
    dup = good.duplicated(["shop_id", "key"], keep="first").to_numpy()
    if dup.any():
        first = good.groupby(["shop_id", "key"], sort=False)["line"].transform("first")
        key_col = columns.get(key_field) or columns[fallback or key_field]
        values = good["key"]
        reason = "duplicate " + (key_field if key_field in columns else str(fallback))
        reasons = reason + " in this file: first at line " + first.astype(str)
        sub = _Rejects(good["line"])
        sub.add(dup, key_col, values, reasons)
        rejects.parts.extend(sub.parts)
        good = good[~dup]
    return Checked(good=good.copy(), rejects=rejects.frame())


def _text(
    s: pd.Series, empty: np.ndarray, max_len: int, multiline: bool, column: str, rejects: _Rejects
) -> pd.Series:
    lengths = np.fromiter(map(len, s), dtype=np.int64, count=len(s))
    long = lengths > max_len
    if long.any():
        reason = pd.Series(lengths, index=s.index).map(
            lambda n: f"too long: {n} characters, at most {max_len}"
        )
        rejects.add(long, column, s, reason)
    pattern = CONTROL_MULTI if multiline else CONTROL_SINGLE
    if _any_match(s, pattern):
        bad = np.fromiter((bool(pattern.search(v)) for v in s), dtype=bool, count=len(s))
        what = "a control character" if multiline else "a line break or control character"
        rejects.add(bad, column, s, f"contains {what}")
    return s.where(~empty, None)


def _int(s: pd.Series, empty: np.ndarray, column: str, rejects: _Rejects) -> pd.Series:
    if not empty.any() and PLAIN_INTS.fullmatch("\x00".join(s)):
        # Only plain digits (at most 18, so int64 holds them): numpy parses the column
        # at C speed; only the range is left to check (to_numeric took 4 us a value).
        values = s.to_numpy(dtype=object).astype(np.int64)
        out_of_range = np.abs(values) > INT32
        rejects.add(out_of_range, column, s, f"out of range (at most {INT32})")
        return pd.Series(values, index=s.index).astype("Int64").where(~out_of_range, pd.NA)
    clean = s.str.replace(",", "", regex=False) if _any_match(s, re.compile(",")) else s
    num = pd.to_numeric(clean.where(~empty, None), errors="coerce")
    values = num.to_numpy(dtype=float, na_value=np.nan)
    bad = ~empty & (np.isnan(values) | (np.mod(values, 1) != 0))
    rejects.add(bad, column, s, "not a whole number")
    out_of_range = ~empty & ~bad & (np.abs(np.nan_to_num(values)) > INT32)
    rejects.add(out_of_range, column, s, f"out of range (at most {INT32})")
    ok = ~empty & ~bad & ~out_of_range
    return (
        pd.Series(np.where(ok, np.nan_to_num(values), 0), index=s.index)
        .astype("Int64")
        .where(ok, pd.NA)
    )


ISO_OFFSET = re.compile(r"(Z|[+-]\d\d:?\d\d)$")


def _datetime(
    s: pd.Series, empty: np.ndarray, mapping: Mapping, column: str, rejects: _Rejects
) -> pd.Series:
    result = pd.Series(pd.NaT, index=s.index, dtype="datetime64[us, UTC]")
    todo = ~empty
    for fmt in mapping.date_formats:
        if not todo.any():
            break
        part = s[todo]
        if fmt == "ISO8601":
            aware = np.fromiter((bool(ISO_OFFSET.search(v)) for v in part), bool, len(part))
            parsed = pd.Series(pd.NaT, index=part.index, dtype="datetime64[us, UTC]")
            if aware.any():
                parsed[aware] = pd.to_datetime(
                    part[aware], format="ISO8601", errors="coerce", utc=True
                ).astype("datetime64[us, UTC]")
            if (~aware).any():
                parsed[~aware] = _local(
                    pd.to_datetime(part[~aware], format="ISO8601", errors="coerce"), mapping
                )
        else:
            parsed = _local(pd.to_datetime(part, format=fmt, errors="coerce"), mapping)
        result[todo] = parsed
        todo = todo & result.isna().to_numpy()
    rejects.add(
        todo,
        column,
        s,
        f"not a date/time in any of the formats {', '.join(mapping.date_formats)}",
    )
    return result


def _local(naive: pd.Series, mapping: Mapping) -> pd.Series:
    local = naive.dt.tz_localize(mapping.timezone, ambiguous="NaT", nonexistent="NaT")
    return local.dt.tz_convert("UTC").astype("datetime64[us, UTC]")


def _bool(s: pd.Series, empty: np.ndarray, column: str, rejects: _Rejects) -> pd.Series:
    low = s.str.lower()
    yes = low.isin(TRUE).to_numpy()
    no = low.isin(FALSE).to_numpy()
    rejects.add(~empty & ~yes & ~no, column, s, "not yes/no (true/false, 1/0, はい/いいえ)")
    flags = np.where(yes, True, np.where(no, False, None))  # type: ignore[call-overload]
    return pd.Series(flags, index=s.index).astype("boolean")


def _shop(
    out: pd.DataFrame,
    mapping: Mapping,
    shops: dict[str, int],
    default_shop_id: int | None,
    column: str,
    rejects: _Rejects,
) -> pd.Series:
    if "shop" not in out:
        return pd.Series(default_shop_id, index=out.index, dtype="Int64")
    codes = out["shop"]
    ids = codes.map(shops).astype("Int64")
    known = ", ".join(sorted(shops)) or "none"
    missing = codes.isna().to_numpy()
    if default_shop_id is not None:
        ids = ids.where(~missing, default_shop_id)
    else:
        rejects.add(missing, column, codes.fillna(""), "missing: no shop code and no --shop given")
    unknown = (~missing & ids.isna()).to_numpy()
    rejects.add(unknown, column, codes, f"unknown shop (known: {known})")
    return ids


def _customer_key(email: pd.Series, customer_id: pd.Series | None) -> pd.Series:
    """The shop system's customer id, or the lower-cased email when it has none."""
    by_email = email.map(lambda v: v.lower() if isinstance(v, str) else v)
    if customer_id is None:
        return by_email
    return customer_id.where(customer_id.notna(), by_email)
