"""What the API does with objects: create, update, patch, delete, with Kubernetes' rules and errors.

Used by the HTTP layer (:mod:`.app`) and by the in-process scheduler and deployment controller. Every
refusal is an :class:`ApiError`, which the HTTP layer turns into a Kubernetes ``Status``.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import logging
import secrets
import string
import uuid
from typing import Any

from .patch import PatchError, json_patch, merge_patch, strategic_merge_patch
from .resources import Registry, ResourceType
from .store import Store
from .validation import FieldError, SchemaValidator, validate_builtin, validate_metadata

__all__ = ["ApiError", "ApiService", "now_rfc3339", "status_body"]

log = logging.getLogger("kubeedge.apiserver")

DEFAULT_NAMESPACES = ("default", "kube-system", "kube-node-lease", "kube-public", "kubeedge")

REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    406: "NotAcceptable",
    409: "Conflict",
    410: "Expired",
    415: "UnsupportedMediaType",
    422: "Invalid",
    500: "InternalError",
}


def now_rfc3339() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def status_body(code: int, message: str, reason: str = "", details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 300 else "Failure",
        "message": message,
        "reason": reason or REASONS.get(code, ""),
        "code": code,
    }
    if details:
        body["details"] = details
    return body


class ApiError(Exception):
    def __init__(self, code: int, message: str, reason: str = "", details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason or REASONS.get(code, "")
        self.details = details

    def status(self) -> dict[str, Any]:
        return status_body(self.code, str(self), self.reason, self.details)


def _details(rtype: ResourceType, name: str) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name, "kind": rtype.plural}
    if rtype.group:
        details["group"] = rtype.group
    return details


def not_found(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(404, f'{rtype.group_resource} "{name}" not found', "NotFound", _details(rtype, name))


def conflict(rtype: ResourceType, name: str) -> ApiError:
    return ApiError(
        409,
        f'Operation cannot be fulfilled on {rtype.group_resource} "{name}": the object has been modified;'
        " please apply your changes to the latest version and try again",
        "Conflict",
        _details(rtype, name),
    )


def invalid(rtype: ResourceType, name: str, errors: list[FieldError]) -> ApiError:
    kind = f"{rtype.kind}.{rtype.group}" if rtype.group else rtype.kind
    text = str(errors[0]) if len(errors) == 1 else "[" + ", ".join(map(str, errors)) + "]"
    details = _details(rtype, name)
    details["kind"] = rtype.kind
    details["causes"] = [e.cause() for e in errors]
    return ApiError(422, f'{kind} "{name}" is invalid: {text}', "Invalid", details)


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


def _random_suffix(length: int = 5) -> str:
    alphabet = "bcdfghjklmnpqrstvwxz2456789"
    return "".join(secrets.choice(alphabet) for _ in range(length))


class ApiService:
    def __init__(self, store: Store, registry: Registry) -> None:
        self.store = store
        self.registry = registry
        self._validators: dict[tuple[str, str], SchemaValidator] = {}
        self._cluster_ips = itertools.count(1)

    # -- helpers ------------------------------------------------------------------------------------------

    def validator(self, rtype: ResourceType, version: str) -> SchemaValidator | None:
        schema = rtype.schemas.get(version)
        if not schema:
            return None
        key = (rtype.key, version)
        if key not in self._validators:
            self._validators[key] = SchemaValidator(schema)
        return self._validators[key]

    def get(self, rtype: ResourceType, namespace: str, name: str) -> dict[str, Any]:
        obj = self.store.get(rtype.key, namespace if rtype.namespaced else "", name)
        if obj is None:
            raise not_found(rtype, name)
        return obj

    def check(
        self, rtype: ResourceType, version: str, obj: dict[str, Any], field_validation: str = "Strict"
    ) -> tuple[dict[str, Any], list[str]]:
        """Validate ``obj``; return it (pruned of undeclared fields) and the warnings to send back."""
        name = str((obj.get("metadata") or {}).get("name") or "")
        errors = validate_metadata(obj, namespaced_name_label=rtype.plural in ("namespaces",))
        warnings: list[str] = []
        validator = self.validator(rtype, version)
        if validator is not None:
            errors += validator.errors(obj)
            unknown = validator.unknown_fields(obj)
            if unknown:
                if field_validation == "Strict":
                    errors += [
                        FieldError(path, "FieldValueInvalid", "field not declared in schema") for path in unknown
                    ]
                elif field_validation != "Ignore":
                    warnings += [f'unknown field "{path}"' for path in unknown]
                obj = validator.prune(obj)
        elif rtype.builtin:
            errors += validate_builtin(rtype.kind, obj)
        if errors:
            raise invalid(rtype, name, errors)
        return obj, warnings

    # -- create ---------------------------------------------------------------------------------------------

    async def create(
        self,
        rtype: ResourceType,
        version: str,
        namespace: str | None,
        body: Any,
        *,
        field_validation: str = "Strict",
        dry_run: bool = False,
    ) -> tuple[dict[str, Any], list[str]]:
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        obj = copy.deepcopy(body)
        api_version = rtype.api_version(version)
        if obj.get("kind") not in (None, "", rtype.kind) or obj.get("apiVersion") not in (
            None,
            "",
            *(rtype.api_version(v) for v in rtype.versions),
        ):
            raise ApiError(
                400,
                f"the API version in the data ({obj.get('apiVersion')}) does not match the expected API version"
                f" ({api_version}) or kind {obj.get('kind')} is not {rtype.kind}",
            )
        obj["apiVersion"], obj["kind"] = api_version, rtype.kind
        meta = obj.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise invalid(rtype, "", [FieldError("metadata", "FieldValueTypeInvalid", "must be an object")])
        if rtype.namespaced:
            namespace = namespace or meta.get("namespace") or "default"
            if meta.get("namespace") not in (None, "", namespace):
                raise ApiError(
                    400, "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = f"{meta['generateName']}{_random_suffix()}"
        obj, warnings = self.check(rtype, version, obj, field_validation)
        meta = obj["metadata"]
        name = meta["name"]
        ns_key = meta.get("namespace", "")
        if rtype.namespaced:
            if self.store.get("/namespaces", "", ns_key) is None:
                ns_type = self.registry.by_key("/namespaces")
                raise not_found(ns_type, ns_key)
        if self.store.get(rtype.key, ns_key, name) is not None:
            raise ApiError(
                409, f'{rtype.group_resource} "{name}" already exists', "AlreadyExists", _details(rtype, name)
            )
        for transient in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields"):
            meta.pop(transient, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta["generation"] = 1
        if not rtype.builtin and "status" in rtype.subresources:
            obj.pop("status", None)
        self._defaults(rtype, obj)
        if dry_run:
            return obj, warnings
        return await self.store.write("ADDED", rtype.key, obj, None), warnings

    def _defaults(self, rtype: ResourceType, obj: dict[str, Any]) -> None:
        if rtype.key == "/pods":
            status = obj.setdefault("status", {})
            status.setdefault("phase", "Pending")
            spec = obj.setdefault("spec", {})
            spec.setdefault("restartPolicy", "Always")
            spec.setdefault("schedulerName", "default-scheduler")
        elif rtype.key == "/namespaces":
            obj["status"] = {**(obj.get("status") or {}), "phase": "Active"}
            labels = obj["metadata"].setdefault("labels", {})
            labels.setdefault("kubernetes.io/metadata.name", obj["metadata"]["name"])
        elif rtype.key == "apps/deployments":
            spec = obj.setdefault("spec", {})
            spec.setdefault("replicas", 1)
            spec.setdefault("strategy", {"type": "RollingUpdate"})
            spec.setdefault("revisionHistoryLimit", 10)
        elif rtype.key == "/services":
            spec = obj.setdefault("spec", {})
            spec.setdefault("type", "ClusterIP")
            if not spec.get("clusterIP"):
                number = next(self._cluster_ips)
                spec["clusterIP"] = f"10.96.{number // 250}.{number % 250 + 1}"
                spec["clusterIPs"] = [spec["clusterIP"]]
            for port in spec.get("ports") or []:
                if isinstance(port, dict):
                    port.setdefault("protocol", "TCP")
                    port.setdefault("targetPort", port.get("port"))
        elif rtype.key == "/secrets":
            obj.setdefault("type", "Opaque")

    # -- update / patch -----------------------------------------------------------------------------------

    async def update(
        self,
        rtype: ResourceType,
        version: str,
        namespace: str,
        name: str,
        body: Any,
        *,
        subresource: str = "",
        field_validation: str = "Strict",
        dry_run: bool = False,
    ) -> tuple[dict[str, Any], list[str]]:
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        old = self.get(rtype, namespace, name)
        meta = body.get("metadata") or {}
        if meta.get("name") not in (None, name):
            raise ApiError(
                400, f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
            )
        wanted = meta.get("resourceVersion")
        if wanted and str(wanted) != old["metadata"]["resourceVersion"]:
            raise conflict(rtype, name)
        return await self._replace(rtype, version, old, copy.deepcopy(body), subresource, field_validation, dry_run)

    async def patch(
        self,
        rtype: ResourceType,
        version: str,
        namespace: str,
        name: str,
        content_type: str,
        body: Any,
        *,
        subresource: str = "",
        field_validation: str = "Strict",
        dry_run: bool = False,
    ) -> tuple[dict[str, Any], list[str], bool]:
        """Apply a patch; returns (object, warnings, created) — server-side apply creates absent objects."""
        kind = content_type.split(";")[0].strip().lower()
        ns_key = namespace if rtype.namespaced else ""
        old = self.store.get(rtype.key, ns_key, name)
        if old is None:
            if kind == "application/apply-patch+yaml" and not subresource:
                if not isinstance(body, dict):
                    raise ApiError(400, "an apply patch must be an object")
                created = copy.deepcopy(body)
                meta = created.setdefault("metadata", {})
                if meta.get("name") not in (None, name):
                    raise ApiError(400, f"the name of the object ({meta.get('name')}) does not match the URL ({name})")
                meta["name"] = name
                obj, warnings = await self.create(
                    rtype, version, namespace, created, field_validation=field_validation, dry_run=dry_run
                )
                return obj, warnings, True
            raise not_found(rtype, name)
        try:
            if kind == "application/json-patch+json":
                patched = json_patch(old, body)
            elif kind == "application/merge-patch+json":
                patched = merge_patch(old, body)
            elif kind == "application/strategic-merge-patch+json":
                if not rtype.builtin:
                    raise ApiError(
                        415,
                        "strategic merge patch is not supported for custom resources; use a merge patch",
                        "UnsupportedMediaType",
                    )
                patched = strategic_merge_patch(old, body)
            elif kind == "application/apply-patch+yaml":
                patched = merge_patch(old, body)
            else:
                raise ApiError(415, f"the body of the request was in an unknown format: {kind}", "UnsupportedMediaType")
        except PatchError as exc:
            raise ApiError(422 if kind == "application/json-patch+json" else 400, str(exc)) from None
        if not isinstance(patched, dict):
            raise ApiError(400, "the patch must leave an object")
        if isinstance(body, dict) and kind != "application/apply-patch+yaml":
            wanted = (body.get("metadata") or {}).get("resourceVersion")
            if wanted and str(wanted) != old["metadata"]["resourceVersion"]:
                raise conflict(rtype, name)
        patched.setdefault("metadata", {})["resourceVersion"] = old["metadata"]["resourceVersion"]
        obj, warnings = await self._replace(rtype, version, old, patched, subresource, field_validation, dry_run)
        return obj, warnings, False

    async def _replace(
        self,
        rtype: ResourceType,
        version: str,
        old: dict[str, Any],
        new: dict[str, Any],
        subresource: str,
        field_validation: str,
        dry_run: bool,
    ) -> tuple[dict[str, Any], list[str]]:
        old_meta = old["metadata"]
        if subresource == "status":
            merged = copy.deepcopy(old)
            if "status" in new:
                merged["status"] = new["status"]
            else:
                merged.pop("status", None)
            new = merged
        else:
            if "status" in rtype.subresources:
                if "status" in old:
                    new["status"] = copy.deepcopy(old["status"])
                else:
                    new.pop("status", None)
            meta = new.setdefault("metadata", {})
            if not isinstance(meta, dict):
                raise invalid(
                    rtype, old_meta["name"], [FieldError("metadata", "FieldValueTypeInvalid", "must be an object")]
                )
            if meta.get("namespace", old_meta.get("namespace")) != old_meta.get("namespace"):
                raise ApiError(400, "the namespace of the object does not match the namespace on the URL")
            for fixed in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp", "generation"):
                if fixed in old_meta:
                    meta[fixed] = old_meta[fixed]
                else:
                    meta.pop(fixed, None)
        new["apiVersion"], new["kind"] = old.get("apiVersion", rtype.api_version(version)), rtype.kind
        new["apiVersion"] = rtype.api_version(version)
        new, warnings = self.check(rtype, version, new, field_validation)
        if _spec_part(new) != _spec_part(old):
            new["metadata"]["generation"] = int(old_meta.get("generation") or 1) + 1
        new["metadata"]["resourceVersion"] = old_meta["resourceVersion"]
        same = {**new, "apiVersion": None} == {**old, "apiVersion": None}
        if same or dry_run:
            return (new if dry_run else old), warnings
        if old_meta.get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            await self._remove(rtype, new)
            return new, warnings
        return await self.store.write("MODIFIED", rtype.key, new, old), warnings

    # -- delete -------------------------------------------------------------------------------------------

    async def delete(
        self,
        rtype: ResourceType,
        namespace: str,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        old = self.get(rtype, namespace, name)
        options = options or {}
        preconditions = options.get("preconditions") or {}
        if preconditions.get("uid") and preconditions["uid"] != old["metadata"].get("uid"):
            raise ApiError(
                409,
                f"Precondition failed: UID in precondition: {preconditions['uid']}, UID in object"
                f" meta: {old['metadata'].get('uid')}",
                "Conflict",
                _details(rtype, name),
            )
        if (
            preconditions.get("resourceVersion")
            and preconditions["resourceVersion"] != old["metadata"]["resourceVersion"]
        ):
            raise conflict(rtype, name)
        if dry_run:
            return old
        if old["metadata"].get("finalizers"):
            if old["metadata"].get("deletionTimestamp"):
                return old
            marked = copy.deepcopy(old)
            marked["metadata"]["deletionTimestamp"] = now_rfc3339()
            return await self.store.write("MODIFIED", rtype.key, marked, old)
        removed = await self._remove(rtype, copy.deepcopy(old))
        if options.get("propagationPolicy") != "Orphan":
            await self._collect(rtype, removed)
        return removed

    async def _remove(self, rtype: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        old = self.store.get(rtype.key, obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        return await self.store.write("DELETED", rtype.key, obj, old)

    async def _collect(self, rtype: ResourceType, owner: dict[str, Any]) -> None:
        """Garbage collection: dependents of a deleted owner go too; a deleted namespace takes its objects."""
        uid = owner["metadata"].get("uid")
        doomed: list[tuple[ResourceType, dict[str, Any]]] = []
        for key, bucket in list(self.store.objects.items()):
            try:
                dependent_type = self.registry.by_key(key)
            except KeyError:
                continue
            for obj in list(bucket.values()):
                meta = obj["metadata"]
                if (
                    rtype.key == "/namespaces"
                    and dependent_type.namespaced
                    and meta.get("namespace") == owner["metadata"]["name"]
                ):
                    doomed.append((dependent_type, obj))
                elif any(ref.get("uid") == uid for ref in meta.get("ownerReferences") or []):
                    doomed.append((dependent_type, obj))
        for dependent_type, obj in doomed:
            meta = obj["metadata"]
            try:
                await self.delete(dependent_type, meta.get("namespace", ""), meta["name"])
            except ApiError as exc:
                if exc.code != 404:
                    log.warning("garbage collection of %s %s failed: %s", dependent_type.kind, meta["name"], exc)

    # -- start-up -----------------------------------------------------------------------------------------

    async def ensure_namespaces(self, names: tuple[str, ...] = DEFAULT_NAMESPACES) -> None:
        ns_type = self.registry.by_key("/namespaces")
        for name in names:
            if self.store.get("/namespaces", "", name) is None:
                await self.create(ns_type, "v1", None, {"metadata": {"name": name}})


def random_alnum(length: int) -> str:
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(length))
