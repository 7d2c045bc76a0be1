"""deploy/grafana/ferry.json asks only for series the services expose (ferry/infra/metrics.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from ferry.infra import metrics

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "ferry.json"
KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or"})
KEYWORDS |= {"unless", "offset"}
GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
MATCHERS = re.compile(r"([A-Za-z_:][A-Za-z0-9_:]*)?\s*\{([^}]*)\}")
TARGET_LABELS = frozenset({"job", "instance"})  # added by Prometheus to every scraped series
REQUIRED = {
    "ferry_releases_total",
    "ferry_release_duration_seconds_bucket",
    "ferry_host_step_duration_seconds_bucket",
    "ferry_build_duration_seconds_bucket",
    "ferry_queue_depth",
    "ferry_lock_wait_seconds_bucket",
    "ferry_upload_bytes_total",
    "ferry_upload_saved_bytes_total",
    "ferry_webhook_deliveries_total",
    "ferry_notifier_clients",
    "ferry_notifier_push_latency_seconds_bucket",
    "ferry_eventstore_append_seconds_bucket",
    "ferry_eventstore_read_seconds_bucket",
}


def _balanced(expr: str) -> bool:
    pairs, stack = {")": "(", "]": "[", "}": "{"}, []
    for c in re.sub(r'"(?:\\.|[^"\\])*"', '""', expr):
        if c in "([{":
            stack.append(c)
        elif c in pairs:
            if not stack or stack.pop() != pairs[c]:
                return False
    return not stack


def metric_names(expr: str) -> list[str]:
    """The series names a PromQL expression reads (functions, keywords, labels and numbers left out)."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = GROUPING.sub(" ", text)  # by (labels), on (labels), ...
    text = re.sub(r"\b\d+(\.\d+)?([eE][+-]?\d+)?[smhdwy]?\b", " ", text)  # numbers and durations
    names = []
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[m.end() :].lstrip().startswith("(") or m.group() in KEYWORDS:
            continue  # a function call or an operator keyword
        names.append(m.group())
    return names


def label_uses(expr: str) -> dict[str, set[str]]:
    """Labels an expression groups by or matches on: {"*": grouping labels, name: matched labels}."""
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', expr)
    uses: dict[str, set[str]] = {"*": set()}
    for m in GROUPING.finditer(text):
        uses["*"] |= {label.strip() for label in m.group(2).split(",") if label.strip()}
    for m in MATCHERS.finditer(text):
        found = set(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)", m.group(2)))
        uses.setdefault(m.group(1) or "*", set()).update(found)
    return uses


def expressions() -> list[str]:
    def walk(panels: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for p in panels:
            out.append(p)
            out += walk(p.get("panels", []))
        return out

    board = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in walk(board["panels"]) for t in p.get("targets", [])]


def family_labels() -> dict[str, set[str]]:
    """Sample name -> the labels it carries (histogram buckets add ``le``)."""
    found: dict[str, set[str]] = {}
    for value in vars(metrics).values():
        labelnames = getattr(value, "_labelnames", None)
        name, kind = getattr(value, "_name", None), getattr(value, "_type", None)
        if labelnames is None or name is None:
            continue
        labels = set(labelnames)
        if kind == "histogram":
            found.update({f"{name}_bucket": labels | {"le"}, f"{name}_sum": labels, f"{name}_count": labels})
        elif kind == "counter":
            found[f"{name}_total"] = labels
        else:
            found[name] = labels
    found["ferry_notifier_clients"] = {"channel"}
    found["ferry_notifier_push_latency_seconds_bucket"] = {"le"}
    return found


def test_the_parser_finds_series_and_skips_the_rest() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, step) (rate(a_bucket{step="up"}[5m])))'
        " / on (job) b_total offset 1h"
    )
    assert metric_names(expr) == ["a_bucket", "b_total"]
    assert label_uses(expr) == {"*": {"le", "step", "job"}, "a_bucket": {"step"}}
    assert metric_names("sum(rate(x[$__rate_interval])) > 1e3") == ["x"]
    assert not _balanced("sum(rate(x[5m])")


def test_the_dashboard_is_grafana_json() -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 30
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for p in board["panels"]:
        assert {"x", "y", "w", "h"} <= p["gridPos"].keys()
        for t in p.get("targets", []):
            assert t["datasource"]["type"] == "prometheus" and t["refId"]


@pytest.mark.parametrize("expr", expressions())
def test_every_query_reads_series_the_services_expose(expr: str) -> None:
    assert _balanced(expr), expr
    names = metric_names(expr)
    assert names, f"no metric in {expr!r}"
    exposed = metrics.sample_names()
    unknown = [n for n in names if n not in exposed]
    assert not unknown, f"{expr!r} asks for {unknown}, not among ferry's families"
    labels = family_labels()
    allowed = set().union(*(labels.get(n, set()) for n in names)) | TARGET_LABELS
    for name, used in label_uses(expr).items():
        own = allowed if name == "*" else labels.get(name, set()) | TARGET_LABELS
        assert used <= own, f"{expr!r} uses labels {sorted(used - own)} that {name} does not carry"


def test_the_dashboard_shows_every_family_of_the_issue() -> None:
    shown = {n for e in expressions() for n in metric_names(e)}
    assert REQUIRED - shown == set()
