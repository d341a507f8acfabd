"""Node stats for the embedded API server: the node proxy and the resource metrics API (``kubectl top``).

- ``GET /api/v1/nodes/{node}/proxy/{path}`` relays a GET to the node's kubelet API, which for edge nodes is
  cloudstream's (it answers through the node's tunnel): ``kubectl get --raw
  /api/v1/nodes/<node>/proxy/stats/summary`` shows the edge's Summary, ``.../proxy/metrics/resource`` what
  metrics-server would scrape.
- ``metrics.k8s.io/v1beta1`` ``nodes`` and ``pods`` (``NodeMetrics``, ``PodMetrics``; get and list, with label
  selectors) are served as metrics-server serves them, without a metrics-server: each request asks the nodes
  for ``/stats/summary?only_cpu_and_memory=true`` at once. CPU is the rate over the time since the previous
  answer from that node (metrics-server's window) when that is between 1 s and 10 min old, else the node's
  own short-window rate; memory is the working set. A node that does not answer in time is left out, as
  metrics-server leaves out a node it could not scrape.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import trio

from .selectors import SelectorError, parse_label_selector
from .service import ApiError
from .stream import StreamError, _endpoint

__all__ = ["GROUP", "MetricsCache", "node_proxy", "serve"]

GROUP = "metrics.k8s.io"
SCRAPE_TIMEOUT = 10.0
WINDOW_MIN, WINDOW_MAX = 1.0, 600.0


@dataclass
class MetricsCache:
    """The last cumulative CPU sample seen per (node, pod uid, container), for rates over metrics-server's window."""

    samples: dict[tuple[str, ...], tuple[float, int]] = field(default_factory=dict)

    def rate(self, key: tuple[str, ...], stats: dict[str, Any]) -> tuple[int, float] | None:
        """(nanocores, window seconds) for one ``cpu`` stats object; None when it has no CPU figures."""
        cpu = stats.get("cpu") or {}
        total = cpu.get("usageCoreNanoSeconds")
        now = _seconds(str(cpu.get("time") or "")) or time.time()
        previous = self.samples.get(key)
        if isinstance(total, int):
            self.samples[key] = (now, total)
            if previous is not None and WINDOW_MIN <= now - previous[0] <= WINDOW_MAX and total >= previous[1]:
                return int((total - previous[1]) / (now - previous[0])), now - previous[0]
        nanocores = cpu.get("usageNanoCores")
        return (int(nanocores), WINDOW_MIN) if isinstance(nanocores, int) else None


def _seconds(value: str) -> float | None:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _usage(nanocores: int, working_set: int) -> dict[str, str]:
    return {"cpu": f"{nanocores}n", "memory": f"{working_set // 1024}Ki"}


class _Kubelets:
    """GETs on nodes' kubelet APIs through cloudstream, for one request: the endpoint is read once and one
    client (one TLS connection pool) serves every node asked."""

    def __init__(self, app: Any) -> None:
        try:
            self.endpoint = _endpoint(app)
        except StreamError as exc:
            raise ApiError(exc.code, exc.message) from None
        self.client: Any = None

    async def __aenter__(self) -> _Kubelets:
        import httpx

        self.client = httpx.AsyncClient(verify=self.endpoint.ssl_context, timeout=SCRAPE_TIMEOUT + 5)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()

    async def get(self, node: str, path: str, query: str = "") -> tuple[int, str, bytes]:
        """(status, content type, body) of a GET on ``node``'s kubelet API."""
        import httpx

        port = self.endpoint.port
        url = f"https://127.0.0.1:{port}/{path.lstrip('/')}" + (f"?{query}" if query else "")
        try:
            reply = await self.client.get(url, headers={"x-kubeedge-node": node})
        except httpx.TransportError as exc:
            raise ApiError(503, f"cloudstream is not reachable on port {port}: {exc!r}") from None
        return reply.status_code, reply.headers.get("content-type", "application/json"), reply.content


