"""Where a property's values go besides the twin: a Device's ``properties[].pushMethod`` (v1beta1).

- ``mqtt`` (``address``, ``topic``, ``qos``, ``retained``): published by the mapper's MQTT client
  (see :meth:`~kubeedge.mappers.sdk.runtime.Mapper.push`).
- ``http`` (``hostName``, ``port``, ``requestPath``, ``timeout`` in milliseconds): a ``POST`` to
  ``<hostName>:<port><requestPath>`` with the form body KubeEdge's mappers send,
  ``<property>=<value>&time=<YYYY-MM-DD HH:MM:SS>`` (``application/x-www-form-urlencoded``). ``hostName``
  carries the scheme (``http://10.0.0.5``); without one, ``http://`` is meant.
- ``otel`` (``endpointURL``, e.g. ``http://collector:4318/v1/metrics``): an OTLP/HTTP export, JSON
  encoding, of one gauge named after the property with the device as resource attributes; values that
  are not numbers (strings) cannot be metrics and are skipped.
- ``dbMethod`` (influxdb2, redis, mysql, TDEngine) is not pushed by this SDK: a mapper that needs it does
  it in its driver; the Device still works, and the mapper says so once in its log.

Pure functions here (payloads and URLs); the sending lives in the runtime.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

__all__ = ["SUPPORTED", "http_body", "http_url", "otlp_gauge"]

SUPPORTED = ("mqtt", "http", "otel")


def http_url(config: dict[str, Any]) -> str:
    host = str(config.get("hostName") or "").rstrip("/")
    if not host:
        raise ValueError("pushMethod.http.hostName is empty")
    if "://" not in host:
        host = f"http://{host}"
    port = config.get("port")
    path = str(config.get("requestPath") or "")
    if path and not path.startswith("/"):
        path = "/" + path
    return f"{host}:{int(port)}{path}" if port else f"{host}{path}"


def http_body(name: str, value: str, timestamp_ms: int) -> bytes:
    """KubeEdge's form: the property's value, then the sample's local time to the second."""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp_ms / 1000))
    return f"{quote(name)}={quote(value)}&time={quote(when)}".encode()


def otlp_gauge(
    device: str, namespace: str, name: str, value: str, kind: str, timestamp_ms: int
) -> dict[str, Any] | None:
    """One OTLP ``ExportMetricsServiceRequest`` (JSON) with one gauge point; None when ``value`` is no number."""
    point: dict[str, Any] = {"timeUnixNano": str(timestamp_ms * 1_000_000)}
    if kind in ("int", "integer") and value.lstrip("-").isdigit():
        point["asInt"] = value
    elif kind == "boolean" and value in ("true", "false"):
        point["asInt"] = "1" if value == "true" else "0"
    else:
        try:
            point["asDouble"] = float(value)
        except ValueError:
            return None
    attributes = [
        {"key": "service.name", "value": {"stringValue": "kubeedge-mapper"}},
        {"key": "device.name", "value": {"stringValue": device}},
        {"key": "device.namespace", "value": {"stringValue": namespace}},
    ]
    return {
        "resourceMetrics": [
            {
                "resource": {"attributes": attributes},
                "scopeMetrics": [
                    {
                        "scope": {"name": "kubeedge.mappers.sdk"},
                        "metrics": [{"name": name, "gauge": {"dataPoints": [point]}}],
                    }
                ],
            }
        ]
    }
