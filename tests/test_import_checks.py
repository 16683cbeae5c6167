"""The checks' fast paths (imports) give what the per-value paths give, on odd values too."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd

from automail.imports.validate import INT32, _int, _Rejects, _strip

ODD = [" ", "\u3000", "\t", "\x00", "\x00 ", " \x00", "\n", "\x1c", "a", "山", "1", "-", ","]


def _values(rng: random.Random, n: int) -> list[str]:
    return ["".join(rng.choice(ODD) for _ in range(rng.randint(0, 4))) for _ in range(n)]


def test_strip_matches_str_strip_on_odd_white_space():
    rng = random.Random(15)
    for _ in range(300):
        values = _values(rng, rng.randint(1, 6))
        got = list(_strip(pd.Series(values, dtype=object)))
        assert got == [v.strip() for v in values], values
    clean = ["NE-1", "山田 花子", "a b"]
    assert list(_strip(pd.Series(clean, dtype=object))) == clean


def _ints(values: list[str]) -> tuple[list, list]:
    s = pd.Series(values, dtype=object)
    rejects = _Rejects(pd.Series(range(1, len(values) + 1)))
    out = _int(s, (s == "").to_numpy(), "数", rejects)
    frame = rejects.frame()
    return [None if pd.isna(v) else int(v) for v in out], sorted(
        zip(frame["line"], frame["reason"], strict=True)
    )


def test_plain_integers_take_the_fast_path_with_the_same_results():
    big = str(INT32 + 1)
    values = ["1", "-2", "007", str(INT32), big, "-" + big, "999999999999999999"]
    got, rejected = _ints(values)
    assert got == [1, -2, 7, INT32, None, None, None]
    assert [line for line, _ in rejected] == [5, 6, 7]
    assert all(reason.startswith("out of range") for _, reason in rejected)
    # the per-value path (a comma, a sign, an empty, a 19-digit number) agrees on each
    for odd in ["1,000", "+3", "", "1" * 19, "1.5", "x"]:
        slow, slow_rejected = _ints([*values, odd])
        assert slow[:7] == got and slow_rejected[:3] == rejected, odd


def test_fast_integers_are_int64_values():
    got, _ = _ints([str(i) for i in range(-5, 5)])
    assert got == list(range(-5, 5))
    assert np.array(got).dtype == np.int64
