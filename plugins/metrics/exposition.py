"""Rendering a node's numbers for Prometheus, and reading them back for ``kubeedge status``."""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from collections.abc import Iterator
from typing import Any

from kubeedge import Context


class _NodeCollector:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily

        ctx = self.ctx
        info = GaugeMetricFamily("kubeedge_node_info", "This node", labels=["node", "role"])
        info.add_metric([ctx.node_name, ctx.role], 1)
        yield info
        up = GaugeMetricFamily("kubeedge_module_up", "1 when the module is running", labels=["module", "state"])
        for module, state in sorted(ctx.states.items()):
            up.add_metric([module, state], 1 if state == "running" else 0)
        yield up
        sent = CounterMetricFamily("kubeedge_bus_messages", "Messages put on a module's channel", labels=["module"])
        depth = GaugeMetricFamily(
            "kubeedge_bus_queue_depth", "Messages waiting in a module's channel", labels=["module"]
        )
        for module in sorted(ctx.bus.modules):
            sent.add_metric([module], ctx.bus.sent[module])
            depth.add_metric([module], ctx.bus.queue_depth(module))
        yield sent
        yield depth
        late = CounterMetricFamily("kubeedge_bus_late_replies", "Replies that arrived after their requester gave up")
        late.add_metric([], ctx.bus.late_replies)
        yield late
        families: dict[str, Any] = {}
        for sample in ctx.metrics.samples():
            labels = dict(sample.labels)
            family: Any = families.get(sample.name)
            if family is None:
                if sample.kind == "counter":
                    family = CounterMetricFamily(
                        sample.name.removesuffix("_total"), sample.help or sample.name, labels=list(labels)
                    )
                elif sample.kind == "gauge":
                    family = GaugeMetricFamily(sample.name, sample.help or sample.name, labels=list(labels))
                else:
                    family = SummaryMetricFamily(sample.name, sample.help or sample.name, labels=list(labels))
                families[sample.name] = family
            if sample.kind == "summary":
                family.add_metric(list(labels.values()), count_value=sample.count, sum_value=sample.value)
            else:
                family.add_metric(list(labels.values()), sample.value)
        yield from families.values()


def render(ctx: Context) -> bytes:
    from prometheus_client import CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_NodeCollector(ctx))
    return generate_latest(registry)


def summarise(text: str) -> list[str]:
    """A few human lines from a node's metrics text."""
    from prometheus_client.parser import text_string_to_metric_families

    values: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name].append((sample.labels, sample.value))
    lines = []
    for labels, _ in values.get("kubeedge_node_info", []):
        lines.append(f"node {labels.get('node')} ({labels.get('role')})")
    modules = [f"{labels['module']} {labels['state']}" for labels, _ in values.get("kubeedge_module_up", [])]
    lines.append("modules: " + (", ".join(modules) or "none"))
    sent = {labels["module"]: value for labels, value in values.get("kubeedge_bus_messages_total", [])}
    depth = {labels["module"]: value for labels, value in values.get("kubeedge_bus_queue_depth", [])}
    if sent:
        busiest = max(sent, key=lambda m: sent[m])
        deepest = max(depth, key=lambda m: depth[m]) if depth else busiest
        lines.append(
            f"bus: {int(sum(sent.values()))} messages (busiest {busiest}: {int(sent[busiest])}),"
            f" deepest queue {deepest}: {int(depth.get(deepest, 0))}"
        )
    lines.extend(_module_lines(values))
    shown = {
        *_SUMMARISED,
        "kubeedge_node_info",
        "kubeedge_module_up",
        "kubeedge_bus_messages_total",
        "kubeedge_bus_queue_depth",
        "kubeedge_bus_messages_created",
        "kubeedge_bus_late_replies_total",
        "kubeedge_bus_late_replies_created",
    }
    for name in sorted(values):
        if name in shown or name.endswith("_created"):
            continue
        for labels, value in values[name]:
            tag = ",".join(f"{k}={v}" for k, v in labels.items())
            lines.append(f"{name}{'{' + tag + '}' if tag else ''} {value:g}")
    return lines


