"""What edgemesh knows: services and their ready endpoints, kept from Kubernetes objects. Pure, no I/O."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ServicePort:
    name: str
    port: int
    target: int | str  # a number, or the name of an endpoint port
    protocol: str = "TCP"


@dataclass
class Service:
    namespace: str
    name: str
    cluster_ip: str
    ports: list[ServicePort] = field(default_factory=list)

    @property
    def headless(self) -> bool:
        return self.cluster_ip in ("", "None")


@dataclass
class Endpoint:
    ip: str
    ports: dict[str, int]  # endpoint port name ("" when unnamed) -> port


class Registry:
    def __init__(self, cluster_domain: str = "cluster.local") -> None:
        self.cluster_domain = cluster_domain.strip(".").lower()
        self.services: dict[tuple[str, str], Service] = {}
        self.endpoints: dict[tuple[str, str], list[Endpoint]] = {}
        self._turns: dict[tuple[str, str, str], itertools.count[int]] = {}

    # -- updates from Kubernetes objects ----------------------------------------------------------------

    def put_service(self, obj: dict[str, Any]) -> Service:
        meta, spec = obj.get("metadata") or {}, obj.get("spec") or {}
        ports = [
            ServicePort(
                name=str(p.get("name", "")),
                port=int(p["port"]),
                target=p.get("targetPort", p["port"]),
                protocol=str(p.get("protocol", "TCP")).upper(),
            )
            for p in spec.get("ports") or []
            if "port" in p
        ]
        service = Service(meta.get("namespace", "default"), meta["name"], str(spec.get("clusterIP") or ""), ports)
        self.services[(service.namespace, service.name)] = service
        return service

    def put_endpoints(self, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        ready: list[Endpoint] = []
        for subset in obj.get("subsets") or []:
            ports = {str(p.get("name", "")): int(p["port"]) for p in subset.get("ports") or [] if "port" in p}
            # notReadyAddresses are left out on purpose: only ready endpoints get traffic or DNS answers.
            ready += [Endpoint(str(a["ip"]), ports) for a in subset.get("addresses") or [] if a.get("ip")]
        self.endpoints[(meta.get("namespace", "default"), meta["name"])] = ready

    def remove(self, kind: str, namespace: str, name: str) -> None:
        if kind == "service":
            self.services.pop((namespace, name), None)
        else:
            self.endpoints.pop((namespace, name), None)

    # -- answers -----------------------------------------------------------------------------------------

    def lookup(self, qname: str) -> Service | None:
        """The service a DNS name means, or None. Accepts ``svc.ns.svc.<domain>`` with or without the dot."""
        labels = qname.lower().rstrip(".").split(".")
        suffix = ["svc", *self.cluster_domain.split(".")]
        if len(labels) != 2 + len(suffix) or labels[2:] != suffix:
            return None
        return self.services.get((labels[1], labels[0]))

    def in_cluster_domain(self, qname: str) -> bool:
        return qname.lower().rstrip(".").endswith(f".svc.{self.cluster_domain}")

    def ready_ips(self, service: Service) -> list[str]:
        return sorted({e.ip for e in self.endpoints.get((service.namespace, service.name), [])})

    def backends(self, service: Service, port: ServicePort) -> list[tuple[str, int]]:
        """Ready (ip, port) pairs for one service port, in the order the proxy should try them."""
        found = []
        for endpoint in self.endpoints.get((service.namespace, service.name), []):
            if isinstance(port.target, int) or str(port.target).isdigit():
                target = int(port.target)
                # A named endpoint port wins when the service port is named, else the target number.
                found.append((endpoint.ip, endpoint.ports.get(port.name, target) if port.name else target))
            elif port.target in endpoint.ports:
                found.append((endpoint.ip, endpoint.ports[str(port.target)]))
        if not found:
            return []
        turn = next(self._turns.setdefault((service.namespace, service.name, port.name), itertools.count()))
        start = turn % len(found)
        return found[start:] + found[:start]
