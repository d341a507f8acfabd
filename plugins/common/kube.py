"""The official ``kubernetes`` client used from trio: worker-thread calls and list-watch informers.

A public utility of the cloud controllers (edgecontroller, devicecontroller; others may import it).
Every call runs in a worker thread (the client is synchronous). An :class:`Informer` lists, then
watches from the list's resourceVersion, keeps a cache, and turns a relist (after 410 Gone, an expired
or broken watch) into the ADDED/MODIFIED/DELETED events that were missed. On cancellation the open
watch response is shut down, so the worker thread returns at once.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

__all__ = ["Gone", "Informer", "Kube", "call_with_retry", "default_kubeconfig", "kubeconfig_path", "object_key"]

log = logging.getLogger("kubeedge.kube")

Handler = Callable[[str, dict[str, Any], dict[str, Any] | None], Awaitable[None]]


class Gone(Exception):
    """The watch's resourceVersion is too old (410): relist."""


def default_kubeconfig(data_dir: Path) -> Path:
    """The kubeconfig the embedded apiserver writes in the cloud's data directory."""
    return data_dir / "kubeconfig.yaml"


def kubeconfig_path(configured: str | None, data_dir: Path) -> Path:
    """A module's ``kubeconfig`` setting (``~`` expanded, as kubectl does), else the embedded API's."""
    return Path(configured).expanduser() if configured else default_kubeconfig(data_dir)


def object_key(obj: dict[str, Any]) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


class Kube:
    """An ``ApiClient`` from a kubeconfig, and helpers to call it from trio."""

    def __init__(self, kubeconfig: str | Path) -> None:
        from kubernetes import client, config

        configuration = client.Configuration()
        config.load_kube_config(config_file=str(kubeconfig), client_configuration=configuration)
        self.api_client = client.ApiClient(configuration)
        self.core = client.CoreV1Api(self.api_client)
        self.coordination = client.CoordinationV1Api(self.api_client)
        self.custom = client.CustomObjectsApi(self.api_client)
        self._limiter = trio.CapacityLimiter(8)

    async def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)`` in a worker thread; returns the decoded JSON (a dict) of the response."""

        def blocking() -> Any:
            response = fn(*args, _preload_content=False, **kwargs)
            try:
                return json.loads(response.data) if response.data else None
            finally:
                response.release_conn()

        return await trio.to_thread.run_sync(blocking, limiter=self._limiter)

    def close(self) -> None:
        self.api_client.close()


def _leaf(exc: BaseException) -> BaseException:
    """The first error inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _status_code(exc: BaseException) -> int | None:
    return getattr(exc, "status", None)


