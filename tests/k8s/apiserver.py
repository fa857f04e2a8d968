#!/usr/bin/env python3
# apiserver.py - a Kubernetes API server stand-in on 127.0.0.1 for podvault's agent tests.
"""A small, in-memory Kubernetes API server that the real kubectl and podvault's agent can drive.

What it does like the real one: JSON CRUD on built-in kinds and on any kind a
CustomResourceDefinition declares; one global resourceVersion counter; 409 Conflict on a stale
resourceVersion; watch streams (chunked JSON lines) resuming from a resourceVersion, with an ERROR
event carrying a 410 Status when that version is older than the retained event window; label and
field selectors; generateName; finalizers and deletionTimestamp; status subresources; merge,
JSON and (approximate) strategic-merge patches; legacy discovery (/api, /apis, /apis/G/V); an
OpenAPI v3 index of PATCH operations (enough for kubectl to leave validation to the server).

Authentication and authorization (the TLS listener only, with --sa-token): a bearer token
stands for a service account, whose requests must be allowed by the Roles and ClusterRoles
bound to it in the store (RBAC rules: verbs, apiGroups, resources incl. subresources,
resourceNames); discovery is open to it. The plain HTTP listener serves everyone (kubectl).

What it does not do: other authentication, aggregated or non-resource RBAC rules, admission, schema validation beyond pruning by CRD schemas and their enums, OpenAPI schemas, server-side apply, pagination (everything fits one page), tables
(kubectl falls back to its own printing), protobuf, garbage collection by ownerReferences.

Test hooks (POST unless said otherwise; no token needed):
  /admin/drop-watches          end every open watch stream cleanly (the client must resume)
  /admin/compact               forget every retained event and move the window past every
                               resourceVersion handed out so far, then drop the watches: every
                               client resuming from an old version gets 410 Gone and must relist
  /admin/fail                  body {"method":"PUT","path":"regex","code":409,"count":1}: the next
                               `count` matching requests fail with `code` (a Status object)
  /admin/status-subresource    body {"resource":"podvolumebackups","group":"velero.io","on":true}
  GET /admin/stats             {"rv":N,"floor":N,"watches":N,"requests":{"GET":N,...},
                               "failures_left":N}  (injected failures not yet used)
"""

import argparse
import base64
import collections
import copy
import datetime
import hashlib
import json
import random
import re
import os
import select
import signal
import socket
import ssl
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # the real server's generateName alphabet


class ApiError(Exception):
    """An error answered as a Kubernetes Status object."""

    REASONS = {400: "BadRequest", 401: "Unauthorized", 404: "NotFound", 405: "MethodNotAllowed",
               409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType",
               422: "Invalid", 500: "InternalError"}

    def __init__(self, code, message, reason=None, details=None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or self.REASONS.get(code, "Unknown")
        self.details = details

    def status(self):
        s = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
             "message": self.message, "reason": self.reason, "code": self.code}
        if self.details:
            s["details"] = self.details
        return s


def now_rfc3339():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---------------------------------------------------------------------------------------------
# Resource types

class RType:
    """One served resource: a group/version/plural and how it behaves."""

    def __init__(self, group, version, plural, kind, namespaced=True, short=(), status_sub=False,
                 singular=None, from_crd=False, schema=None):
        self.group, self.version, self.plural, self.kind = group, version, plural, kind
        self.namespaced = namespaced
        self.short = list(short)
        self.status_sub = status_sub
        self.singular = singular or kind.lower()
        self.from_crd = from_crd
        self.schema = schema  # a CRD's openAPIV3Schema: its enums are enforced

    @property
    def api_version(self):
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def key(self):
        # Objects are stored per group and plural, so every served version sees the same objects.
        return (self.group, self.plural)

    def discovery(self):
        out = [{"name": self.plural, "singularName": self.singular, "namespaced": self.namespaced,
                "kind": self.kind, "verbs": VERBS, "shortNames": self.short}]
        if self.status_sub:
            out.append({"name": self.plural + "/status", "singularName": "",
                        "namespaced": self.namespaced, "kind": self.kind,
                        "verbs": ["get", "patch", "update"]})
        return out


BUILTIN_TYPES = [
    RType("", "v1", "pods", "Pod", short=["po"], status_sub=True),
    RType("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", short=["pvc"], status_sub=True),
    RType("", "v1", "persistentvolumes", "PersistentVolume", namespaced=False, short=["pv"],
          status_sub=True),
    RType("", "v1", "secrets", "Secret"),
    RType("", "v1", "configmaps", "ConfigMap", short=["cm"]),
    RType("", "v1", "namespaces", "Namespace", namespaced=False, short=["ns"], status_sub=True),
    RType("", "v1", "serviceaccounts", "ServiceAccount", short=["sa"]),
    RType("", "v1", "services", "Service", short=["svc"], status_sub=True),
    RType("", "v1", "nodes", "Node", namespaced=False, short=["no"], status_sub=True),
    RType("", "v1", "events", "Event", short=["ev"]),
    RType("apps", "v1", "daemonsets", "DaemonSet", short=["ds"], status_sub=True),
    RType("apps", "v1", "deployments", "Deployment", short=["deploy"], status_sub=True),
    RType("batch", "v1", "jobs", "Job", status_sub=True),
    RType("batch", "v1", "cronjobs", "CronJob", short=["cj"], status_sub=True),
    RType("rbac.authorization.k8s.io", "v1", "roles", "Role"),
    RType("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding"),
    RType("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", namespaced=False),
    RType("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding",
          namespaced=False),
    RType("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition",
          namespaced=False, short=["crd", "crds"], status_sub=True),
    RType("storage.k8s.io", "v1", "storageclasses", "StorageClass", namespaced=False, short=["sc"]),
    RType("storage.k8s.io", "v1", "csidrivers", "CSIDriver", namespaced=False),
    RType("coordination.k8s.io", "v1", "leases", "Lease"),
    RType("networking.k8s.io", "v1", "networkpolicies", "NetworkPolicy", short=["netpol"]),
    # Velero's kinds are served from the start, as in a cluster where Velero is installed. Their
    # CRDs declare no status subresource, so status is written by updating the whole object.
    RType("velero.io", "v1", "backupstoragelocations", "BackupStorageLocation", short=["bsl"],
          from_crd=True),
    RType("velero.io", "v1", "podvolumebackups", "PodVolumeBackup", from_crd=True),
    RType("velero.io", "v1", "podvolumerestores", "PodVolumeRestore", from_crd=True),
    RType("velero.io", "v1", "backups", "Backup", from_crd=True),
    # CSI snapshot data movement (velero pkg/apis/velero/v2alpha1), served by a node-agent; its
    # CRDs declare no status subresource either (config/crd/v2alpha1/bases).
    RType("velero.io", "v2alpha1", "datauploads", "DataUpload", from_crd=True),
    RType("velero.io", "v2alpha1", "datadownloads", "DataDownload", from_crd=True),
]