_SUMMARISED = {
    "kubeedge_hub_sessions",
    "kubeedge_hub_ack_latency_seconds_count",
    "kubeedge_hub_ack_latency_seconds_sum",
    "kubeedge_edgehub_connected",
    "kubeedge_edgehub_upload_backlog",
    "kubeedge_twin_devices",
    "kubeedge_twin_unsynced_devices",
    "kubeedge_twin_updates_total",
    "kubeedge_mapper_device_online",
    "kubeedge_mapper_points_read_total",
    "kubeedge_mapper_point_errors_total",
    "kubeedge_broker_messages_received_total",
    "kubeedge_broker_messages_dropped_total",
    "kubeedge_stream_tunnels",
}


def _module_lines(values: dict[str, list[tuple[dict[str, str], float]]]) -> list[str]:
    """One line per part of the node that reported something: the link, twins, mappers, broker, tunnels."""

    def total(name: str, **match: str) -> float:
        return sum(v for labels, v in values.get(name, []) if all(labels.get(k) == w for k, w in match.items()))

    lines = []
    if "kubeedge_hub_sessions" in values:
        count = total("kubeedge_hub_ack_latency_seconds_count")
        mean = total("kubeedge_hub_ack_latency_seconds_sum") / count * 1000 if count else 0.0
        lines.append(
            f"cloudhub: {int(total('kubeedge_hub_sessions'))} edge nodes connected, "
            f"{int(count)} messages acknowledged (mean {mean:.1f} ms)"
        )
    if "kubeedge_edgehub_connected" in values:
        state = "connected" if total("kubeedge_edgehub_connected") else "NOT connected (working on its own)"
        lines.append(f"edgehub: {state} to the cloud, {int(total('kubeedge_edgehub_upload_backlog'))} messages waiting")
    if "kubeedge_twin_devices" in values:
        lines.append(
            f"twin: {int(total('kubeedge_twin_devices'))} devices, "
            f"{int(total('kubeedge_twin_updates_total', source='mapper'))} updates from mappers, "
            f"{int(total('kubeedge_twin_updates_total', source='cloud'))} from the cloud, "
            f"{int(total('kubeedge_twin_unsynced_devices'))} not yet reported"
        )
    if "kubeedge_mapper_device_online" in values:
        devices = values["kubeedge_mapper_device_online"]
        lines.append(
            f"mappers: {int(sum(v for _, v in devices))} of {len(devices)} devices online, "
            f"{int(total('kubeedge_mapper_points_read_total'))} points read, "
            f"{int(total('kubeedge_mapper_point_errors_total'))} errors"
        )
    if "kubeedge_broker_messages_received_total" in values:
        lines.append(
            f"broker: {int(total('kubeedge_broker_messages_received_total'))} messages received, "
            f"{int(total('kubeedge_broker_messages_dropped_total'))} dropped"
        )
    if "kubeedge_stream_tunnels" in values:
        lines.append(f"stream: {int(total('kubeedge_stream_tunnels'))} edge tunnels up")
    return lines


def status_command(args: argparse.Namespace) -> int:
    import httpx

    url = args.url
    if url is None and args.profile:
        from kubeedge import load_profile

        profile = load_profile(args.profile, overrides=args.set)
        section = profile.modules.get("metrics")
        if section is None:
            print(f"kubeedge: error: profile {profile.source} does not load the metrics module", file=sys.stderr)
            return 2
        url = f"http://{section.get('address', '127.0.0.1')}:{section.get('port', 9091)}/metrics"
    url = url or "http://127.0.0.1:9091/metrics"
    try:
        response = httpx.get(url, timeout=5)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        print(
            f"kubeedge: error: cannot read {url}: {exc} (is the node running with the metrics module?)", file=sys.stderr
        )
        return 2
    print("\n".join(summarise(response.text)))
    return 0
