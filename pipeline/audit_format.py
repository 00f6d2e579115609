"""Readable numbers for the audit report: durations in s / min / h by magnitude, shares as
percentages, and the text of one table cell (the report never prints `None` or `nan`)."""
from __future__ import annotations

import math
from decimal import Decimal

MINUTE, HOUR = 60.0, 3600.0
# Up to 90 s a duration reads in seconds, up to 90 min in minutes, then in hours.
SECONDS_UP_TO, MINUTES_UP_TO = 90.0, 90 * MINUTE
NULL = "NULL"
NAN = "—"


def format_duration(seconds) -> str:
    """58 -> '58 s', 192 -> '3.2 min', 5400 -> '1.5 h', 0.4 -> '0.4 s'; signed if negative."""
    if seconds is None:
        return NULL
    s = float(seconds)
    if math.isnan(s):
        return NAN
    sign, s = ("-" if s < 0 else ""), abs(s)
    if s < SECONDS_UP_TO:
        text = f"{s:.1f} s" if 0 < s < 10 else f"{s:.0f} s"
    elif s < MINUTES_UP_TO:
        text = f"{s / MINUTE:.1f} min"
    else:
        h = s / HOUR
        text = f"{h:.1f} h" if h < 100 else f"{h:,.0f} h"
    return sign + text


def duration_unit(max_seconds) -> tuple[float, str]:
    """(divisor, unit name) for an axis whose largest value is `max_seconds`."""
    s = float(max_seconds or 0.0)
    if s < SECONDS_UP_TO:
        return 1.0, "seconds"
    if s < MINUTES_UP_TO:
        return MINUTE, "minutes"
    return HOUR, "hours"


def format_share(value) -> str:
    if value is None:
        return NULL
    v = float(value)
    return NAN if math.isnan(v) else f"{100 * v:.1f}%"


def is_duration_column(name: str) -> bool:
    """Columns the report's SQL names `..._s` hold seconds (duration_s, audio_s, kept_audio_s)."""
    return name.endswith("_s")


def is_share_column(name: str) -> bool:
    return name.endswith("_share")


def is_number(value) -> bool:
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def cell_text(value, column: str = "") -> str:
    """One table cell as text: durations and shares readable, floats to 4 significant digits."""
    if value is None:
        return NULL
    if isinstance(value, bool):
        return "true" if value else "false"
    if is_number(value):
        if is_duration_column(column):
            return format_duration(value)
        if is_share_column(column):
            return format_share(value)
        if isinstance(value, (float, Decimal)):
            v = float(value)
            if math.isnan(v) or math.isinf(v):
                return NAN
            return f"{v:.4g}" if abs(v) < 1e6 else f"{v:,.0f}"
        return str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(cell_text(v) for v in value)
    return str(value)


def format_change(this, previous, column: str) -> str:
    """The change from `previous` to `this`: '+3 (+25.0%)', '+1.2 min', '-5.0 pp'."""
    if this is None or previous is None:
        return "new" if previous is None and this is not None else (
            "gone" if this is None and previous is not None else "")
    a, b = float(this), float(previous)
    d = a - b
    if d == 0:
        return "0"
    if is_share_column(column):
        return f"{100 * d:+.1f} pp"
    if is_duration_column(column):
        text = format_duration(d)
        text = text if text.startswith("-") else "+" + text
    else:
        text = f"{d:+,.0f}" if d == int(d) else f"{d:+.4g}"
    if b:
        text += f" ({100 * d / b:+.1f}%)"
    return text
