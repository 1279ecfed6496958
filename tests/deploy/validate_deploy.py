#!/usr/bin/env python3
"""Validates deploy/: the Helm chart (deploy/helm/atp-worker) and the image recipe (deploy/docker).

Subcommands (each exits 0 only when every check passed, and prints one line per failure):

  chart       For every value set in tests/deploy/values/: `helm lint --strict` and a render by the
              real Helm engine (Helm v4's Go SDK through helm-python-sdk); every rendered object is
              checked against the strict Kubernetes OpenAPI JSON schemas of several Kubernetes
              versions (kubernetes-validate) and the ServiceMonitor against a schema generated from
              the Prometheus Operator CRD (cloudcoil's models); then the chart's contract: native gRPC
              probes on the worker's health service names, GPU limits, the flagfile against an
              independent oracle, Services/PDB/HPA wiring, TLS and token mounts, security contexts,
              checksum annotations, NOTES.txt and the helm test pod. Every value set in
              tests/deploy/values-invalid/ must be rejected with the message its `# expect:` line names.
  self-test   Breaks copies of the chart in ways the `chart` checks must catch (template syntax,
              schema-invalid fields, wrong probe, missing GPU limit, ...) and fails if one slips by.
  worker      Starts the real atp-worker with every flagfile the chart renders (Secret files mirrored
              with a test certificate and token; listeners moved to free loopback ports): it must
              start, answer SERVING on its health listener for "" and "atp.v1.Worker" (what the
              kubelet probes ask) and on its gRPC port (TLS/mTLS as configured), export the gauges
              the HPA scales on, and exit 0 on SIGTERM.
  docker      hadolint on the Dockerfile, shellcheck on its scripts, and the recipe's contract
              (CUDA 13 devel -> runtime bases, Debian 12 CPU variant, the README's CMake targets,
              non-root user, HEALTHCHECK via `atp health`, build packages in step with tools/setup.sh).

Runs offline once tools/setup.sh has installed the virtualenv (deploy/tools/install-validators.sh).
"""

import argparse
import copy
import functools
import hashlib
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

REPO = pathlib.Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "atp-worker"
VALUES_DIR = REPO / "tests" / "deploy" / "values"
INVALID_DIR = REPO / "tests" / "deploy" / "values-invalid"
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"

RELEASE = "atp"
NAMESPACE = "inference"
# The chart's declared minimum (kubeVersion >= 1.27), a middle one, and the newest schemas shipped.
K8S_VERSIONS = ("1.27", "1.30", "1.37")
LINT_KUBE_VERSION = "v1.30.0"
LIVENESS_SERVICE = ""
READINESS_SERVICE = "atp.v1.Worker"


class Failures:
    """Collects failures; with fail_fast the first one ends the run."""

    def __init__(self, fail_fast=False):
        self.items = []
        self.fail_fast = fail_fast

    def add(self, where, message):
        line = f"FAIL [{where}] {message}"
        self.items.append(line)
        print(line, flush=True)
        if self.fail_fast:
            raise SystemExit(1)

    def check(self, condition, where, message):
        if not condition:
            self.add(where, message)
        return condition


# ------------------------------------------------------------------------------------------------
# YAML with duplicate keys rejected (Kubernetes' decoder rejects them; PyYAML would keep the last).
class StrictLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


# ------------------------------------------------------------------------------------------------
# Schemas.
@functools.lru_cache(maxsize=None)
def _k8s_registry(version):
    import importlib_resources
    import referencing
    root = importlib_resources.files("kubernetes_validate") / "kubernetes-json-schema"
    folder = root / f"v{version}.0-local-strict"
    if not folder.is_dir():
        raise SystemExit(f"kubernetes-validate has no schemas for Kubernetes {version}")
    definitions = json.loads((folder / "_definitions.json").read_text())
    registry = referencing.Resource.from_contents(definitions) @ referencing.Registry()
    return folder, registry


@functools.lru_cache(maxsize=None)
def k8s_validator(version, kind, api_version):
    """Strict (no unknown fields) validator of one kind, or None when the version has no schema."""
    import jsonschema
    import referencing
    folder, registry = _k8s_registry(version)
    group_version = re.sub(r"^([^./]*)(?:\.[^/]*)?/", r"\1-", api_version)
    path = folder / f"{kind.lower()}-{group_version}.json"
    if not path.is_file():
        return None
    schema = json.loads(path.read_text())
    registry = referencing.Resource.from_contents(schema) @ registry
    return jsonschema.Draft202012Validator(schema, registry=registry)


def _forbid_unknown_properties(node):
    if isinstance(node, dict):
        if "properties" in node and "additionalProperties" not in node:
            node["additionalProperties"] = False
        for value in node.values():
            _forbid_unknown_properties(value)
    elif isinstance(node, list):
        for value in node:
            _forbid_unknown_properties(value)


@functools.lru_cache(maxsize=None)
def service_monitor_validator():
    """ServiceMonitor (monitoring.coreos.com/v1): JSON schema of the model generated from the
    Prometheus Operator CRD, made strict like the Kubernetes ones."""
    import jsonschema
    from cloudcoil.models.prometheus_operator import v1 as prometheus_v1
    schema = prometheus_v1.ServiceMonitor.model_json_schema(by_alias=True, mode="validation")
    _forbid_unknown_properties(schema)
    schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata"})
    return jsonschema.Draft202012Validator(schema)


def validate_object(obj, where, failures):
    kind, api_version = obj.get("kind"), obj.get("apiVersion")
    if not failures.check(isinstance(kind, str) and isinstance(api_version, str), where,
                          "object without kind/apiVersion"):
        return
    name = f"{kind}/{obj.get('metadata', {}).get('name')}"
    if api_version == "monitoring.coreos.com/v1" and kind == "ServiceMonitor":
        validators = [("ServiceMonitor CRD", service_monitor_validator())]
    else:
        validators = []
        for version in K8S_VERSIONS:
            validator = k8s_validator(version, kind, api_version)
            if validator is None:
                failures.add(where, f"{name}: Kubernetes {version} has no {api_version} {kind}")
                continue
            validators.append((f"Kubernetes {version}", validator))
    for label, validator in validators:
        for error in sorted(validator.iter_errors(obj), key=lambda e: list(e.path)):
            path = ".".join(str(p) for p in error.path) or "(root)"
            failures.add(where, f"{name} invalid against {label} schema at {path}: {error.message}")