class Informer:
    """List-watch of one collection with a cache; calls ``handler(type, obj, old)`` for every change."""

    def __init__(
        self,
        kube: Kube,
        list_fn: Callable[..., Any],
        *args: Any,
        name: str = "",
        watch_timeout: int = 300,
        **kwargs: Any,
    ) -> None:
        self.kube = kube
        self.list_fn = list_fn
        self.args = args
        self.kwargs = kwargs
        self.name = name or getattr(list_fn, "__name__", "informer")
        self.watch_timeout = watch_timeout
        self.cache: dict[tuple[str, str], dict[str, Any]] = {}
        self.synced = trio.Event()
        self.resource_version = ""
        self.relists = 0

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        return self.cache.get((namespace, name))

    def items(self) -> list[dict[str, Any]]:
        return list(self.cache.values())

    async def run(self, handler: Handler, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        backoff = 0.5
        started = False
        while True:
            try:
                await self._relist(handler)
                if not started:
                    started = True
                    self.synced.set()
                    task_status.started()
                backoff = 0.5
                while True:
                    await self._watch(handler)
            except Exception as group:
                exc = _leaf(group)
                if not isinstance(exc, Gone) and _status_code(exc) != 410:
                    log.warning(
                        "%s: list/watch failed (%s: %s); retrying in %.1f s",
                        self.name,
                        type(exc).__name__,
                        exc,
                        backoff,
                    )
                    await trio.sleep(backoff)
                    backoff = min(backoff * 2, 10.0)
                    continue
                log.info("%s: resourceVersion %s expired, relisting", self.name, self.resource_version)
                continue

    async def _relist(self, handler: Handler) -> None:
        body = await self.kube.call(self.list_fn, *self.args, **self.kwargs)
        self.relists += 1
        self.resource_version = str((body.get("metadata") or {}).get("resourceVersion") or "")
        fresh = {object_key(item): item for item in body.get("items") or []}
        old_cache, self.cache = self.cache, dict(fresh)
        for key, obj in fresh.items():
            before = old_cache.get(key)
            if before is None:
                await handler("ADDED", obj, None)
            elif (before.get("metadata") or {}).get("resourceVersion") != (obj.get("metadata") or {}).get(
                "resourceVersion"
            ):
                await handler("MODIFIED", obj, before)
        for key, obj in old_cache.items():
            if key not in fresh:
                await handler("DELETED", obj, obj)

    async def _watch(self, handler: Handler) -> None:
        send, receive = trio.open_memory_channel[dict[str, Any]](256)
        holder: dict[str, Any] = {}
        token = trio.lowlevel.current_trio_token()

        def blocking() -> None:
            if True:
                response = self.list_fn(
                    *self.args,
                    watch=True,
                    resource_version=self.resource_version,
                    allow_watch_bookmarks=True,
                    timeout_seconds=self.watch_timeout,
                    _preload_content=False,
                    _request_timeout=(10, self.watch_timeout + 30),
                    **self.kwargs,
                )
                holder["response"] = response
                try:
                    pending = b""
                    for chunk in response.stream(None, decode_content=False):
                        pending += chunk
                        *lines, pending = pending.split(b"\n")
                        for line in lines:
                            if line.strip():
                                trio.from_thread.run(send.send, json.loads(line), trio_token=token)
                finally:
                    response.release_conn()

        async with trio.open_nursery() as nursery:

            async def pump() -> None:
                async with send:  # closed here, on the trio thread, when the worker is done
                    await trio.to_thread.run_sync(blocking, abandon_on_cancel=True, limiter=trio.CapacityLimiter(1))

            nursery.start_soon(pump)
            try:
                async for event in receive:
                    await self._apply(event, handler)
            finally:
                response = holder.get("response")
                if response is not None:
                    # Unblocks the worker's read so the thread ends now, not when the server times out.
                    await trio.to_thread.run_sync(_shutdown, response)

    async def _apply(self, event: dict[str, Any], handler: Handler) -> None:
        kind = event.get("type")
        obj = event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone(obj.get("message", "gone"))
            raise RuntimeError(f"watch error: {obj.get('message', obj)}")
        version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
        if kind == "BOOKMARK":
            self.resource_version = version or self.resource_version
            return
        if kind not in ("ADDED", "MODIFIED", "DELETED"):
            return
        key = object_key(obj)
        before = self.cache.get(key)
        if kind == "DELETED":
            self.cache.pop(key, None)
        else:
            self.cache[key] = obj
        if version:
            self.resource_version = version
        await handler(kind, obj, before)


def _shutdown(response: Any) -> None:
    try:
        response.shutdown()
    except Exception:  # already closed: nothing to unblock
        log.debug("watch response already closed")


async def call_with_retry(fn: Callable[[], Awaitable[Any]], attempts: int = 3) -> Any:
    """Retry a call on 409 Conflict / 429 / 5xx a few times with a short backoff."""
    for attempt in range(attempts):
        try:
            return await fn()
        except Exception as exc:
            code = _status_code(exc)
            if attempt + 1 == attempts or code not in (409, 429, 500, 503):
                raise
            await trio.sleep(0.05 * math.pow(2, attempt))
    return None
