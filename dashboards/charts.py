"""Chart specifications for the panels: labels and series only; Chart.js draws them.

Each spec is rendered into the page with `json_script` and picked up by
static/js/dashboards.js. Times are pre-formatted as labels (UTC), so no
date adapter is needed in the browser.
"""

import datetime as dt

# Distinguishable for common colour blindness and readable on light and dark backgrounds.
PALETTE = ["#0b5cad", "#b35c00", "#8a3ffc", "#1a7f37", "#b42318"]


def _time_label(moment: dt.datetime, step_seconds: int) -> str:
    return moment.strftime("%m-%d %H:%M" if step_seconds >= 3600 else "%H:%M")


def percentile_chart(entry: dict, *, metric: str, step_seconds: int) -> dict:
    """One model's p50/p95/p99 of `metric` per step."""
    labels = [_time_label(point["start"], step_seconds) for point in entry["series"]]
    datasets = [
        {"label": name, "data": [point[metric][name] for point in entry["series"]], "color": PALETTE[index]}
        for index, name in enumerate(("p50", "p95", "p99"))
    ]
    return {"type": "line", "labels": labels, "datasets": datasets, "y_label": "milliseconds", "x_label": "UTC"}


def participation_chart(data: dict) -> dict:
    rows = data["participation"]
    return {
        "type": "bar",
        "labels": [f"#{row['id']}" for row in rows],
        "datasets": [
            {"label": "turnout (%)", "data": [round(row["turnout"] * 100, 1) for row in rows], "color": PALETTE[0]}
        ],
        "y_label": "% of eligible voters",
        "x_label": "proposal (by end of voting)",
        "y_max": 100,
    }


def votes_per_day_chart(data: dict) -> dict:
    rows = data["votes_per_day"]
    return {
        "type": "bar",
        "labels": [row["day"].strftime("%m-%d") for row in rows],
        "datasets": [{"label": "votes cast", "data": [row["votes"] for row in rows], "color": PALETTE[1]}],
        "y_label": "votes",
        "x_label": "day (UTC)",
        "y_integer": True,
    }


def benchmark_chart(data: dict) -> dict:
    runs = [run for run in data["benchmarks"] if run["status"] == "succeeded"]
    labels = [f"#{run['id']} {run['created_at']:%m-%d}" for run in runs]
    datasets = [
        {"label": f"latency {name} (ms)", "data": [run["latency_ms"].get(name) for run in runs], "color": PALETTE[i]}
        for i, name in enumerate(("p50", "p95", "p99"))
    ]
    return {
        "type": "line",
        "labels": labels,
        "datasets": datasets,
        "y_label": "milliseconds",
        "x_label": "benchmark run",
    }
