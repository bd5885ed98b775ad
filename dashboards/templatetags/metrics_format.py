"""How the panels print numbers; the browser tests hold the API's values to exactly this."""

import datetime as dt

from django import template

register = template.Library()

MISSING = "—"


@register.simple_tag
def metric(value, kind: str = "number") -> str:
    """`ms`: 2 decimals; `percent`: a fraction as % with 2 decimals; `rate`: 3 decimals; `int`; `text`."""
    if value is None or value == "":
        return MISSING
    if kind == "ms":
        return f"{value:.2f}"
    if kind == "percent":
        return f"{value * 100:.2f} %"
    if kind == "rate":
        return f"{value:.3f}"
    if kind == "int":
        return str(int(value))
    return str(value)


@register.filter
def duration(seconds) -> str:
    """A remaining time as "2 d 3 h", "4 h 5 min", "6 min 7 s" or "8 s"."""
    if seconds is None:
        return MISSING
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    if minutes:
        return f"{minutes} min {secs} s"
    return f"{secs} s"


@register.filter
def iso(moment) -> str:
    return moment.isoformat() if isinstance(moment, dt.datetime | dt.date) else ""


@register.filter
def lookup(mapping, key):
    return (mapping or {}).get(key)