async def node_proxy(app: Any, request: Any, node: str, rest: list[str], send: Any) -> None:
    """``/api/v1/nodes/{node}/proxy/{rest}``: the node's kubelet API answers (GET only)."""
    if request.method != "GET":
        raise ApiError(405, f"{request.method} is not allowed on nodes/proxy; only GET", "MethodNotAllowed")
    node = node.split(":", 1)[0]  # kubectl also writes <node>:<port>
    if app.store.get(app.registry.lookup("", "v1", "nodes").key, "", node) is None:
        raise ApiError(404, f'nodes "{node}" not found', "NotFound", {"name": node, "kind": "nodes"})
    query = "&".join(f"{quote(k)}={quote(v)}" for k, v in request.query.items())
    async with _Kubelets(app) as kubelets:
        code, content_type, body = await kubelets.get(node, "/".join(quote(p) for p in rest), query)
    headers = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _summaries(app: Any, nodes: list[str]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Each answering node's Summary (CPU and memory only), asked concurrently within the scrape timeout;
    and why each other node has none."""
    found: dict[str, dict[str, Any]] = {}
    errors = dict.fromkeys(nodes, f"no answer within {SCRAPE_TIMEOUT:g} s")

    async def scrape(kubelets: _Kubelets, node: str) -> None:
        try:
            code, _, body = await kubelets.get(node, "stats/summary", "only_cpu_and_memory=true")
            if code == 200:
                found[node] = json.loads(body)
                del errors[node]
            else:
                errors[node] = str(json.loads(body).get("message") or f"HTTP {code}")
        except ApiError as exc:
            errors[node] = str(exc)
        except (ValueError, AttributeError) as exc:
            errors[node] = f"unreadable stats: {exc}"

    try:
        kubelets = _Kubelets(app)
    except ApiError as exc:  # no cloudstream: every node has the same reason
        return found, dict.fromkeys(nodes, str(exc))
    async with kubelets:
        with trio.move_on_after(SCRAPE_TIMEOUT):
            async with trio.open_nursery() as nursery:
                for node in nodes:
                    nursery.start_soon(scrape, kubelets, node)
    return found, errors


def _cache(app: Any) -> MetricsCache:
    cache = getattr(app, "metrics_cache", None)
    if cache is None:
        cache = app.metrics_cache = MetricsCache()
    return cache


async def serve(app: Any, request: Any, version: str, rest: list[str], send: Any) -> None:
    """``/apis/metrics.k8s.io/v1beta1/{nodes[/name] | [namespaces/{ns}/]pods[/name]}``."""
    if request.method != "GET":
        raise ApiError(405, f"{request.method} is not allowed on {GROUP}; it is read-only", "MethodNotAllowed")
    if request.flag("watch"):
        raise ApiError(405, f"watch is not supported on {GROUP}", "MethodNotAllowed")
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or rest[0] not in ("nodes", "pods") or len(rest) > 2 or (namespace and rest[0] == "nodes"):
        raise ApiError(404, "the server could not find the requested resource")
    try:
        selector = parse_label_selector(request.query.get("labelSelector"))
    except SelectorError as exc:
        raise ApiError(400, str(exc)) from None
    name = rest[1] if len(rest) == 2 else ""
    api_version = f"{GROUP}/{version}"
    cache = _cache(app)
    items: list[dict[str, Any]] = []
    if rest[0] == "nodes":
        nodes = app.store.list(app.registry.lookup("", "v1", "nodes").key, None)
        nodes = [n for n in nodes if (not name or n["metadata"]["name"] == name) and (selector is None or selector(n))]
        summaries, errors = await _summaries(app, [n["metadata"]["name"] for n in nodes])
        for node in nodes:
            node_name = node["metadata"]["name"]
            stats = (summaries.get(node_name) or {}).get("node") or {}
            cpu = cache.rate((node_name,), stats)
            working_set = (stats.get("memory") or {}).get("workingSetBytes")
            if cpu is None or not isinstance(working_set, int):
                continue
            items.append(
                {
                    "kind": "NodeMetrics",
                    "apiVersion": api_version,
                    "metadata": {
                        "name": node_name,
                        "creationTimestamp": _now(),
                        "labels": dict(node["metadata"].get("labels") or {}),
                    },
                    "timestamp": (stats.get("cpu") or {}).get("time") or _now(),
                    "window": f"{cpu[1]:.3f}s",
                    "usage": _usage(cpu[0], working_set),
                }
            )
        kind = "NodeMetrics"
    else:
        pods = app.store.list(app.registry.lookup("", "v1", "pods").key, namespace)
        pods = [
            p
            for p in pods
            if (not name or p["metadata"]["name"] == name)
            and (selector is None or selector(p))
            and (p.get("spec") or {}).get("nodeName")
        ]
        wanted = {(p["metadata"].get("namespace", "default"), p["metadata"]["name"]): p for p in pods}
        summaries, errors = await _summaries(app, sorted({p["spec"]["nodeName"] for p in pods}))
        for node_name, summary in summaries.items():
            for pod_stats in summary.get("pods") or []:
                ref = pod_stats.get("podRef") or {}
                pod = wanted.get((ref.get("namespace", ""), ref.get("name", "")))
                if pod is None or pod["spec"]["nodeName"] != node_name:
                    continue
                containers, window, timestamp = [], WINDOW_MIN, _now()
                for container in pod_stats.get("containers") or []:
                    cpu = cache.rate((node_name, str(ref.get("uid", "")), str(container.get("name"))), container)
                    working_set = (container.get("memory") or {}).get("workingSetBytes")
                    if cpu is None or not isinstance(working_set, int):
                        continue
                    window = cpu[1]
                    timestamp = (container.get("cpu") or {}).get("time") or timestamp
                    containers.append({"name": container.get("name"), "usage": _usage(cpu[0], working_set)})
                if not containers:
                    continue
                meta = pod["metadata"]
                items.append(
                    {
                        "kind": "PodMetrics",
                        "apiVersion": api_version,
                        "metadata": {
                            "name": meta["name"],
                            "namespace": meta.get("namespace", "default"),
                            "creationTimestamp": _now(),
                            "labels": dict(meta.get("labels") or {}),
                        },
                        "timestamp": timestamp,
                        "window": f"{window:.3f}s",
                        "containers": containers,
                    }
                )
        items.sort(key=lambda i: (i["metadata"].get("namespace", ""), i["metadata"]["name"]))
        kind = "PodMetrics"
    if name:
        if not items:
            resource = "nodemetrics" if kind == "NodeMetrics" else "podmetrics"
            why = "; ".join(f"node {n}: {e}" for n, e in sorted(errors.items()))
            raise ApiError(
                404,
                f'{resource}.{GROUP} "{name}" not found' + (f" ({why})" if why else ""),
                "NotFound",
                {"name": name, "group": GROUP, "kind": rest[0]},
            )
        await app.respond(send, 200, items[0])
        return
    await app.respond(send, 200, {"kind": f"{kind}List", "apiVersion": api_version, "metadata": {}, "items": items})