class Registry:
    """Which resources are served, by group/version/plural; CRDs add and remove entries."""

    def __init__(self):
        self.types = {}  # (group, version, plural) -> RType
        for t in BUILTIN_TYPES:
            self.add(t)

    def add(self, t):
        self.types[(t.group, t.version, t.plural)] = t

    def get(self, group, version, plural):
        return self.types.get((group, version, plural))

    def groups(self):
        """Group name -> ordered list of versions."""
        out = collections.OrderedDict()
        for (g, v, _p) in self.types:
            out.setdefault(g, [])
            if v not in out[g]:
                out[g].append(v)
        return out

    def in_group_version(self, group, version):
        return [t for (g, v, _p), t in self.types.items() if g == group and v == version]

    def apply_crd(self, crd, deleted=False):
        spec = crd.get("spec") or {}
        names = spec.get("names") or {}
        group, plural, kind = spec.get("group"), names.get("plural"), names.get("kind")
        if not group or not plural or not kind:
            raise ApiError(422, "CustomResourceDefinition needs spec.group, spec.names.plural "
                           "and spec.names.kind")
        for ver in spec.get("versions") or []:
            key = (group, ver.get("name"), plural)
            if deleted or not ver.get("served", True):
                self.types.pop(key, None)
                continue
            sub = (ver.get("subresources") or spec.get("subresources") or {})
            self.add(RType(group, ver.get("name"), plural, kind,
                           namespaced=spec.get("scope", "Namespaced") == "Namespaced",
                           short=names.get("shortNames") or [], status_sub="status" in sub,
                           singular=names.get("singular"), from_crd=True,
                           schema=(ver.get("schema") or {}).get("openAPIV3Schema")))


# ---------------------------------------------------------------------------------------------
# Selectors

def parse_label_selector(text):
    """Returns a predicate on a labels dict. Supports =, ==, !=, in, notin, key and !key."""
    if not text:
        return lambda labels: True
    terms, depth, cur = [], 0, ""
    for ch in text:  # split on commas outside parentheses
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append(cur)
            cur = ""
        else:
            cur += ch
    terms.append(cur)
    preds = []
    for term in (t.strip() for t in terms):
        m = re.fullmatch(r"([\w./-]+)\s+(in|notin)\s+\((.*)\)", term)
        if m:
            key, op, vals = m.group(1), m.group(2), {v.strip() for v in m.group(3).split(",")}
            if op == "in":
                preds.append(lambda l, k=key, vs=vals: l.get(k) in vs)
            else:
                preds.append(lambda l, k=key, vs=vals: l.get(k) not in vs)
            continue
        m = re.fullmatch(r"([\w./-]+)\s*(==|=|!=)\s*([\w./-]*)", term)
        if m:
            key, op, val = m.groups()
            if op == "!=":
                preds.append(lambda l, k=key, v=val: l.get(k) != v)
            else:
                preds.append(lambda l, k=key, v=val: l.get(k) == v)
            continue
        m = re.fullmatch(r"(!?)([\w./-]+)", term)
        if m:
            neg, key = m.groups()
            preds.append((lambda l, k=key: k not in l) if neg else (lambda l, k=key: k in l))
            continue
        raise ApiError(400, f"unable to parse requirement: {term!r}")
    return lambda labels: all(p(labels) for p in preds)


def field_value(obj, path):
    cur = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    return str(cur)


def parse_field_selector(text):
    """Returns a predicate on an object. Supports path=value, path==value and path!=value."""
    if not text:
        return lambda obj: True
    preds = []
    for term in text.split(","):
        m = re.fullmatch(r"\s*([\w.]+)\s*(==|=|!=)\s*(.*?)\s*", term)
        if not m:
            raise ApiError(400, f"invalid field selector: {term!r}")
        path, op, val = m.groups()
        if op == "!=":
            preds.append(lambda o, p=path, v=val: field_value(o, p) != v)
        else:
            preds.append(lambda o, p=path, v=val: field_value(o, p) == v)
    return lambda obj: all(p(obj) for p in preds)


# ---------------------------------------------------------------------------------------------
# Patches

def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


# List fields of built-in kinds that strategic merge patch merges by a key, with that key.
SMP_LIST_KEYS = {"containers": "name", "initContainers": "name", "ephemeralContainers": "name",
                 "volumes": "name", "env": "name", "volumeMounts": "mountPath",
                 "volumeDevices": "devicePath", "ports": "containerPort",
                 "imagePullSecrets": "name", "conditions": "type", "finalizers": None}


