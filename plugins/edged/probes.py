"""Liveness, readiness and startup probes as kubelet runs them: exec, httpGet and tcpSocket.

:func:`run_probe` loops for one container attempt and calls back only when the probe's result flips after
``successThreshold`` successes or ``failureThreshold`` failures in a row. Times may be fractional here
(Kubernetes only accepts whole seconds), which keeps tests fast.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import trio

from .runtime import ContainerRuntime, RuntimeError_

__all__ = ["ProbeSpec", "probe_once", "run_probe"]

log = logging.getLogger("kubeedge.edged.probes")


@dataclass(frozen=True)
class ProbeSpec:
    handler: dict[str, Any]
    kind: str  # "exec" | "httpGet" | "tcpSocket" | "grpc"
    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def parse(cls, probe: Mapping[str, Any]) -> ProbeSpec:
        for kind in ("exec", "httpGet", "tcpSocket", "grpc"):
            if probe.get(kind) is not None:
                return cls(
                    handler=dict(probe[kind]),
                    kind=kind,
                    initial_delay=float(probe.get("initialDelaySeconds") or 0),
                    period=float(probe.get("periodSeconds") or 10),
                    timeout=float(probe.get("timeoutSeconds") or 1),
                    success_threshold=int(probe.get("successThreshold") or 1),
                    failure_threshold=int(probe.get("failureThreshold") or 3),
                )
        raise ValueError("probe has no handler (exec, httpGet, tcpSocket or grpc)")


def resolve_port(port: Any, container: Mapping[str, Any]) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared.get("containerPort", 0))
    raise ValueError(f"probe port {port!r} is neither a number nor a named container port")


async def probe_once(
    runtime: ContainerRuntime,
    container_id: str,
    spec: ProbeSpec,
    *,
    container: Mapping[str, Any],
    host: str,
) -> tuple[bool, str]:
    """Run the probe once: (success, why)."""
    try:
        if spec.kind == "exec":
            command = [str(c) for c in spec.handler.get("command") or []]
            code, output = await runtime.exec_in_container(container_id, command, spec.timeout)
            return code == 0, f"exit {code}: {output.decode(errors='replace').strip()[:200]}"
        if spec.kind == "httpGet":
            import httpx

            port = resolve_port(spec.handler.get("port"), container)
            scheme = str(spec.handler.get("scheme") or "HTTP").lower()
            target = spec.handler.get("host") or host
            path = str(spec.handler.get("path") or "/")
            if not path.startswith("/"):
                path = "/" + path
            headers = {h.get("name", ""): str(h.get("value", "")) for h in spec.handler.get("httpHeaders") or []}
            headers.setdefault("User-Agent", "kube-probe/1.30")
            async with httpx.AsyncClient(verify=False, timeout=spec.timeout) as client:
                reply = await client.get(f"{scheme}://{target}:{port}{path}", headers=headers)
            return 200 <= reply.status_code < 400, f"HTTP {reply.status_code}"
        if spec.kind == "tcpSocket":
            port = resolve_port(spec.handler.get("port"), container)
            target = spec.handler.get("host") or host
            with trio.fail_after(spec.timeout):
                stream = await trio.open_tcp_stream(target, port)
            await stream.aclose()
            return True, f"connected to {target}:{port}"
        return False, f"probe type {spec.kind} is not supported by edged"
    except trio.TooSlowError:
        return False, f"timed out after {spec.timeout:g} s"
    except (OSError, RuntimeError_, ValueError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    except Exception as exc:  # httpx errors and the like: a probe failure, never an edged failure
        return False, f"{type(exc).__name__}: {exc}"


async def run_probe(
    runtime: ContainerRuntime,
    container_id: str,
    spec: ProbeSpec,
    *,
    container: Mapping[str, Any],
    host: str,
    initial: bool | None,
    on_change: Callable[[bool, str], None],
) -> None:
    """Probe every ``period`` seconds until cancelled; ``on_change(result, why)`` when the result flips."""
    result = initial
    successes = failures = 0
    await trio.sleep(spec.initial_delay)
    while True:
        began = trio.current_time()
        ok, why = await probe_once(runtime, container_id, spec, container=container, host=host)
        if ok:
            successes, failures = successes + 1, 0
            if result is not True and successes >= spec.success_threshold:
                result = True
                on_change(True, why)
        else:
            successes, failures = 0, failures + 1
            if result is not False and failures >= spec.failure_threshold:
                result = False
                on_change(False, why)
        await trio.sleep_until(began + spec.period)