# ------------------------------------------------------------------------------------------------
# Independent oracle of the chart's value semantics.
def deep_merge(base, override):
    """Maps merge key by key and the override always wins (also with false/0/""/null)."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def pool_keys(chart_dir):
    schema = json.loads((chart_dir / "values.schema.json").read_text())
    keys = set(schema["properties"]["pools"]["items"]["properties"]) - {"name"}
    return keys


def effective_pools(values, chart_dir):
    keys = pool_keys(chart_dir)
    defaults = {k: values[k] for k in keys if k in values}
    return [deep_merge(defaults, pool) for pool in values["pools"]]


def fullname(values):
    if values.get("fullnameOverride"):
        return values["fullnameOverride"][:63].rstrip("-")
    name = values.get("nameOverride") or "atp-worker"
    if name in RELEASE:
        return RELEASE[:63].rstrip("-")
    return f"{RELEASE}-{name}"[:63].rstrip("-")


def pool_fullname(values, pool):
    return f"{fullname(values)[:42].rstrip('-')}-{pool['name']}"[:63].rstrip("-")


def expected_flags(values, pool):
    worker, ports, host = pool["worker"], values["ports"], values["listenHost"]
    gpu = pool["gpu"]["enabled"]
    flags = {
        "--listen": f"{host}:{ports['grpc']}",
        "--health-listen": f"{host}:{ports['health']}",
        "--metrics-listen": f"{host}:{ports['metrics']}",
        "--backend": worker["backend"] if gpu else "cpu",
        "--log-format": worker["logFormat"],
        "--log-level": worker["logLevel"],
        "--chunk-bytes": str(worker["chunkBytes"]),
        "--drain-timeout": f"{worker['drainTimeoutSeconds']}s",
    }
    if gpu:
        flags["--device"] = str(worker["device"])
    optional = {"threads": "--threads", "maxTensorBytes": "--max-tensor-bytes",
                "maxSequenceLength": "--max-sequence-length", "maxRank": "--max-rank",
                "maxInflightRequests": "--max-inflight-requests",
                "maxInflightPerStream": "--max-inflight-per-stream",
                "maxQueueDepth": "--max-queue-depth", "maxInflightBytes": "--max-inflight-bytes",
                "maxResidentLayerBytes": "--max-resident-layer-bytes"}
    for key, flag in optional.items():
        if worker.get(key) is not None:
            flags[flag] = str(worker[key])
    tls = values["tls"]
    if tls["enabled"]:
        flags["--tls-cert"] = f"/etc/atp/tls/{tls['certKey']}"
        flags["--tls-key"] = f"/etc/atp/tls/{tls['keyKey']}"
        if tls["clientAuth"]["enabled"]:
            flags["--tls-client-ca"] = f"/etc/atp/client-ca/{tls['clientAuth']['caKey']}"
    if values["auth"]["enabled"]:
        flags["--token-file"] = f"/etc/atp/auth/{values['auth']['tokenKey']}"
    return flags


def parse_flagfile(text):
    flags = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, sep, value = line.partition("=")
        if not sep or not name.startswith("--") or name in flags:
            return None, f"malformed or repeated flagfile line {line!r}"
        flags[name] = value
    return flags, None


# ------------------------------------------------------------------------------------------------
# The chart.
def render(chart, values):
    """Returns ({template: [objects]}, notes) or raises the Helm error."""
    manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects, notes = {}, ""
    for template, text in manifests.items():
        if template.endswith("NOTES.txt"):
            notes = text
            continue
        docs = [d for d in yaml.load_all(text, Loader=StrictLoader) if d is not None]
        objects[template] = docs
    return objects, notes


def labels_match(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def check_values_documented(chart_dir, failures):
    """Every key of values.yaml carries a `# --` comment, or is a map whose keys all do; every
    schema property has a description."""
    lines = (chart_dir / "values.yaml").read_text().splitlines()
    documented, keys = {}, []
    stack = []  # (indent, key path)
    comment_above = False
    for line in lines:
        stripped = line.strip()
        if stripped.startswith("# --"):
            comment_above = True
            continue
        if stripped.startswith("#"):
            continue
        match = re.match(r"^( *)([A-Za-z0-9_]+):", line)
        if not match:
            if stripped and not stripped.startswith("-"):
                comment_above = False
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = ".".join([p for _, p in stack] + [match.group(2)])
        stack.append((indent, match.group(2)))
        keys.append(path)
        documented[path] = comment_above
        comment_above = False
    def is_documented(path):
        parts = path.split(".")
        if any(documented.get(".".join(parts[:i])) for i in range(1, len(parts) + 1)):
            return True  # its own comment, or an ancestor's: the whole default map is documented
        children = [k for k in keys if k.rsplit(".", 1)[0] == path and "." in k]
        return bool(children) and all(is_documented(c) for c in children)

    for path in keys:
        if not is_documented(path):
            failures.add("values.yaml", f"value {path} has no `# --` documentation comment")

    def walk(node, where):
        if not isinstance(node, dict):
            return
        for name, sub in node.get("properties", {}).items():
            if isinstance(sub, dict) and "description" not in sub and "$ref" not in sub:
                failures.add("values.schema.json", f"property {where}{name} has no description")
            walk(sub, f"{where}{name}.")
        for sub in node.get("definitions", {}).values():
            walk(sub, where)
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{where}[].")
    walk(json.loads((chart_dir / "values.schema.json").read_text()), "")


def check_pool_keys_in_sync(chart_dir, failures):
    helpers = (chart_dir / "templates" / "_helpers.tpl").read_text()
    match = re.search(r'define "atp-worker\.poolKeys" -}}\s*\n(.*?)\n', helpers)
    if not failures.check(match, "_helpers.tpl", "no atp-worker.poolKeys definition"):
        return
    in_helpers = set(match.group(1).split())
    in_schema = pool_keys(chart_dir)
    failures.check(in_helpers == in_schema, "_helpers.tpl",
                   f"poolKeys {sorted(in_helpers)} differ from the schema's pool entry "
                   f"{sorted(in_schema)}")


def check_rendered(set_name, values, objects, notes, chart_dir, failures):
    where = set_name
    everything = [o for docs in objects.values() for o in docs]
    by_kind = {}
    for obj in everything:
        by_kind.setdefault(obj["kind"], []).append(obj)
        validate_object(obj, where, failures)
        meta = obj.get("metadata", {})
        labels = meta.get("labels", {})
        failures.check(labels.get("app.kubernetes.io/instance") == RELEASE and
                       labels.get("app.kubernetes.io/managed-by") == "Helm", where,
                       f"{obj['kind']}/{meta.get('name')} lacks the standard labels")
        expected_ns = NAMESPACE
        if obj["kind"] == "ServiceMonitor" and values["metrics"]["serviceMonitor"]["namespace"]:
            expected_ns = values["metrics"]["serviceMonitor"]["namespace"]
        failures.check(meta.get("namespace") == expected_ns, where,
                       f"{obj['kind']}/{meta.get('name')} namespace {meta.get('namespace')!r}, "
                       f"want {expected_ns!r}")

    pools = effective_pools(values, chart_dir)
    name = fullname(values)
    ports = values["ports"]
    deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
    configmaps = {c["metadata"]["name"]: c for c in by_kind.get("ConfigMap", [])}
    services = {s["metadata"]["name"]: s for s in by_kind.get("Service", [])}
    failures.check(len(deployments) == len(pools), where,
                   f"{len(deployments)} Deployments for {len(pools)} pools")

    for pool in pools:
        pname = pool_fullname(values, pool)
        pw = f"{where}/pool {pool['name']}"
        deployment = deployments.get(pname)
        if not failures.check(deployment, pw, f"no Deployment {pname}"):
            continue
        spec = deployment["spec"]
        pod = spec["template"]["spec"]
        pod_labels = spec["template"]["metadata"]["labels"]
        annotations = spec["template"]["metadata"].get("annotations", {})
        failures.check(labels_match(spec["selector"]["matchLabels"], pod_labels), pw,
                       "Deployment selector does not match its pod labels")
        failures.check(pod_labels.get("atp/pool") == pool["name"], pw, "pod lacks its pool label")
        containers = pod["containers"]
        if not failures.check(len(containers) == 1, pw, f"{len(containers)} containers, want 1"):
            continue
        c = containers[0]
        # Replicas and autoscaling.
        if pool["autoscaling"]["enabled"]:
            failures.check("replicas" not in spec, pw, "replicas set although an HPA scales the pool")
        else:
            failures.check(spec.get("replicas") == pool["replicaCount"], pw,
                           f"replicas {spec.get('replicas')}, want {pool['replicaCount']}")
        # Flagfile (ConfigMap) against the oracle, and the checksum annotation over it.
        cm = configmaps.get(pname)
        if failures.check(cm and "worker.flags" in cm.get("data", {}), pw,
                          f"no ConfigMap {pname} with worker.flags"):
            text = cm["data"]["worker.flags"]
            flags, error = parse_flagfile(text)
            if failures.check(flags is not None, pw, f"flagfile: {error}"):
                want = expected_flags(values, pool)
                failures.check(flags == want, pw, f"flagfile {flags} differs from the expected {want}")
            want_sum = hashlib.sha256(text.rstrip("\n").encode()).hexdigest()
            failures.check(annotations.get("checksum/config") == want_sum, pw,
                           "checksum/config is not the sha256 of the mounted flagfile")
        failures.check(re.fullmatch(r"[0-9a-f]{64}", annotations.get("checksum/secrets", "")), pw,
                       "no checksum/secrets annotation")
        failures.check(c.get("args", [None])[0] == "--flagfile=/etc/atp/config/worker.flags", pw,
                       f"args {c.get('args')} do not start with the flagfile")
        for extra in pool["worker"].get("extraArgs", []):
            failures.check(extra in c["args"], pw, f"extra arg {extra} missing")
        mounts = {m["name"]: m for m in c.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        for mount in mounts:
            failures.check(mount in volumes, pw, f"volumeMount {mount} has no volume")
        failures.check(mounts.get("config", {}).get("mountPath") == "/etc/atp/config" and
                       volumes.get("config", {}).get("configMap", {}).get("name") == pname, pw,
                       "the flagfile ConfigMap is not mounted at /etc/atp/config")
        # Ports and native gRPC probes on the worker's health service names.
        cports = {p["name"]: p["containerPort"] for p in c["ports"]}
        failures.check(cports == {"grpc": ports["grpc"], "grpc-health": ports["health"],
                                  "http-metrics": ports["metrics"]}, pw, f"container ports {cports}")
        for probe_name, service in (("startupProbe", LIVENESS_SERVICE),
                                    ("livenessProbe", LIVENESS_SERVICE),
                                    ("readinessProbe", READINESS_SERVICE)):
            probe = c.get(probe_name)
            if not failures.check(probe, pw, f"no {probe_name}"):
                continue
            handlers = set(probe) & {"grpc", "httpGet", "tcpSocket", "exec"}
            failures.check(handlers == {"grpc"}, pw, f"{probe_name} uses {sorted(handlers)}, want grpc")
            grpc = probe.get("grpc", {})
            failures.check(grpc.get("port") == ports["health"], pw,
                           f"{probe_name} port {grpc.get('port')}, want the health port {ports['health']}")
            failures.check(grpc.get("service") == service, pw,
                           f"{probe_name} service {grpc.get('service')!r}, want {service!r}")
        # GPU.
        resources = c.get("resources", {})
        limits, requests = resources.get("limits", {}), resources.get("requests", {})
        gpu = pool["gpu"]
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        image = c["image"]
        tag = str(pool["image"].get("tag") or "0.1.0")
        if gpu["enabled"]:
            failures.check(limits.get(gpu["resourceName"]) == gpu["count"], pw,
                           f"limit {gpu['resourceName']} is {limits.get(gpu['resourceName'])}, "
                           f"want {gpu['count']}")
            failures.check(image == f"{pool['image']['repository']}:{tag}", pw, f"image {image}")
            if gpu["tolerateGpuTaint"]:
                failures.check(any(t.get("key") == "nvidia.com/gpu" for t in pod.get("tolerations", [])),
                               pw, "no toleration of the nvidia.com/gpu taint")
        else:
            gpu_keys = [k for k in list(limits) + list(requests) if "gpu" in k]
            failures.check(not gpu_keys, pw, f"GPU resources {gpu_keys} on a pool without GPU")
            failures.check(env.get("NVIDIA_VISIBLE_DEVICES") == "void", pw,
                           "GPUs of the node are not hidden (NVIDIA_VISIBLE_DEVICES=void)")
            failures.check(image == f"{pool['image']['repository']}:{tag}{pool['image']['cpuTagSuffix']}",
                           pw, f"image {image} is not the CPU variant")
        for key, value in pool["nodeSelector"].items():
            failures.check(pod.get("nodeSelector", {}).get(key) == value, pw, f"nodeSelector {key} missing")
        for toleration in pool["tolerations"]:
            failures.check(toleration in pod.get("tolerations", []), pw, f"toleration {toleration} missing")
        failures.check(pod.get("runtimeClassName") == (pool["runtimeClassName"] or None), pw,
                       f"runtimeClassName {pod.get('runtimeClassName')!r}")
        for constraint in pod.get("topologySpreadConstraints", []):
            failures.check(labels_match(constraint.get("labelSelector", {}).get("matchLabels"), pod_labels),
                           pw, "a topology spread constraint does not select the pool's pods")
        failures.check(len(pod.get("topologySpreadConstraints", [])) == len(pool["topologySpreadConstraints"]),
                       pw, "topologySpreadConstraints missing")
        # Termination: grace above preStop + drain.
        drain = pool["worker"]["drainTimeoutSeconds"]
        pre_stop = values["preStopSleepSeconds"]
        grace = pod.get("terminationGracePeriodSeconds", 30)
        failures.check(grace > drain + pre_stop, pw,
                       f"terminationGracePeriodSeconds {grace} not above preStop {pre_stop} + drain {drain}")
        if pre_stop:
            failures.check(c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
                           == ["sleep", str(pre_stop)], pw, "no preStop sleep")
        else:
            failures.check("lifecycle" not in c, pw, "preStop hook although preStopSleepSeconds is 0")
        # Security contexts.
        psc, csc = pod.get("securityContext", {}), c.get("securityContext", {})
        failures.check(psc.get("runAsNonRoot") is True and psc.get("runAsUser", 0) > 0, pw,
                       "pod may run as root")
        failures.check(psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", pw,
                       "pod seccompProfile is not RuntimeDefault")
        failures.check(csc.get("readOnlyRootFilesystem") is True, pw, "root filesystem writable")
        failures.check(csc.get("allowPrivilegeEscalation") is False, pw, "privilege escalation allowed")
        failures.check("ALL" in csc.get("capabilities", {}).get("drop", []), pw, "capabilities not dropped")
        failures.check(mounts.get("tmp", {}).get("mountPath") == "/tmp" and "emptyDir" in volumes.get("tmp", {}),
                       pw, "no writable /tmp emptyDir")
        failures.check(pod.get("automountServiceAccountToken") is False, pw, "API token mounted")
        failures.check(pod.get("enableServiceLinks") is False, pw, "Service links injected into the environment")
        # TLS and token from Secrets.
        tls, auth = values["tls"], values["auth"]

        def secret_mount(volume, secret, path, keys):
            vol = volumes.get(volume, {}).get("secret", {})
            failures.check(vol.get("secretName") == secret, pw,
                           f"volume {volume} is Secret {vol.get('secretName')!r}, want {secret!r}")
            failures.check(mounts.get(volume, {}).get("mountPath") == path, pw,
                           f"Secret {secret} not mounted at {path}")
            failures.check({i["key"] for i in vol.get("items", [])} == set(keys), pw,
                           f"Secret {secret} items {vol.get('items')}, want keys {keys}")
            failures.check("subPath" not in mounts.get(volume, {}), pw,
                           f"Secret {secret} mounted with subPath (never refreshed on rotation)")
        if tls["enabled"]:
            secret_mount("tls", tls["existingSecret"], "/etc/atp/tls", [tls["certKey"], tls["keyKey"]])
            if tls["clientAuth"]["enabled"]:
                secret_mount("client-ca", tls["clientAuth"]["existingSecret"] or tls["existingSecret"],
                             "/etc/atp/client-ca", [tls["clientAuth"]["caKey"]])
        else:
            failures.check("tls" not in volumes and "client-ca" not in volumes, pw, "TLS volumes with TLS off")
        if auth["enabled"]:
            secret_mount("auth", auth["existingSecret"], "/etc/atp/auth", [auth["tokenKey"]])
        else:
            failures.check("auth" not in volumes, pw, "token volume with auth off")
        # PDB and HPA of the pool.
        pdbs = [p for p in by_kind.get("PodDisruptionBudget", []) if p["metadata"]["name"] == pname]
        if pool["podDisruptionBudget"]["enabled"]:
            if failures.check(len(pdbs) == 1, pw, "no PodDisruptionBudget"):
                pdb = pdbs[0]["spec"]
                failures.check(pdb["selector"]["matchLabels"] == spec["selector"]["matchLabels"], pw,
                               "PodDisruptionBudget selects other pods than the Deployment")
                if pool["podDisruptionBudget"].get("minAvailable") is not None:
                    failures.check(pdb.get("minAvailable") == pool["podDisruptionBudget"]["minAvailable"],
                                   pw, f"PDB minAvailable {pdb.get('minAvailable')}")
                else:
                    failures.check(pdb.get("maxUnavailable") == pool["podDisruptionBudget"]["maxUnavailable"],
                                   pw, f"PDB maxUnavailable {pdb.get('maxUnavailable')}")
        else:
            failures.check(not pdbs, pw, "PodDisruptionBudget although disabled")
        hpas = [h for h in by_kind.get("HorizontalPodAutoscaler", []) if h["metadata"]["name"] == pname]
        autoscaling = pool["autoscaling"]
        if autoscaling["enabled"]:
            if failures.check(len(hpas) == 1, pw, "no HorizontalPodAutoscaler"):
                hpa = hpas[0]
                failures.check(hpa["apiVersion"] == "autoscaling/v2", pw, "HPA is not autoscaling/v2")
                target = hpa["spec"]["scaleTargetRef"]
                failures.check(target == {"apiVersion": "apps/v1", "kind": "Deployment", "name": pname},
                               pw, f"HPA targets {target}")
                failures.check((hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) ==
                               (autoscaling["minReplicas"], autoscaling["maxReplicas"]), pw, "HPA bounds")
                got = {(m["pods"]["metric"]["name"], m["pods"]["target"]["averageValue"])
                       for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
                want = {(m["metricName"], str(m["targetAverageValue"]))
                        for m in (autoscaling["inflightRequests"], autoscaling["queueDepth"]) if m["enabled"]}
                failures.check(got == want and len(hpa["spec"]["metrics"]) == len(want), pw,
                               f"HPA metrics {sorted(got)}, want {sorted(want)}")
        else:
            failures.check(not hpas, pw, "HorizontalPodAutoscaler although disabled")

    # Release-wide: Services, ServiceMonitor, NOTES, helm test.
    all_pod_labels = [d["spec"]["template"]["metadata"]["labels"] for d in deployments.values()]
    all_container_ports = set()
    for d in deployments.values():
        for c in d["spec"]["template"]["spec"]["containers"]:
            all_container_ports |= {p["name"] for p in c.get("ports", [])}
    for sname, svc in services.items():
        selector = svc["spec"].get("selector", {})
        selected = [labels for labels in all_pod_labels if labels_match(selector, labels)]
        failures.check(len(selected) == len(all_pod_labels) and selected, where,
                       f"Service {sname} selects {len(selected)} of {len(all_pod_labels)} pools")
        for port in svc["spec"]["ports"]:
            failures.check(port.get("targetPort") in all_container_ports, where,
                           f"Service {sname} targets unknown port {port.get('targetPort')}")
    headless = services.get(f"{name}-headless")
    if failures.check(headless, where, f"no headless Service {name}-headless"):
        hs = headless["spec"]
        failures.check(hs.get("clusterIP") == "None", where, "headless Service has a cluster IP")
        failures.check(hs.get("publishNotReadyAddresses") is False, where,
                       "headless Service publishes not-ready workers")
        failures.check([(p["name"], p["port"]) for p in hs["ports"]] == [("grpc", ports["grpc"])], where,
                       f"headless Service ports {hs['ports']}")
    lb = services.get(name)
    if failures.check(lb, where, f"no load-balanced Service {name}"):
        failures.check(lb["spec"]["type"] == values["service"]["type"] and lb["spec"].get("clusterIP") != "None",
                       where, "load-balanced Service has no virtual IP")
    metrics_svc = services.get(f"{name}-metrics")
    if values["metrics"]["service"]["enabled"]:
        failures.check(metrics_svc and metrics_svc["spec"]["ports"][0]["port"] == ports["metrics"], where,
                       "no metrics Service on the metrics port")
    monitors = by_kind.get("ServiceMonitor", [])
    if values["metrics"]["serviceMonitor"]["enabled"]:
        if failures.check(len(monitors) == 1 and metrics_svc, where, "no ServiceMonitor"):
            sm = monitors[0]["spec"]
            failures.check(labels_match(sm["selector"]["matchLabels"], metrics_svc["metadata"]["labels"]) and
                           not any(labels_match(sm["selector"]["matchLabels"], s["metadata"]["labels"])
                                   for n, s in services.items() if n != f"{name}-metrics"), where,
                           "ServiceMonitor does not select exactly the metrics Service")
            failures.check(NAMESPACE in sm.get("namespaceSelector", {}).get("matchNames", []), where,
                           "ServiceMonitor does not look in the release namespace")
            svc_ports = {p["name"] for p in metrics_svc["spec"]["ports"]}
            failures.check(all(e.get("port") in svc_ports for e in sm["endpoints"]), where,
                           "ServiceMonitor endpoint names no port of the metrics Service")
            for label, value in values["metrics"]["serviceMonitor"]["labels"].items():
                failures.check(monitors[0]["metadata"]["labels"].get(label) == value, where,
                               f"ServiceMonitor lacks label {label}")
    else:
        failures.check(not monitors, where, "ServiceMonitor although disabled")
    target = f"dns:///{name}-headless.{NAMESPACE}.svc.cluster.local:{ports['grpc']}"
    failures.check(target in notes, where, f"NOTES.txt does not print the client target {target}")
    failures.check("round_robin" in notes, where, "NOTES.txt does not name round_robin")
    # helm test pod: `atp health` against the Service.
    tests = [o for o in by_kind.get("Pod", []) if o["metadata"].get("annotations", {}).get("helm.sh/hook") == "test"]
    if failures.check(len(tests) == 1, where, f"{len(tests)} helm test pods, want 1"):
        test = tests[0]["spec"]
        command = test["containers"][0]["command"]
        tls = values["tls"]
        mtls = tls["enabled"] and tls["clientAuth"]["enabled"]
        port = ports["health"] if mtls else ports["grpc"]
        want = ["atp", "health", "--target", f"{name}.{NAMESPACE}.svc.cluster.local:{port}"]
        if tls["enabled"] and not mtls and tls["caKey"]:
            want += ["--tls-ca", f"/etc/atp/tls/{tls['caKey']}"]
        if values["auth"]["enabled"]:
            want += ["--token-file", f"/etc/atp/auth/{values['auth']['tokenKey']}"]
        failures.check(command == want, where, f"helm test runs {command}, want {want}")
        failures.check(lb and port in [p["port"] for p in lb["spec"]["ports"]], where,
                       f"helm test port {port} is not on Service {name}")
        failures.check(test.get("restartPolicy") == "Never", where, "helm test pod restarts")
        tc = test["containers"][0]
        failures.check(tc.get("securityContext", {}).get("readOnlyRootFilesystem") is True and
                       test.get("securityContext", {}).get("runAsNonRoot") is True, where,
                       "helm test pod is not locked down")
        tmounts = {m["name"] for m in tc.get("volumeMounts", [])}
        tvolumes = {v["name"] for v in test.get("volumes", [])}
        failures.check(tmounts == tvolumes, where, f"helm test mounts {tmounts} vs volumes {tvolumes}")


def run_chart(args):
    import helm_python as helm
    failures = Failures(args.fail_fast)
    chart_dir = pathlib.Path(args.chart).resolve()
    print(f"chart: {chart_dir} with Helm SDK {helm.helm_sdk_version()} (helm-c {helm.helm_c_version()}); "
          f"Kubernetes schemas {', '.join(K8S_VERSIONS)}")
    check_values_documented(chart_dir, failures)
    check_pool_keys_in_sync(chart_dir, failures)
    value_sets = sorted(VALUES_DIR.glob("*.yaml"))
    if not value_sets:
        failures.add("chart", f"no value sets in {VALUES_DIR}")
    counted = 0
    try:
        chart = helm.Chart.load(chart_dir)
    except helm.HelmError as error:
        failures.add("chart", f"Helm cannot load the chart: {error}")
        return finish(failures, "no chart")
    with chart:
        for path in value_sets:
            set_name = path.stem
            values = yaml.load(path.read_text(), Loader=StrictLoader) or {}
            report = helm.lint(chart_dir, values, strict=True, namespace=NAMESPACE,
                               kube_version=LINT_KUBE_VERSION)
            for message in report["messages"]:
                if message["severity"] >= 2:
                    failures.add(f"{set_name}/lint", f"{message['path']}: {message['error'].strip()}")
            for error in report["errors"]:
                if not any(error == m["error"] for m in report["messages"]):
                    failures.add(f"{set_name}/lint", error.strip())
            try:
                objects, notes = render(chart, values)
            except (helm.HelmError, yaml.YAMLError) as error:
                failures.add(set_name, f"render failed: {str(error).strip()}")
                continue
            merged = chart.merge_values(values)
            before = len(failures.items)
            check_rendered(set_name, merged, objects, notes, chart_dir, failures)
            n = sum(len(d) for d in objects.values())
            counted += n
            status = "ok" if len(failures.items) == before else "FAILED"
            kinds = sorted({o["kind"] for docs in objects.values() for o in docs})
            print(f"  {set_name}: {n} objects ({', '.join(kinds)}) {status}")
        for path in sorted(INVALID_DIR.glob("*.yaml")):
            text = path.read_text()
            match = re.search(r"^# expect: (.+)$", text, re.M)
            if not failures.check(match, path.name, "no `# expect:` line"):
                continue
            values = yaml.load(text, Loader=StrictLoader) or {}
            try:
                render(chart, values)
                failures.add(f"invalid/{path.stem}", "rendered, but these values must be rejected")
            except helm.HelmError as error:
                failures.check(match.group(1) in str(error), f"invalid/{path.stem}",
                               f"rejected with {str(error).strip()!r}, want a message with {match.group(1)!r}")
        print(f"  {len(list(INVALID_DIR.glob('*.yaml')))} invalid value sets rejected as expected"
              if not any("invalid/" in f for f in failures.items) else "  invalid value sets: FAILED")
    return finish(failures, f"{len(value_sets)} value sets, {counted} rendered objects")


def finish(failures, summary):
    if failures.items:
        print(f"{len(failures.items)} deploy check(s) failed")
        return 1
    print(f"all deploy checks passed ({summary})")
    return 0


# ------------------------------------------------------------------------------------------------
# Self-test: the checks above must catch a broken chart.
MUTATIONS = [
    ("template syntax error", "templates/service.yaml", "apiVersion: v1", "{{ end }}\napiVersion: v1",
     "parse error"),
    ("unknown field in the Deployment", "templates/deployment.yaml", "terminationGracePeriodSeconds:",
     "terminationGracePeriodSecond:", "invalid against Kubernetes"),
    ("wrong type in the Deployment", "templates/deployment.yaml",
     "replicas: {{ $pool.replicaCount | int }}", "replicas: \"{{ $pool.replicaCount | int }}\"",
     "invalid against Kubernetes"),
    ("unknown field in the ServiceMonitor", "templates/servicemonitor.yaml", "scrapeTimeout:",
     "scrapeTimout:", "invalid against ServiceMonitor CRD"),
    ("readiness probe on the wrong health service", "templates/_helpers.tpl",
     'readinessService" -}}atp.v1.Worker', 'readinessService" -}}atp.v1.Workers', "readinessProbe service"),
    ("probe over TCP instead of gRPC", "templates/deployment.yaml",
     "          livenessProbe:\n            grpc:\n              port: {{ $root.Values.ports.health | int }}\n"
     "              service: {{ include \"atp-worker.livenessService\" $root | quote }}",
     "          livenessProbe:\n            tcpSocket:\n              port: {{ $root.Values.ports.health | int }}",
     "livenessProbe uses"),
    ("GPU limit dropped", "templates/deployment.yaml",
     "{{- $_ := set $limits $pool.gpu.resourceName ($pool.gpu.count | int) }}", "", "limit nvidia.com/gpu"),
    ("headless Service publishing not-ready workers", "templates/service.yaml",
     "publishNotReadyAddresses: false", "publishNotReadyAddresses: true", "publishes not-ready"),
    ("grace period below the drain", "templates/deployment.yaml",
     "terminationGracePeriodSeconds: {{ $grace }}", "terminationGracePeriodSeconds: 10",
     "not above preStop"),
    ("duplicate label key", "templates/deployment.yaml",
     '{{- include "atp-worker.metaLabels" $root | nindent 8 }}', '{{- include "atp-worker.labels" $root | nindent 8 }}',
     "duplicate key"),
    ("undocumented value", "values.yaml", "nameOverride: \"\"\n", "nameOverride: \"\"\nsurprise: 1\n",
     "no `# --` documentation"),
    ("value missing from the schema", "values.schema.json", '"nameOverride": {', '"nameOverrideX": {',
     "nameOverride"),
    ("invalid chart version (lint)", "Chart.yaml", "version: 0.1.0", "version: zero", "is invalid"),
]

# The same for the image recipe: (description, file in deploy/docker, old, new, expected message).
DOCKER_MUTATIONS = [
    ("image runs as root", "Dockerfile", "USER 10001:10001", "USER root", "runs as root"),
    ("CLI not built", "Dockerfile", "--target atp-worker atp", "--target atp-worker", "README's targets"),
    ("no health check", "Dockerfile", "exec atp health --target", "exec true --target", "HEALTHCHECK"),
    ("apt without --no-install-recommends (hadolint DL3015)", "Dockerfile",
     "apt-get install -y --no-install-recommends", "apt-get install -y", "DL3015"),
    ("build package dropped", "Dockerfile", " prometheus-cpp-dev ", " ", "prometheus-cpp-dev"),
    ("unquoted variable in a script (shellcheck)", "collect-runtime.sh", 'mkdir -p "$out/bin" "$out/lib"',
     "mkdir -p $out/bin $out/lib", "SC2086"),
]


# Mutations only the real worker can catch (run when self-test gets --worker).
WORKER_MUTATIONS = [
    ("flag the worker does not know", "templates/_helpers.tpl", "--chunk-bytes=", "--chunk-size=",
     "unknown flag --chunk-size"),
    ("HPA gauge the worker does not export", "values.yaml", "metricName: atp_queue_depth",
     "metricName: atp_queue_len", "/metrics has no atp_queue_len"),
]


def _mutated_run(description, source_dir, rel, old, new, expect, command, tmp):
    """Copies source_dir, applies one mutation, runs a subcommand on the copy; True if caught."""
    copy_dir = pathlib.Path(tmp) / source_dir.name
    shutil.rmtree(copy_dir, ignore_errors=True)
    shutil.copytree(source_dir, copy_dir)
    target = copy_dir / rel
    text = target.read_text()
    if old not in text:
        print(f"FAIL [self-test] mutation {description!r}: {old!r} not found in {rel} (update the mutations)")
        return False
    target.write_text(text.replace(old, new, 1))
    result = subprocess.run([sys.executable, __file__, *command(copy_dir)],
                            capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    if result.returncode != 0 and expect in output:
        first = next((l for l in output.splitlines() if l.startswith("FAIL")), "")
        print(f"  caught: {description}: {first[:150]}")
        return True
    print(f"FAIL [self-test] {description!r} was not caught (rc {result.returncode}, "
          f"want a failure mentioning {expect!r}):\n{output[-2000:]}")
    return False


def run_self_test(args):
    chart_dir = pathlib.Path(args.chart).resolve()
    docker_dir = pathlib.Path(args.dockerfile).resolve().parent
    dockerfile_name = pathlib.Path(args.dockerfile).name
    worker_mutations = WORKER_MUTATIONS if args.worker else []
    escaped, total = 0, len(MUTATIONS) + len(DOCKER_MUTATIONS) + len(worker_mutations)
    with tempfile.TemporaryDirectory(prefix="atp-deploy-selftest-") as tmp:
        for description, rel, old, new, expect in MUTATIONS:
            if not _mutated_run(description, chart_dir, rel, old, new, expect,
                                lambda d: ["chart", "--chart", str(d), "--fail-fast"], tmp):
                escaped += 1
        for description, rel, old, new, expect in worker_mutations:
            if not _mutated_run(description, chart_dir, rel, old, new, expect,
                                lambda d: ["worker", "--worker", args.worker, "--chart", str(d)], tmp):
                escaped += 1
        for description, rel, old, new, expect in DOCKER_MUTATIONS:
            if not _mutated_run(description, docker_dir, rel, old, new, expect,
                                lambda d: ["docker", "--dockerfile", str(d / dockerfile_name)], tmp):
                escaped += 1
    if escaped:
        print(f"{escaped} of {total} broken charts or recipes slipped through")
        return 1
    print(f"all {total} broken charts and recipes were caught")
    return 0


# ------------------------------------------------------------------------------------------------
# The image recipe.
def run_docker(args):
    failures = Failures()
    venv_bin = pathlib.Path(sys.executable).parent
    dockerfile = pathlib.Path(args.dockerfile).resolve()
    text = dockerfile.read_text()
    where = dockerfile.name
    hadolint = subprocess.run([str(venv_bin / "hadolint"), "--no-color", str(dockerfile)],
                              capture_output=True, text=True)
    failures.check(hadolint.returncode == 0, f"{where}/hadolint",
                   f"hadolint findings:\n{hadolint.stdout}{hadolint.stderr}")
    version = subprocess.run([str(venv_bin / "hadolint"), "--version"], capture_output=True, text=True).stdout.strip()
    scripts = sorted(dockerfile.parent.glob("*.sh")) + sorted((REPO / "deploy" / "tools").glob("*.sh"))
    shellcheck = subprocess.run([str(venv_bin / "shellcheck"), *map(str, scripts)], capture_output=True, text=True)
    failures.check(shellcheck.returncode == 0, "shellcheck", f"findings:\n{shellcheck.stdout}{shellcheck.stderr}")
    # Joined logical lines (backslash continuations), comments dropped.
    logical, current = [], ""
    for line in text.splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").rstrip() + " "
        if not line.rstrip().endswith("\\"):
            logical.append(current.strip())
            current = ""
    froms = [l for l in logical if l.startswith("FROM ")]
    failures.check(any(re.search(r"nvidia/cuda:\$\{CUDA_VERSION\}-cudnn-devel-ubuntu", l) for l in froms) and
                   re.search(r"^ARG CUDA_VERSION=13\.", text, re.M), where,
                   "no CUDA 13 development base (nvidia/cuda:13.x-cudnn-devel-ubuntu*)")
    failures.check(any("nvidia/cuda:${CUDA_VERSION}-cudnn-runtime-ubuntu" in l for l in froms), where,
                   "no matching CUDA runtime base")
    failures.check(any(re.search(r"debian:\$\{DEBIAN_VERSION\}", l) for l in froms) and
                   re.search(r"^ARG DEBIAN_VERSION=12$", text, re.M), where, "no Debian 12 CPU variant")
    failures.check(re.search(r"^FROM devel-\$\{VARIANT\} AS build$", text, re.M) and
                   re.search(r"^FROM runtime-\$\{VARIANT\} AS runtime$", text, re.M), where,
                   "build and runtime stages are not chosen by VARIANT")
    build = " ".join(l for l in logical if "cmake" in l)
    failures.check("--target atp-worker atp" in build and "-DCMAKE_BUILD_TYPE=Release" in build, where,
                   "the image does not build the README's targets (cmake --build ... --target atp-worker atp, Release)")
    failures.check(re.search(r"-DATP_ENABLE_CUDA=\"?\$\{cuda\}", build) and "cuda=ON" in build, where,
                   "CUDA is not switched by VARIANT")
    runtime = text[text.find("\nFROM runtime-${VARIANT} AS runtime\n"):]
    failures.check("COPY --from=build /opt/atp /opt/atp" in runtime and "COPY . " not in runtime, where,
                   "the runtime stage copies more than the collected binaries and libraries")
    user = re.findall(r"^USER (\S+)$", runtime, re.M)
    failures.check(user and not user[-1].split(":")[0] in ("0", "root"), where, "the image runs as root")
    failures.check(re.search(r'^HEALTHCHECK .*CMD \[.*atp health --target', " ".join(logical), re.M) or
                   any(l.startswith("HEALTHCHECK") and "atp health" in l for l in logical), where,
                   "no HEALTHCHECK through `atp health`")
    failures.check(re.search(r'^ENTRYPOINT \["atp-worker"\]$', runtime, re.M), where, "ENTRYPOINT is not atp-worker")
    failures.check(re.search(r"^EXPOSE 50051 8081 9090$", runtime, re.M), where, "EXPOSE of the three ports")
    # Build packages in step with tools/setup.sh (minus what only tests, benchmarks and tools need).
    setup = (REPO / "tools" / "setup.sh").read_text()
    block = re.search(r"^packages=\((.*?)^\)", setup, re.S | re.M)
    if failures.check(block, "tools/setup.sh", "no packages=( ... ) list"):
        wanted = {p for p in block.group(1).split() if p.endswith("-dev") or p.startswith("protobuf-compiler")}
        wanted -= {"libgtest-dev", "libgmock-dev", "libbenchmark-dev"}
        install = " ".join(l for l in logical if "apt-get install" in l and l.startswith("RUN"))
        missing = sorted(p for p in wanted if not re.search(rf"(^|\s){re.escape(p)}(\s|$)", install))
        failures.check(not missing, where, f"build stage lacks packages that tools/setup.sh builds with: {missing}")
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore")
    if failures.check(ignore.is_file(), where, f"no {ignore.name}"):
        patterns = ignore.read_text().split()
        failures.check(".git" in patterns and "/build*" in patterns, ignore.name, "does not exclude .git and build trees")
    print(f"docker: {where} linted by {version}; {len(scripts)} scripts by shellcheck")
    return finish(failures, "Dockerfile, .dockerignore and scripts")


# ------------------------------------------------------------------------------------------------
# The chart's flagfiles against the real worker.
def _make_secret_files(root, values):
    """Writes what the chart's Secret volumes would hold under root/etc/atp/...: a self-signed
    certificate (also the CA and the client certificate) and a token."""
    pem = root / "pem"
    pem.mkdir(exist_ok=True)
    if not (pem / "cert.pem").exists():
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                        "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                        "-keyout", str(pem / "key.pem"), "-out", str(pem / "cert.pem")],
                       check=True, capture_output=True, timeout=60)
        (pem / "token").write_text("deploy-test-token\n")
    etc = root / "etc" / "atp"
    shutil.rmtree(etc, ignore_errors=True)
    tls, auth = values["tls"], values["auth"]
    files = {f"tls/{tls['certKey']}": "cert.pem", f"tls/{tls['keyKey']}": "key.pem",
             f"client-ca/{tls['clientAuth']['caKey']}": "cert.pem", f"auth/{auth['tokenKey']}": "token"}
    if tls["caKey"]:
        files[f"tls/{tls['caKey']}"] = "cert.pem"
    for rel, source in files.items():
        (etc / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(pem / source, etc / rel)
    return (pem / "cert.pem").read_bytes(), (pem / "key.pem").read_bytes()


def _grpc_health(channel, service, deadline_s):
    """Polls grpc.health.v1 Check until SERVING or the deadline; returns the last status name."""
    import time
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    stub = health_pb2_grpc.HealthStub(channel)
    end, last = time.monotonic() + deadline_s, "no answer"
    while time.monotonic() < end:
        try:
            status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=2).status
            last = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            if last == "SERVING":
                return last
        except grpc.RpcError as error:
            last = f"{error.code().name}: {error.details()}"
        time.sleep(0.1)
    return last


def _cli_has_health(cli):
    if not cli:
        return False
    result = subprocess.run([str(cli), "health", "--help"], capture_output=True, text=True, timeout=30)
    return result.returncode == 0


def _check_worker_with_flagfile(worker, flagfile, values, pool, cert, key, where, failures,
                                health_command=None):
    import selectors
    import signal
    import time
    import urllib.request
    import grpc
    # The flagfile exactly as the chart renders it; the listeners move to free loopback ports.
    cmd = [str(worker), f"--flagfile={flagfile}", "--listen=127.0.0.1:0", "--health-listen=127.0.0.1:0",
           "--metrics-listen=127.0.0.1:0", "--backend=cpu", "--log-format=json", "--log-level=info"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    started, log = None, []
    try:
        selector = selectors.DefaultSelector()
        selector.register(proc.stderr, selectors.EVENT_READ)
        end = time.monotonic() + 30
        while started is None and time.monotonic() < end and proc.poll() is None:
            if selector.select(timeout=0.5):
                line = proc.stderr.readline()
                log.append(line)
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("msg") == "worker started":
                    started = record
        if not failures.check(started, where, f"atp-worker did not start with the chart's flagfile: "
                                              f"rc {proc.poll()}, stderr: {''.join(log)[-1500:]}"):
            return
        health = grpc.insecure_channel(f"127.0.0.1:{started['health_port']}")
        for service in (LIVENESS_SERVICE, READINESS_SERVICE):
            status = _grpc_health(health, service, 20)
            failures.check(status == "SERVING", where,
                           f"health listener answers {status} for service {service!r} (the kubelet probe)")
        health.close()
        tls = values["tls"]
        if tls["enabled"]:
            creds = grpc.ssl_channel_credentials(
                root_certificates=cert,
                private_key=key if tls["clientAuth"]["enabled"] else None,
                certificate_chain=cert if tls["clientAuth"]["enabled"] else None)
            main = grpc.secure_channel(f"127.0.0.1:{started['port']}", creds,
                                       options=[("grpc.ssl_target_name_override", "localhost")])
        else:
            main = grpc.insecure_channel(f"127.0.0.1:{started['port']}")
        status = _grpc_health(main, READINESS_SERVICE, 20)
        failures.check(status == "SERVING", where, f"gRPC port answers {status} for {READINESS_SERVICE!r}")
        main.close()
        failures.check(started.get("tls") is tls["enabled"] and
                       started.get("mtls") is (tls["enabled"] and tls["clientAuth"]["enabled"]) and
                       started.get("token") is values["auth"]["enabled"], where,
                       f"worker started with tls/mtls/token {started.get('tls')}/{started.get('mtls')}/"
                       f"{started.get('token')}, want the chart's settings")
        if health_command:
            # The `helm test` pod's command, with the Service address replaced by the worker's.
            command = list(health_command)
            target = command.index("--target") + 1
            mtls = tls["enabled"] and tls["clientAuth"]["enabled"]
            command[target] = f"127.0.0.1:{started['health_port' if mtls else 'port']}"
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
            failures.check(result.returncode == 0, where,
                           f"the helm test command {command} exited {result.returncode}: "
                           f"{(result.stdout + result.stderr).strip()[-500:]}")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{started['metrics_port']}/metrics",
                                         timeout=10).read().decode()
        autoscaling = pool["autoscaling"]
        for gauge in (autoscaling["inflightRequests"]["metricName"], autoscaling["queueDepth"]["metricName"]):
            failures.check(re.search(rf"^{re.escape(gauge)}[ {{]", metrics, re.M), where,
                           f"/metrics has no {gauge}, the gauge the HPA scales on")
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=pool["worker"]["drainTimeoutSeconds"] + 30)
            failures.check(rc == 0, where, f"atp-worker exited {rc} after SIGTERM, want 0")
        except subprocess.TimeoutExpired:
            failures.add(where, "atp-worker did not exit after SIGTERM")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stderr.close()


def run_worker(args):
    import helm_python as helm
    failures = Failures()
    worker = pathlib.Path(args.worker).resolve()
    if not worker.is_file():
        failures.add("worker", f"no atp-worker binary at {worker}")
        return finish(failures, "")
    chart_dir = pathlib.Path(args.chart).resolve()
    checked = 0
    cli = pathlib.Path(args.cli).resolve() if args.cli else None
    if cli and not cli.is_file():
        failures.add("worker", f"no atp CLI at {cli}")
        return finish(failures, "")
    use_cli = _cli_has_health(cli)
    print(f"worker: {worker}; helm test command through {cli} {'on' if use_cli else 'skipped (no `atp health` yet)'}")
    with tempfile.TemporaryDirectory(prefix="atp-deploy-worker-") as tmp, helm.Chart.load(chart_dir) as chart:
        root = pathlib.Path(tmp)
        for path in sorted(VALUES_DIR.glob("*.yaml")):
            values = yaml.load(path.read_text(), Loader=StrictLoader) or {}
            objects, _ = render(chart, values)
            merged = chart.merge_values(values)
            cert, key = _make_secret_files(root, merged)
            configmaps = {o["metadata"]["name"]: o for docs in objects.values() for o in docs
                          if o["kind"] == "ConfigMap"}
            for pool in effective_pools(merged, chart_dir):
                name = pool_fullname(merged, pool)
                where = f"{path.stem}/pool {pool['name']}"
                text = configmaps[name]["data"]["worker.flags"].replace("/etc/atp/", f"{root}/etc/atp/")
                flagfile = root / f"{path.stem}-{pool['name']}.flags"
                flagfile.write_text(text)
                health_command = None
                if use_cli:
                    test_pod = next(o for docs in objects.values() for o in docs if o["kind"] == "Pod")
                    health_command = [str(cli)] + [a.replace("/etc/atp/", f"{root}/etc/atp/")
                                                   for a in test_pod["spec"]["containers"][0]["command"][1:]]
                before = len(failures.items)
                _check_worker_with_flagfile(worker, flagfile, merged, pool, cert, key, where, failures,
                                            health_command)
                checked += 1
                print(f"  {where}: {'ok' if len(failures.items) == before else 'FAILED'}")
    return finish(failures, f"atp-worker started with {checked} rendered flagfiles")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    chart = sub.add_parser("chart")
    chart.add_argument("--chart", default=str(CHART))
    chart.add_argument("--fail-fast", action="store_true")
    selftest = sub.add_parser("self-test")
    selftest.add_argument("--chart", default=str(CHART))
    selftest.add_argument("--dockerfile", default=str(DOCKERFILE))
    selftest.add_argument("--worker", help="atp-worker binary: also break the chart's contract with it")
    docker = sub.add_parser("docker")
    docker.add_argument("--dockerfile", default=str(DOCKERFILE))
    worker = sub.add_parser("worker")
    worker.add_argument("--worker", required=True, help="path of the atp-worker binary")
    worker.add_argument("--chart", default=str(CHART))
    worker.add_argument("--cli", help="atp CLI: runs the helm test pod's `atp health` command too")
    args = parser.parse_args()
    return {"chart": run_chart, "self-test": run_self_test, "docker": run_docker,
            "worker": run_worker}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