def strategic_merge_patch(target, patch, list_key=None):
    """An approximation of strategic merge patch: maps merge, directives ($patch,
    $setElementOrder, $retainKeys, $deleteFromPrimitiveList) are honoured or dropped, the list
    fields in SMP_LIST_KEYS merge by their key, other lists are replaced."""
    if isinstance(patch, list):
        return [strategic_merge_patch(None, p) for p in patch]
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "replace":
        return strategic_merge_patch(None, {k: v for k, v in patch.items() if k != "$patch"})
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys") or k.startswith("$setElementOrder/"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            out[field] = [x for x in out.get(field) or [] if x not in v]
            continue
        if v is None:
            out.pop(k, None)
        elif isinstance(v, list) and k in SMP_LIST_KEYS and isinstance(out.get(k), list):
            out[k] = merge_list(out[k], v, SMP_LIST_KEYS[k])
        elif isinstance(v, dict):
            out[k] = strategic_merge_patch(out.get(k), v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def merge_list(cur, patch, key):
    if key is None:  # a set of primitives: union, keeping order
        return cur + [x for x in patch if x not in cur]
    out = [copy.deepcopy(x) for x in cur]
    for item in patch:
        if not isinstance(item, dict) or key not in item:
            return strategic_merge_patch(None, patch)
        idx = next((i for i, x in enumerate(out) if isinstance(x, dict) and
                    x.get(key) == item[key]), None)
        if item.get("$patch") == "delete":
            if idx is not None:
                out.pop(idx)
        elif idx is None:
            out.append(strategic_merge_patch(None, item))
        else:
            out[idx] = strategic_merge_patch(out[idx], item)
    return out


def json_pointer(path):
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, f"invalid JSON pointer {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def json_patch(target, ops):
    """RFC 6902 JSON patch."""
    doc = copy.deepcopy(target)
    if not isinstance(ops, list):
        raise ApiError(400, "a JSON patch must be an array of operations")

    def parent(path):
        parts = json_pointer(path)
        if not parts:
            raise ApiError(422, "cannot address the whole document here")
        cur = doc
        for p in parts[:-1]:
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur, parts[-1]

    def get(path):
        cur = doc
        for p in json_pointer(path):
            cur = cur[int(p)] if isinstance(cur, list) else cur[p]
        return cur

    def put(path, value, insert):
        par, last = parent(path)
        if isinstance(par, list):
            if last == "-":
                par.append(value)
            elif insert:
                par.insert(int(last), value)
            else:
                par[int(last)] = value
        else:
            if not insert and last not in par:
                raise KeyError(last)
            par[last] = value

    def remove(path):
        par, last = parent(path)
        return par.pop(int(last)) if isinstance(par, list) else par.pop(last)

    for op in ops:
        try:
            kind, path = op["op"], op["path"]
            if kind == "add":
                put(path, copy.deepcopy(op["value"]), True)
            elif kind == "remove":
                remove(path)
            elif kind == "replace":
                put(path, copy.deepcopy(op["value"]), False)
            elif kind == "move":
                put(path, remove(op["from"]), True)
            elif kind == "copy":
                put(path, copy.deepcopy(get(op["from"])), True)
            elif kind == "test":
                if get(path) != op["value"]:
                    raise ApiError(422, f"test operation failed at {path}")
            else:
                raise ApiError(422, f"unknown JSON patch operation {kind!r}")
        except (KeyError, IndexError, ValueError, TypeError) as ex:
            raise ApiError(422, f"JSON patch operation {op!r} failed: {ex!r}")
    return doc


# ---------------------------------------------------------------------------------------------
# Protobuf bodies: kubectl's typed commands (create namespace|secret|configmap) send
# application/vnd.kubernetes.protobuf. Only the fields those commands set are decoded.

def pb_fields(data):
    """Yields (field number, value) for a protobuf message: ints for varints, bytes otherwise."""
    i = 0

    def varint():
        nonlocal i
        shift = val = 0
        while True:
            if i >= len(data) or shift > 63:
                raise ApiError(400, "truncated or malformed protobuf body")
            b = data[i]
            i += 1
            val |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return val

    while i < len(data):
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            yield field, varint()
        elif wire == 2:
            n = varint()
            if i + n > len(data):
                raise ApiError(400, "truncated protobuf body")
            yield field, data[i:i + n]
            i += n
        elif wire in (1, 5):
            i += 8 if wire == 1 else 4
        else:
            raise ApiError(400, f"unsupported protobuf wire type {wire}")


def pb_map(entries, binary=False):
    out = {}
    for raw in entries:
        kv = dict(pb_fields(raw))
        val = kv.get(2, b"")
        out[kv.get(1, b"").decode()] = base64.b64encode(val).decode() if binary else val.decode()
    return out


def pb_decode(body):
    """Decodes the k8s protobuf envelope around a Namespace, ConfigMap or Secret into JSON form."""
    if not body.startswith(b"k8s\x00"):
        raise ApiError(400, "a protobuf body must start with the k8s magic bytes")
    env = dict(pb_fields(body[4:]))
    tm = dict(pb_fields(env.get(1, b"")))
    api_version, kind = tm.get(1, b"").decode(), tm.get(2, b"").decode()
    fields = list(pb_fields(env.get(2, b"")))
    obj = {"apiVersion": api_version, "kind": kind, "metadata": {}}
    for num, val in fields:
        if num != 1:
            continue
        meta = list(pb_fields(val))
        for mnum, mval in meta:
            if mnum in (1, 2, 3) and mval:
                obj["metadata"][{1: "name", 2: "generateName", 3: "namespace"}[mnum]] = \
                    mval.decode()
        for mnum, key in ((11, "labels"), (12, "annotations")):
            entries = [v for n, v in meta if n == mnum]
            if entries:
                obj["metadata"][key] = pb_map(entries)
    if kind == "ConfigMap":
        obj["data"] = pb_map(v for n, v in fields if n == 2)
        obj["binaryData"] = pb_map((v for n, v in fields if n == 3), binary=True)
    elif kind == "Secret":
        obj["data"] = pb_map((v for n, v in fields if n == 2), binary=True)
        obj["data"].update({k: base64.b64encode(v.encode()).decode()
                            for k, v in pb_map(v for n, v in fields if n == 4).items()})
        types = [v.decode() for n, v in fields if n == 3 and v]
        if types:
            obj["type"] = types[0]
    elif kind != "Namespace":
        raise ApiError(415, f"this stand-in decodes protobuf only for Namespace, ConfigMap and "
                       f"Secret, not {kind}: send JSON (kubectl create -f FILE does)")
    return {k: v for k, v in obj.items() if v != {} or k == "metadata"}


# ---------------------------------------------------------------------------------------------
# Store: objects, the resourceVersion counter and the retained event window

class Event:
    __slots__ = ("rv", "tkey", "type", "obj", "old")

    def __init__(self, rv, tkey, etype, obj, old):
        self.rv, self.tkey, self.type, self.obj, self.old = rv, tkey, etype, obj, old


class Store:
    def __init__(self, registry, window):
        self.registry = registry
        self.cond = threading.Condition()
        self.rv = 0
        self.floor = 0  # events with rv <= floor are forgotten; watching from older gets 410
        self.window = window
        self.events = collections.deque()
        self.objects = collections.defaultdict(dict)  # RType.key -> {(ns, name): obj}
        self.drop_gen = 0
        self.watches = 0
        self.failures = []  # injected: dicts with method, path (regex), code, count
        self.requests = collections.Counter()

    # Every change goes through here with the lock held.
    def _record(self, t, etype, obj, old):
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        self.events.append(Event(self.rv, t.key, etype, copy.deepcopy(obj),
                                 copy.deepcopy(old) if old is not None else None))
        while len(self.events) > self.window:
            self.floor = self.events.popleft().rv
        self.cond.notify_all()

    def list(self, t, ns, label_pred, field_pred):
        with self.cond:
            items = [copy.deepcopy(o) for (ons, _n), o in sorted(self.objects[t.key].items())
                     if (ns is None or ons == ns) and matches(o, label_pred, field_pred)]
            return items, self.rv

    def get(self, t, ns, name):
        with self.cond:
            o = self.objects[t.key].get((ns, name))
            if o is None:
                raise not_found(t, name)
            return copy.deepcopy(o)

    def create(self, t, ns, obj, dry_run):
        with self.cond:
            meta = obj.setdefault("metadata", {})
            if not meta.get("name"):
                if not meta.get("generateName"):
                    raise ApiError(422, f"{t.kind}: metadata.name or metadata.generateName is "
                                   "required")
                for _ in range(100):
                    meta["name"] = meta["generateName"] + "".join(random.choice(NAME_CHARS)
                                                                  for _ in range(5))
                    if (ns, meta["name"]) not in self.objects[t.key]:
                        break
            if (ns, meta["name"]) in self.objects[t.key]:
                raise ApiError(409, f'{t.plural}.{t.group or "core"} "{meta["name"]}" already '
                               "exists", reason="AlreadyExists",
                               details={"name": meta["name"], "kind": t.plural})
            if meta.get("resourceVersion"):
                raise ApiError(400, "resourceVersion should not be set on objects to be created")
            if t.namespaced:
                meta["namespace"] = ns
            else:
                meta.pop("namespace", None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            meta["generation"] = 1
            for k in ("deletionTimestamp", "deletionGracePeriodSeconds"):
                meta.pop(k, None)
            if t.status_sub:
                obj.pop("status", None)
                if t.kind == "Pod":
                    obj["status"] = {"phase": "Pending"}
            if t.kind == "Secret":
                obj.setdefault("type", "Opaque")
                fold_string_data(obj)
            validate(t, obj)
            if t.kind == "CustomResourceDefinition" and not dry_run:
                self.registry.apply_crd(obj)
            if t.kind == "CustomResourceDefinition":
                obj["status"] = crd_status(obj)
            if dry_run:
                return obj
            self.objects[t.key][(ns, meta["name"])] = obj
            self._record(t, "ADDED", obj, None)
            return copy.deepcopy(obj)

    def update(self, t, ns, name, new, sub, dry_run, mutate=None):
        """Replaces an object (sub "" or "status"). With `mutate`, `new` is computed from the
        current object under the lock (patches); otherwise it is the body of a PUT."""
        with self.cond:
            old = self.objects[t.key].get((ns, name))
            if old is None:
                raise not_found(t, name)
            if mutate is not None:
                new = mutate(copy.deepcopy(old))
            if not isinstance(new, dict):
                raise ApiError(400, "the object must be a JSON object")
            meta = new.setdefault("metadata", {})
            if meta.get("name", name) != name:
                raise ApiError(400, f'the name of the object ({meta.get("name")}) does not match '
                               f"the name in the URL ({name})")
            rv = meta.get("resourceVersion")
            if rv and rv != old["metadata"]["resourceVersion"]:
                raise ApiError(409, f'Operation cannot be fulfilled on {t.plural}.{t.group or "core"}'
                               f' "{name}": the object has been modified; please apply your '
                               "changes to the latest version and try again", reason="Conflict",
                               details={"name": name, "kind": t.plural})
            if sub == "status":
                merged = copy.deepcopy(old)
                merged["status"] = new.get("status")
                if merged["status"] is None:
                    merged.pop("status")
                new = merged
            else:
                if t.status_sub:  # the main resource cannot change status
                    new["status"] = copy.deepcopy(old.get("status"))
                    if new["status"] is None:
                        new.pop("status")
                meta = new["metadata"]
                for k in ("uid", "creationTimestamp", "deletionTimestamp", "namespace",
                          "generation"):
                    if k in old["metadata"]:
                        meta[k] = old["metadata"][k]
                    else:
                        meta.pop(k, None)
                meta["name"] = name
                if spec_of(new) != spec_of(old):
                    meta["generation"] = old["metadata"].get("generation", 1) + 1
            new["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"]
            if t.kind == "Secret":
                fold_string_data(new)
            new.setdefault("apiVersion", t.api_version)
            new.setdefault("kind", t.kind)
            validate(t, new)
            if new == old:  # a no-op update changes nothing, not even the resourceVersion
                return copy.deepcopy(old)
            if t.kind == "CustomResourceDefinition" and not dry_run:
                self.registry.apply_crd(new)
            if dry_run:
                return new
            if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
                del self.objects[t.key][(ns, name)]
                self._record(t, "DELETED", new, old)
                return copy.deepcopy(new)
            self.objects[t.key][(ns, name)] = new
            self._record(t, "MODIFIED", new, old)
            return copy.deepcopy(new)

    def delete(self, t, ns, name, options, dry_run):
        with self.cond:
            old = self.objects[t.key].get((ns, name))
            if old is None:
                raise not_found(t, name)
            pre = (options or {}).get("preconditions") or {}
            if pre.get("uid") and pre["uid"] != old["metadata"]["uid"]:
                raise ApiError(409, f"Precondition failed: UID in precondition: {pre['uid']}, "
                               f"UID in object meta: {old['metadata']['uid']}", reason="Conflict")
            if pre.get("resourceVersion") and pre["resourceVersion"] != \
                    old["metadata"]["resourceVersion"]:
                raise ApiError(409, "Precondition failed: resourceVersion", reason="Conflict")
            if dry_run:
                return copy.deepcopy(old)
            if old["metadata"].get("finalizers"):
                if old["metadata"].get("deletionTimestamp"):
                    return copy.deepcopy(old)
                new = copy.deepcopy(old)
                new["metadata"]["deletionTimestamp"] = now_rfc3339()
                new["metadata"]["deletionGracePeriodSeconds"] = 0
                self.objects[t.key][(ns, name)] = new
                self._record(t, "MODIFIED", new, old)
                return copy.deepcopy(new)
            del self.objects[t.key][(ns, name)]
            gone = copy.deepcopy(old)
            self._record(t, "DELETED", gone, old)
            if t.kind == "CustomResourceDefinition":
                self.registry.apply_crd(old, deleted=True)
            if t.kind == "Namespace":  # the namespace's objects go with it
                for key, objs in self.objects.items():
                    for (ons, oname) in [k for k in objs if k[0] == name]:
                        o = objs.pop((ons, oname))
                        rt = next(rt for rt in self.registry.types.values() if rt.key == key)
                        self._record(rt, "DELETED", o, o)
            return gone

    def compact(self):
        with self.cond:
            # Move the window past every version handed out so far, so every client that resumes
            # from one of them gets 410, while a fresh list returns a version that still works.
            self.rv += 1
            self.floor = self.rv
            self.events.clear()
            self.drop_gen += 1
            self.cond.notify_all()

    def drop_watches(self):
        with self.cond:
            n = self.watches
            self.drop_gen += 1
            self.cond.notify_all()
            return n

    def take_failure(self, method, path):
        with self.cond:
            self.requests[method] += 1
            for f in self.failures:
                if f["count"] > 0 and f.get("method", method) == method and \
                        re.search(f.get("path", ""), path):
                    f["count"] -= 1
                    return f["code"]
            return None


def matches(obj, label_pred, field_pred):
    if obj is None:
        return False
    return label_pred((obj.get("metadata") or {}).get("labels") or {}) and field_pred(obj)


def fold_string_data(secret):
    """Like the real server: stringData is write-only, merged into data as base64."""
    sd = secret.pop("stringData", None)
    if isinstance(sd, dict) and sd:
        data = secret.setdefault("data", {})
        for k, v in sd.items():
            data[k] = base64.b64encode(str(v).encode()).decode()


def enum_violation(schema, value, path=""):
    """The first value outside an `enum` of a CRD schema, as the real server words it."""
    if not isinstance(schema, dict):
        return None
    allowed = schema.get("enum")
    if allowed is not None and value not in allowed:
        return (f"{path.lstrip('.')}: Unsupported value: {json.dumps(value)}: supported values: "
                + ", ".join(json.dumps(a) for a in allowed))
    props = schema.get("properties")
    if isinstance(value, dict) and isinstance(props, dict):
        for key, sub in props.items():
            if key in value:
                bad = enum_violation(sub, value[key], f"{path}.{key}")
                if bad:
                    return bad
    return None


def prune(schema, value):
    """Drops the fields a structural schema does not declare, as the real server does for
    custom resources (unless x-kubernetes-preserve-unknown-fields)."""
    if not isinstance(schema, dict):
        return
    if isinstance(value, dict):
        props = schema.get("properties")
        extra = schema.get("additionalProperties")
        keep_all = schema.get("x-kubernetes-preserve-unknown-fields") or extra is True
        for key in list(value):
            if isinstance(props, dict) and key in props:
                prune(props[key], value[key])
            elif isinstance(extra, dict):
                prune(extra, value[key])
            elif not keep_all and (props is not None or extra is not None or
                                   schema.get("type") == "object"):
                del value[key]
    elif isinstance(value, list):
        for item in value:
            prune(schema.get("items"), item)


def validate(t, obj):
    if t.schema:
        for key in [k for k in obj if k not in ("apiVersion", "kind", "metadata")]:
            props = t.schema.get("properties") or {}
            if key in props:
                prune(props[key], obj[key])
            elif not t.schema.get("x-kubernetes-preserve-unknown-fields"):
                del obj[key]
    bad = enum_violation(t.schema, obj)
    if bad:
        name = (obj.get("metadata") or {}).get("name", "")
        raise ApiError(422, f'{t.kind}.{t.group} "{name}" is invalid: {bad}', reason="Invalid")


def spec_of(obj):
    return {k: v for k, v in obj.items() if k not in ("metadata", "status")}


def not_found(t, name):
    return ApiError(404, f'{t.plural}.{t.group or "core"} "{name}" not found',
                    details={"name": name, "group": t.group, "kind": t.plural})


def crd_status(crd):
    names = (crd.get("spec") or {}).get("names") or {}
    ts = now_rfc3339()
    return {"acceptedNames": names,
            "conditions": [{"type": "NamesAccepted", "status": "True", "reason": "NoConflicts",
                            "message": "no conflicts found", "lastTransitionTime": ts},
                           {"type": "Established", "status": "True", "reason": "InitialNamesAccepted",
                            "message": "the initial names have been accepted",
                            "lastTransitionTime": ts}],
            "storedVersions": [v.get("name") for v in (crd.get("spec") or {}).get("versions") or []
                               if v.get("storage")]}


# ---------------------------------------------------------------------------------------------
# HTTP

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "podvault-k8s-standin/1"

    # -- plumbing
    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("apiserver: " + (fmt % args) + "\n")

    def send_json(self, code, obj):
        body = (json.dumps(obj) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def read_body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
            return data
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def json_body(self, required=True):
        raw = self.body
        if not raw:
            if required:
                raise ApiError(400, "the request needs a JSON body")
            return None
        if (self.headers.get("Content-Type") or "").startswith("application/vnd.kubernetes.protobuf"):
            return pb_decode(raw)
        try:
            return json.loads(raw)
        except ValueError as ex:
            raise ApiError(400, f"the body is not valid JSON: {ex}")

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_PUT(self):
        self.dispatch("PUT")

    def do_PATCH(self):
        self.dispatch("PATCH")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def dispatch(self, method):
        # The body is read first, whatever the answer: what is left unread would be taken for
        # the next request on this keep-alive connection.
        self.body = self.read_body()
        url = urlsplit(self.path)
        path = url.path.rstrip("/") or "/"
        q = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        store = self.server.store
        try:
            if path.startswith("/admin/"):
                return self.admin(method, path)
            self.user = self.authenticate()
            code = store.take_failure(method, url.path + ("?" + url.query if url.query else ""))
            if code:
                raise ApiError(code, f"injected failure {code} for {method} {url.path}")
            if method == "GET" and self.discovery(path):
                return
            self.resource(method, path, q)
        except ApiError as ex:
            self.send_json(ex.code, ex.status())
        except (BrokenPipeError, ConnectionResetError):
            pass

    def authenticate(self):
        """The service account (namespace, name) a token stands for, or None for anyone on the
        plain listener."""
        auth = self.headers.get("Authorization") or ""
        tokens = self.server.tokens
        if auth.startswith("Bearer ") and auth[7:] in tokens:
            return tokens[auth[7:]]
        if auth or (self.server.tls and tokens):
            raise ApiError(401, "Unauthorized")
        return None

    def authorize(self, method, t, ns, name, sub, q):
        if self.user is None:
            return
        if method == "GET":
            verb = "get" if name else "watch" if q.get("watch") in ("1", "true") else "list"
        else:
            verb = {"POST": "create", "PUT": "update", "PATCH": "patch",
                    "DELETE": "delete" if name else "deletecollection"}[method]
        resource = t.plural + ("/" + sub if sub else "")
        if rbac_allows(self.server.store, self.user, verb, t.group, resource, ns, name):
            return
        who = f"system:serviceaccount:{self.user[0]}:{self.user[1]}"
        where = f' in the namespace "{ns}"' if ns else " at the cluster scope"
        what = f'{resource} "{name}"' if name else resource
        raise ApiError(403, f'{what} is forbidden: User "{who}" cannot {verb} resource '
                       f'"{resource}" in API group "{t.group}"{where}', reason="Forbidden")

    # -- discovery
    def discovery(self, path):
        reg = self.server.registry
        host = f"127.0.0.1:{self.server.server_address[1]}"
        if path == "/version":
            self.send_json(200, {"major": "1", "minor": "32", "gitVersion": "v1.32.0-standin",
                                 "platform": "linux/amd64"})
        elif path in ("/healthz", "/readyz", "/livez"):
            body = b"ok"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif path == "/api":
            self.send_json(200, {"kind": "APIVersions", "versions": ["v1"],
                                 "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                                                 "serverAddress": host}]})
        elif path == "/apis":
            groups = [group_doc(g, vs) for g, vs in reg.groups().items() if g]
            self.send_json(200, {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
        elif path == "/api/v1":
            self.send_json(200, resource_list("v1", reg.in_group_version("", "v1")))
        elif re.fullmatch(r"/apis/[^/]+", path):
            g = path.split("/")[2]
            if g not in reg.groups():
                raise ApiError(404, f"the server could not find the requested resource ({path})")
            self.send_json(200, group_doc(g, reg.groups()[g]))
        elif re.fullmatch(r"/apis/[^/]+/[^/]+", path):
            _, _, g, v = path.split("/")
            types = reg.in_group_version(g, v)
            if not types:
                raise ApiError(404, f"the server could not find the requested resource ({path})")
            self.send_json(200, resource_list(f"{g}/{v}", types))
        elif path == "/openapi/v3":
            paths = {}
            for g, vs in reg.groups().items():
                for v in vs:
                    rel = gv_path(g, v)
                    digest = hashlib.sha256(json.dumps(openapi_doc(reg, g, v)).encode())
                    paths[rel] = {"serverRelativeURL": f"/openapi/v3/{rel}?hash="
                                                       f"{digest.hexdigest()[:16].upper()}"}
            self.send_json(200, {"paths": paths})
        elif path.startswith("/openapi/v3/"):
            parts = path[len("/openapi/v3/"):].split("/")
            g, v = ("", parts[1]) if parts[0] == "api" and len(parts) == 2 else \
                (parts[1], parts[2]) if parts[0] == "apis" and len(parts) == 3 else (None, None)
            if g is None or not reg.in_group_version(g, v):
                raise ApiError(404, f"no OpenAPI document for {path}")
            self.send_json(200, openapi_doc(reg, g, v))
        elif path.startswith("/openapi"):
            raise ApiError(404, "this stand-in serves only the OpenAPI v3 operation index")
        else:
            return False
        return True

    # -- resources
    def parse_resource_path(self, path):
        """Returns (RType, namespace or None, name or None, subresource or "")."""
        parts = path.strip("/").split("/")
        if parts[0] == "api" and len(parts) >= 2:
            group, version, rest = "", parts[1], parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise ApiError(404, f"the server could not find the requested resource ({path})")
        reg = self.server.registry
        ns = None
        if len(rest) >= 3 and rest[0] == "namespaces":
            t = reg.get(group, version, rest[2])
            if t is not None and t.namespaced:
                ns, rest = rest[1], rest[2:]
        if not rest:
            raise ApiError(404, f"the server could not find the requested resource ({path})")
        t = reg.get(group, version, rest[0])
        if t is None:
            raise ApiError(404, f"the server could not find the requested resource ({path})")
        if not t.namespaced and ns is not None:
            raise ApiError(404, f"{t.plural} is not namespaced")
        name = rest[1] if len(rest) >= 2 else None
        sub = rest[2] if len(rest) >= 3 else ""
        if len(rest) > 3 or (sub and not (sub == "status" and t.status_sub)):
            raise ApiError(404, f"the server could not find the requested resource ({path})")
        if t.namespaced and name is not None and ns is None:
            raise ApiError(404, f"{t.plural} is namespaced: use /namespaces/NS/{t.plural}/{name}")
        return t, ns, name, sub

    def resource(self, method, path, q):
        store = self.server.store
        t, ns, name, sub = self.parse_resource_path(path)
        self.authorize(method, t, ns, name, sub, q)
        dry = q.get("dryRun") == "All"
        key_ns = ns if t.namespaced else ""  # cluster-scoped objects are stored under ""
        if method == "GET" and name is None:
            lp = parse_label_selector(q.get("labelSelector"))
            fp = parse_field_selector(q.get("fieldSelector"))
            if q.get("watch") in ("1", "true"):
                return self.watch(t, ns, lp, fp, q)
            items, rv = store.list(t, ns, lp, fp)
            for o in items:
                o.setdefault("apiVersion", t.api_version)
                o.setdefault("kind", t.kind)
            return self.send_json(200, {"kind": t.kind + "List", "apiVersion": t.api_version,
                                        "metadata": {"resourceVersion": str(rv)},
                                        "items": items})
        if method == "GET":
            return self.send_json(200, store.get(t, key_ns, name))
        if method == "POST" and name is None:
            obj = self.json_body()
            check_body(t, ns, obj)
            if t.namespaced and ns is None:
                ns = obj["metadata"].get("namespace")
                if not ns:
                    raise ApiError(400, f"{t.kind} is namespaced: POST it to "
                                   f"/namespaces/NS/{t.plural} or set metadata.namespace")
            return self.send_json(201, store.create(t, ns if t.namespaced else "", obj, dry))
        if method == "PUT" and name is not None:
            obj = self.json_body()
            check_body(t, ns, obj)
            return self.send_json(200, store.update(t, key_ns, name, obj, sub, dry))
        if method == "PATCH" and name is not None:
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            patch = self.json_body()
            if ctype == "application/merge-patch+json":
                fn = merge_patch
            elif ctype == "application/strategic-merge-patch+json":
                # Real servers refuse this for custom resources; kubectl's default then fails, so
                # the stand-in takes it as a merge patch there (lists replaced).
                fn = merge_patch if t.from_crd else strategic_merge_patch
            elif ctype == "application/json-patch+json":
                fn = json_patch
            else:
                raise ApiError(415, f"the body of the request was in an unknown format "
                               f"({ctype}): accepted media types include "
                               "application/json-patch+json, application/merge-patch+json, "
                               "application/strategic-merge-patch+json")
            if isinstance(patch, dict) and (patch.get("metadata") or {}).get("resourceVersion"):
                # A resourceVersion in a patch is a precondition, checked against the current one.
                want = patch["metadata"]["resourceVersion"]

                def mutate(cur, fn=fn, want=want):
                    out = fn(cur, patch)
                    out.setdefault("metadata", {})["resourceVersion"] = want
                    return out
            else:
                def mutate(cur, fn=fn):
                    out = fn(cur, patch)
                    if isinstance(out, dict):
                        out.setdefault("metadata", {}).pop("resourceVersion", None)
                    return out
            return self.send_json(200, store.update(t, key_ns, name, None, sub, dry, mutate))
        if method == "DELETE" and name is not None:
            opts = self.json_body(required=False)
            return self.send_json(200, store.delete(t, key_ns, name, opts, dry))
        if method == "DELETE":
            lp = parse_label_selector(q.get("labelSelector"))
            fp = parse_field_selector(q.get("fieldSelector"))
            items, _ = store.list(t, ns, lp, fp)
            gone = []
            for o in items:
                try:
                    gone.append(store.delete(t, o["metadata"].get("namespace", ""),
                                             o["metadata"]["name"], None, dry))
                except ApiError:
                    pass  # deleted meanwhile
            return self.send_json(200, {"kind": t.kind + "List", "apiVersion": t.api_version,
                                        "metadata": {}, "items": gone})
        raise ApiError(405, f"{method} is not allowed on {path}")

    # -- watch
    def watch(self, t, ns, lp, fp, q):
        store = self.server.store
        try:
            timeout = float(q.get("timeoutSeconds") or 0) or self.server.watch_timeout
        except ValueError:
            raise ApiError(400, "timeoutSeconds must be a number")
        rv_text = q.get("resourceVersion") or ""
        pending = []
        with store.cond:
            if rv_text in ("", "0"):
                # "Any version": the current objects as ADDED events, then the changes after them.
                since = store.rv
                for (ons, _n), o in sorted(store.objects[t.key].items()):
                    if (ns is None or ons == ns) and matches(o, lp, fp):
                        pending.append({"type": "ADDED", "object": copy.deepcopy(o)})
            else:
                try:
                    since = int(rv_text)
                except ValueError:
                    raise ApiError(400, f"invalid resourceVersion {rv_text!r}")
                if since < store.floor:
                    pending.append({"type": "ERROR", "object": ApiError(
                        410, f"too old resource version: {since} ({store.floor})").status()})
            store.watches += 1
            gen = store.drop_gen
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = time.monotonic() + timeout
        try:
            for ev in pending:
                self.send_chunk(ev)
            if pending and pending[-1]["type"] == "ERROR":
                return self.end_chunks()
            while True:
                with store.cond:
                    if store.drop_gen != gen or time.monotonic() >= deadline:
                        return self.end_chunks()
                    batch = self.new_events(store, t, since)
                    if not batch:
                        store.cond.wait(0.5)
                        batch = self.new_events(store, t, since)
                if not batch:
                    if self.client_gone():
                        return
                    continue
                since = batch[-1].rv
                for ev in batch:
                    out = self.filter_event(ev, ns, lp, fp)
                    if out:
                        self.send_chunk(out)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True
        finally:
            with store.cond:
                store.watches -= 1

    @staticmethod
    def new_events(store, t, since):
        """The retained events of type t after `since`, oldest first (lock held)."""
        out = []
        for ev in reversed(store.events):
            if ev.rv <= since:
                break
            if ev.tkey == t.key:
                out.append(ev)
        out.reverse()
        return out

    @staticmethod
    def filter_event(ev, ns, lp, fp):
        """Turns a stored event into what this watcher sees: an object that starts matching the
        selectors is ADDED, one that stops matching is DELETED."""
        ons = ev.obj["metadata"].get("namespace", "")
        if ns is not None and ons != ns:
            return None
        new_ok = ev.type != "DELETED" and matches(ev.obj, lp, fp)
        old_ok = ev.old is not None and matches(ev.old, lp, fp)
        if ev.type == "DELETED":
            return {"type": "DELETED", "object": ev.obj} if old_ok or matches(ev.obj, lp, fp) \
                else None
        if new_ok and old_ok:
            return {"type": "MODIFIED", "object": ev.obj}
        if new_ok:
            return {"type": "ADDED", "object": ev.obj}
        if old_ok:
            return {"type": "DELETED", "object": ev.obj}
        return None

    def client_gone(self):
        try:
            r, _, _ = select.select([self.connection], [], [], 0)
            if r:  # peek at the raw socket, under TLS too: an empty read is the client leaving
                return socket.socket.recv(self.connection, 1, socket.MSG_PEEK) == b""
        except (OSError, ValueError, ssl.SSLError):
            return True
        return False

    def send_chunk(self, ev):
        data = (json.dumps(ev) + "\n").encode()
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def end_chunks(self):
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    # -- test hooks
    def admin(self, method, path):
        store = self.server.store
        if path == "/admin/stats" and method == "GET":
            with store.cond:
                return self.send_json(200, {"rv": store.rv, "floor": store.floor,
                                            "watches": store.watches,
                                            "requests": dict(store.requests),
                                            "failures_left": sum(f["count"]
                                                                 for f in store.failures)})
        if method != "POST":
            raise ApiError(405, "admin hooks take POST")
        if path == "/admin/drop-watches":
            return self.send_json(200, {"dropped": store.drop_watches()})
        if path == "/admin/compact":
            store.compact()
            return self.send_json(200, {"floor": store.floor})
        if path == "/admin/fail":
            f = self.json_body()
            if not isinstance(f, dict) or not isinstance(f.get("code"), int):
                raise ApiError(400, 'body: {"method":"PUT","path":"regex","code":409,"count":1}')
            f.setdefault("count", 1)
            with store.cond:
                store.failures.append(f)
            return self.send_json(200, f)
        if path == "/admin/status-subresource":
            b = self.json_body()
            with store.cond:
                hits = [t for t in store.registry.types.values()
                        if t.plural == b.get("resource") and t.group == b.get("group", "")]
                for t in hits:
                    t.status_sub = bool(b.get("on", True))
            if not hits:
                raise ApiError(404, f"no served resource {b.get('resource')}")
            return self.send_json(200, {"resource": b.get("resource"), "on": hits[0].status_sub})
        raise ApiError(404, f"no admin hook {path}")


def rbac_allows(store, user, verb, group, resource, ns, name):
    """Whether the Roles and ClusterRoles bound to service account `user` allow the request."""
    sa_ns, sa_name = user
    rbac = "rbac.authorization.k8s.io"
    with store.cond:
        bindings = [(b, bns) for (bns, _), b in store.objects[(rbac, "rolebindings")].items()]
        bindings += [(b, None) for b in store.objects[(rbac, "clusterrolebindings")].values()]
        for b, bns in bindings:
            if bns is not None and bns != ns:
                continue  # a RoleBinding grants only in its own namespace
            if not any(s.get("kind") == "ServiceAccount" and s.get("name") == sa_name and
                       s.get("namespace", bns) == sa_ns for s in b.get("subjects") or []):
                continue
            ref = b.get("roleRef") or {}
            if ref.get("kind") == "Role":
                role = store.objects[(rbac, "roles")].get((bns, ref.get("name")))
            else:
                role = store.objects[(rbac, "clusterroles")].get(("", ref.get("name")))
            for rule in (role or {}).get("rules") or []:
                names = rule.get("resourceNames")
                if (any(v in ("*", verb) for v in rule.get("verbs") or []) and
                        any(g in ("*", group) for g in rule.get("apiGroups") or []) and
                        any(r in ("*", resource) for r in rule.get("resources") or []) and
                        (not names or name in names)):
                    return True
    return False


def check_body(t, ns, obj):
    if not isinstance(obj, dict):
        raise ApiError(400, "the body must be a JSON object")
    if obj.get("kind") and obj["kind"] != t.kind:
        raise ApiError(400, f"the body's kind {obj['kind']} does not match the URL's {t.kind}")
    if obj.get("apiVersion") and obj["apiVersion"] != t.api_version:
        raise ApiError(400, f"the body's apiVersion {obj['apiVersion']} does not match the URL's "
                       f"{t.api_version}")
    obj["kind"], obj["apiVersion"] = t.kind, t.api_version
    meta = obj.setdefault("metadata", {})
    if not isinstance(meta, dict):
        raise ApiError(400, "metadata must be an object")
    body_ns = meta.get("namespace")
    if t.namespaced and body_ns and ns and body_ns != ns:
        raise ApiError(400, "the namespace of the provided object does not match the namespace "
                       "sent on the request")


def gv_path(group, version):
    return f"apis/{group}/{version}" if group else f"api/{version}"


def openapi_doc(reg, group, version):
    """Just enough OpenAPI v3 for kubectl: each kind's PATCH operation, tagged with its kind and
    taking the fieldValidation parameter, tells kubectl that the server validates fields itself
    (so kubectl needs no schemas). Without a strategic-merge request body kubectl's apply falls
    back to its compiled-in knowledge of built-in kinds, and to merge patches for the rest."""
    paths = {}
    for t in reg.in_group_version(group, version):
        ns = "/namespaces/{namespace}" if t.namespaced else ""
        op = {"x-kubernetes-group-version-kind": {"group": t.group, "version": t.version,
                                                   "kind": t.kind},
              "parameters": [{"name": "fieldValidation", "in": "query",
                              "schema": {"type": "string"}}],
              "responses": {"200": {"description": "OK"}}}
        paths[f"/{gv_path(group, version)}{ns}/{t.plural}/{{name}}"] = {"patch": op}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes stand-in", "version": "v1.32"},
            "paths": paths}


def group_doc(group, versions):
    vs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": group, "versions": vs,
            "preferredVersion": vs[0]}


def resource_list(gv, types):
    res = []
    for t in sorted(types, key=lambda t: t.plural):
        res.extend(t.discovery())
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": res}


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def make_server(port, registry, store, args, tls):
    srv = Server(("127.0.0.1", port), Handler)
    srv.registry, srv.store, srv.tls = registry, store, tls
    srv.verbose = args.verbose
    srv.watch_timeout = args.watch_timeout
    srv.tokens = {}
    for spec in args.sa_token or []:
        token, _, who = spec.partition("=")
        ns, _, name = who.partition("/")
        srv.tokens[token] = (ns, name)
    if tls:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    return srv


def write_port(path, port):
    with open(path + ".tmp", "w") as f:
        f.write(f"{port}\n")
    os.replace(path + ".tmp", path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port")
    ap.add_argument("--port-file", help="write the port here once listening")
    ap.add_argument("--window", type=int, default=10000, help="events retained for watches")
    ap.add_argument("--watch-timeout", type=float, default=1800.0,
                    help="seconds a watch stays open when the client asks no timeoutSeconds")
    ap.add_argument("--tls-cert", help="also serve HTTPS with this certificate (PEM)")
    ap.add_argument("--tls-key", help="the certificate's private key (PEM)")
    ap.add_argument("--tls-port-file", help="write the HTTPS port (chosen freely) here")
    ap.add_argument("--sa-token", action="append", metavar="TOKEN=NAMESPACE/NAME",
                    help="on the HTTPS listener, TOKEN is this service account (RBAC applies)")
    ap.add_argument("--verbose", action="store_true", help="log every request on stderr")
    args = ap.parse_args()

    registry = Registry()
    store = Store(registry, args.window)
    for ns in ("default", "kube-system"):
        store.create(registry.get("", "v1", "namespaces"), "",
                     {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}, False)
    servers = [make_server(args.port, registry, store, args, False)]
    if args.tls_cert:
        servers.append(make_server(0, registry, store, args, True))
        if args.tls_port_file:
            write_port(args.tls_port_file, servers[1].server_address[1])
    if args.port_file:
        write_port(args.port_file, servers[0].server_address[1])
    for srv in servers:
        print(f"apiserver: listening on {'https' if srv.tls else 'http'}://127.0.0.1:"
              f"{srv.server_address[1]}", flush=True)

    def stop(_sig, _frm):
        for srv in servers:
            threading.Thread(target=srv.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for srv in servers[1:]:
        threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2},
                         daemon=True).start()
    servers[0].serve_forever(poll_interval=0.2)


if __name__ == "__main__":
    main()
