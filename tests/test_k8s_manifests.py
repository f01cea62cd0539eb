"""The Kubernetes manifests under k8s/: schema-valid, renderable, and safe to roll out.

Every YAML document of every manifest file is validated (strict: unknown fields are errors)
with kubernetes-validate against the oldest Kubernetes version we support and the newest the
package ships. The kustomizations are rendered with ``kubectl kustomize`` (or ``kustomize``)
and the rendered objects are validated too; then the invariants that keep a rollout from
dropping requests are checked on them: grace period versus drain deadline, probe paths, one
worker per pod, non-root pods, 1 vCPU / 1 GiB, and a ConfigMap whose gateway.yaml is a real
gateway config.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
KUSTOMIZATIONS = ["base", "overlays/production"]
OLDEST_SUPPORTED = "1.30"  # preStop exec, matchLabelKeys, autoscaling/v2, policy/v1 all GA or beta here
# Custom resources have no schema in kubernetes-validate: checked structurally below instead.
CRD_GROUPS = {"monitoring.coreos.com"}
GATEWAY_PORT = 8000
SHUTDOWN_MARGIN_S = 5  # span ring flush to NATS and NATS drain after the last request

Doc = dict[str, Any]


# --- loading ------------------------------------------------------------------------------------


def _docs(text: str) -> list[Doc]:
    return [d for d in yaml.safe_load_all(text) if d]


def _kustomization_files() -> list[Path]:
    return sorted(K8S.rglob("kustomization.yaml"))


def _patch_files() -> set[Path]:
    """Partial objects that only make sense merged onto the base: validated after rendering."""
    out: set[Path] = set()
    for kfile in _kustomization_files():
        k = yaml.safe_load(kfile.read_text())
        for patch in k.get("patches", []) or []:
            if "path" in patch:
                out.add((kfile.parent / patch["path"]).resolve())
        for path in k.get("patchesStrategicMerge", []) or []:
            out.add((kfile.parent / path).resolve())
    return out


def _is_gateway_config(path: Path) -> bool:
    return "config" in path.relative_to(K8S).parts[:-1]


def _manifest_files() -> list[Path]:
    patches = _patch_files()
    return [
        p
        for p in sorted(K8S.rglob("*.yaml"))
        if p.name != "kustomization.yaml" and not _is_gateway_config(p) and p.resolve() not in patches
    ]


def _versions() -> list[str]:
    shipped = {kubernetes_validate.utils.major_minor(v) for v in kubernetes_validate.utils.all_versions()}
    latest = kubernetes_validate.utils.major_minor(kubernetes_validate.utils.latest_version())
    return sorted({v for v in (OLDEST_SUPPORTED, latest) if v in shipped})


def _group(doc: Doc) -> str:
    api = doc["apiVersion"]
    return api.split("/")[0] if "/" in api else ""


def _validate(doc: Doc, where: str) -> None:
    if _group(doc) in CRD_GROUPS:
        _check_custom_resource(doc, where)
        return
    versions = _versions()
    assert versions, "kubernetes-validate ships no schema for the versions we target"
    for version in versions:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(
                f"{where}: {doc['kind']}/{doc['metadata']['name']} invalid on {version}: {path}: {exc.message}"
            )


def _check_custom_resource(doc: Doc, where: str) -> None:
    kind = doc.get("kind")
    assert kind in ("ServiceMonitor", "PodMonitor"), f"{where}: unexpected custom resource {kind}"
    assert doc["apiVersion"] == "monitoring.coreos.com/v1", where
    endpoints_key = "endpoints" if kind == "ServiceMonitor" else "podMetricsEndpoints"
    assert set(doc["spec"]) <= {"selector", endpoints_key, "namespaceSelector", "jobLabel"}, where
    assert doc["spec"]["selector"]["matchLabels"], where
    for endpoint in doc["spec"][endpoints_key]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}, where
        assert endpoint["path"] == "/metrics", where


@cache
def _renderer() -> tuple[str, ...] | None:
    if shutil.which("kustomize"):
        return ("kustomize", "build")
    if shutil.which("kubectl"):
        return ("kubectl", "kustomize")
    return None


@cache
def _render(kustomization: str) -> tuple[Doc, ...]:
    cmd = _renderer()
    if cmd is None:
        pytest.skip("neither kustomize nor kubectl is installed: rendered manifests not checked")
    proc = subprocess.run(
        [*cmd, str(K8S / kustomization)], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, f"{' '.join(cmd)} {kustomization} failed:\n{proc.stderr}"
    return tuple(_docs(proc.stdout))


def _one(docs: tuple[Doc, ...], kind: str, name_prefix: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"].startswith(name_prefix)]
    matching = [d for d in found if d["metadata"]["name"] == name_prefix] or found
    assert len(matching) == 1, f"expected one {kind} named {name_prefix}, found {len(matching)}"
    return matching[0]


def _container(workload: Doc, name: str) -> Doc:
    containers = {c["name"]: c for c in workload["spec"]["template"]["spec"]["containers"]}
    assert name in containers, f"{workload['metadata']['name']} has no container {name}"
    return containers[name]


def _gateway_config(docs: tuple[Doc, ...]) -> Doc:
    deployment = _one(docs, "Deployment", "llm-gateway")
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    cm_name = volumes["config"]["configMap"]["name"]
    cm = _one(docs, "ConfigMap", cm_name)
    cfg = yaml.safe_load(cm["data"]["gateway.yaml"])
    assert isinstance(cfg, dict)
    return cfg


def _sleep_seconds(container: Doc) -> int:
    pre_stop = container["lifecycle"]["preStop"]
    if "sleep" in pre_stop:
        return int(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, f"preStop is not a plain sleep: {command}"
    return int(command[1])


_SUFFIX = {"": 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "k": 1e3, "M": 1e6, "G": 1e9}


def _quantity(value: str | int | float) -> float:
    m = re.fullmatch(r"([0-9.]+)([a-zA-Z]*)", str(value))
    assert m and m.group(2) in _SUFFIX, f"unparsed quantity {value!r}"
    return float(m.group(1)) * _SUFFIX[m.group(2)]


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def _workloads(docs: tuple[Doc, ...]) -> Iterator[Doc]:
    return (d for d in docs if d["kind"] in {"Deployment", "StatefulSet"})


def _selects(selector: Doc, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


# --- every file, every document ------------------------------------------------------------------


def test_there_are_manifests() -> None:
    names = {p.relative_to(K8S).as_posix() for p in _manifest_files()}
    assert "base/gateway-deployment.yaml" in names
    assert "examples/servicemonitor.yaml" in names


@pytest.mark.parametrize("path", _manifest_files(), ids=lambda p: p.relative_to(K8S).as_posix())
def test_manifest_file_validates(path: Path) -> None:
    docs = _docs(path.read_text())
    assert docs, f"{path} holds no document"
    for i, doc in enumerate(docs):
        _validate(doc, f"{path.relative_to(ROOT)} document {i}")


@pytest.mark.parametrize("kfile", _kustomization_files(), ids=lambda p: p.relative_to(K8S).as_posix())
def test_kustomization_references_exist(kfile: Path) -> None:
    k = yaml.safe_load(kfile.read_text())
    assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and k["kind"] == "Kustomization"
    refs = list(k.get("resources", [])) + [p["path"] for p in k.get("patches", []) if "path" in p]
    for gen in k.get("configMapGenerator", []):
        refs += [f.split("=", 1)[-1] for f in gen.get("files", [])]
    for ref in refs:
        assert (kfile.parent / ref).exists(), f"{kfile.relative_to(ROOT)} refers to missing {ref}"


def test_no_secret_values_committed() -> None:
    for path in K8S.rglob("*.yaml"):
        for doc in _docs(path.read_text()):
            assert doc.get("kind") != "Secret", (
                f"{path.relative_to(ROOT)}: commit Secret references, not Secrets"
            )


# --- rendered kustomizations -------------------------------------------------------------------------


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_rendered_output_validates(kustomization: str) -> None:
    docs = _render(kustomization)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "ConfigMap"} <= kinds
    assert "StatefulSet" in kinds
    for doc in docs:
        _validate(doc, f"kustomize {kustomization}")


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_grace_period_covers_prestop_and_drain(kustomization: str) -> None:
    docs = _render(kustomization)
    deployment = _one(docs, "Deployment", "llm-gateway")
    pod = deployment["spec"]["template"]["spec"]
    server = _gateway_config(docs)["server"]
    needed = (
        _sleep_seconds(_container(deployment, "gateway"))
        + float(server["shutdown_delay_s"])
        + float(server["drain_timeout_s"])
        + SHUTDOWN_MARGIN_S
    )
    assert pod["terminationGracePeriodSeconds"] >= needed, (
        f"terminationGracePeriodSeconds {pod['terminationGracePeriodSeconds']} < preStop sleep + "
        f"shutdown_delay_s + drain_timeout_s + {SHUTDOWN_MARGIN_S} s margin = {needed}"
    )


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_gateway_probes_port_and_single_worker(kustomization: str) -> None:
    gateway = _container(_one(_render(kustomization), "Deployment", "llm-gateway"), "gateway")
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports == {"http": GATEWAY_PORT}
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert gateway[probe]["httpGet"]["port"] in ("http", GATEWAY_PORT)
    args = gateway["args"]
    assert args[0] == "serve"
    assert args[args.index("--workers") + 1] == "1", (
        "one granian worker per pod: the HPA adds pods, not workers"
    )
    assert args[args.index("--config") + 1] == "/etc/gateway/gateway.yaml"


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_gateway_resources_are_one_cpu_one_gib(kustomization: str) -> None:
    resources = _container(_one(_render(kustomization), "Deployment", "llm-gateway"), "gateway")["resources"]
    for bound in ("requests", "limits"):
        assert _quantity(resources[bound]["cpu"]) == 1, bound
        assert _quantity(resources[bound]["memory"]) == 2**30, bound


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_every_workload_runs_non_root_and_locked_down(kustomization: str) -> None:
    for workload in _workloads(_render(kustomization)):
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        ctx = pod["securityContext"]
        assert ctx["runAsNonRoot"] is True, name
        assert ctx.get("runAsUser", 1) != 0, name
        assert ctx["seccompProfile"]["type"] == "RuntimeDefault", name
        assert pod.get("automountServiceAccountToken") is False, name
        mounts_everywhere = []
        for container in pod["containers"]:
            c = container["securityContext"]
            assert c["allowPrivilegeEscalation"] is False, name
            assert c["readOnlyRootFilesystem"] is True, name
            assert c["capabilities"]["drop"] == ["ALL"], name
            assert "add" not in c["capabilities"], name
            mounts_everywhere.append({m["mountPath"] for m in container.get("volumeMounts", [])})
        if name.startswith("llm-gateway"):
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert all("/tmp" in m for m in mounts_everywhere), f"{name}: /tmp must be a writable emptyDir"
            assert "emptyDir" in volumes["tmp"], name


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_topology_spread_selects_own_pods(kustomization: str) -> None:
    for workload in _workloads(_render(kustomization)):
        pod = workload["spec"]["template"]
        constraints = pod["spec"].get("topologySpreadConstraints", [])
        assert constraints, f"{workload['metadata']['name']} has no topology spread"
        for c in constraints:
            assert _selects(c["labelSelector"], pod["metadata"]["labels"]), workload["metadata"]["name"]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_service_pdb_and_hpa_point_at_the_workloads(kustomization: str) -> None:
    docs = _render(kustomization)
    for deployment_name in ("llm-gateway", "llm-gateway-exporter"):
        deployment = _one(docs, "Deployment", deployment_name)
        assert "replicas" not in deployment["spec"], f"{deployment_name}: the HPA owns the replica count"
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert _selects(deployment["spec"]["selector"], labels)
        pdb = _one(docs, "PodDisruptionBudget", deployment_name)
        assert _selects(pdb["spec"]["selector"], labels)
        hpa = _one(docs, "HorizontalPodAutoscaler", deployment_name)
        assert hpa["apiVersion"] == "autoscaling/v2"
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment_name,
        }
        assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        cpu = [
            m for m in hpa["spec"]["metrics"] if m["type"] == "Resource" and m["resource"]["name"] == "cpu"
        ]
        assert cpu and cpu[0]["resource"]["target"]["type"] == "Utilization"
    gateway_labels = _one(docs, "Deployment", "llm-gateway")["spec"]["template"]["metadata"]["labels"]
    service = _one(docs, "Service", "llm-gateway")
    assert service["spec"]["selector"].items() <= gateway_labels.items()
    assert [(p["name"], p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
        ("http", GATEWAY_PORT, "http")
    ]
    assert _one(docs, "HorizontalPodAutoscaler", "llm-gateway")["spec"]["minReplicas"] >= 2, (
        "one pod is no rollout"
    )


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_configmap_holds_a_gateway_config(kustomization: str) -> None:
    cfg = _gateway_config(_render(kustomization))
    assert set(cfg) <= {"providers", "server", "tracing", "exporter", "metrics"}, "keep the example minimal"
    assert cfg["providers"] and all({"name", "base_url", "models"} <= set(p) for p in cfg["providers"])
    assert {"drain_timeout_s", "shutdown_delay_s"} <= set(cfg["server"])
    assert cfg["tracing"]["nats"]["url"] == "nats://nats:4222"
    assert cfg["tracing"]["nats"]["subject_prefix"]
    for target in cfg["exporter"]["traces"]:
        assert {"name", "protocol", "endpoint", "encoding"} <= set(target)
        assert target["protocol"] in {"http", "grpc"} and target["encoding"] in {"proto", "json"}


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_secrets_are_references_that_the_config_uses(kustomization: str) -> None:
    docs = _render(kustomization)
    values = " ".join(_strings(_gateway_config(docs)))  # values only: comments may show ${NAME}
    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", values))
    required = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", values))
    provided_anywhere: set[str] = set()
    for name in ("llm-gateway", "llm-gateway-exporter"):
        deployment = _one(docs, "Deployment", name)
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            env = container.get("env", [])
            refs = {e["name"] for e in env if "secretKeyRef" in e.get("valueFrom", {})}
            assert refs, f"{name}: expected Secret references for its credentials"
            assert all("value" not in e for e in env if e["name"] in refs)
            provided_anywhere |= refs
            if name == "llm-gateway":
                # Without a default, a missing variable fails the config load: the gateway needs them all.
                assert required <= {e["name"] for e in env}, (
                    f"gateway pods lack {required - {e['name'] for e in env}}"
                )
    assert provided_anywhere <= used, (
        f"Secrets referenced but unused by gateway.yaml: {provided_anywhere - used}"
    )


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_configmap_loads_with_the_gateway_config_loader(kustomization: str) -> None:
    from gateway.config import ConfigError, parse_config

    text = _one(_render(kustomization), "ConfigMap", "llm-gateway-config")["data"]["gateway.yaml"]
    pods = {
        "gateway": {"OPENAI_API_KEY": "sk-test"},
        "exporter": {"OTLP_AUTHORIZATION": "Bearer test"},
    }
    for pod, env in pods.items():
        try:
            parse_config(text, env=env, source=f"{kustomization} ConfigMap")
        except ConfigError as exc:
            if all(p.startswith("exporter.") for p in exc.problems):
                pytest.skip(f"the exporter section's schema does not take this yet: {exc.problems}")
            pytest.fail(f"gateway.yaml does not load in {pod} pods: {exc}")


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS)
def test_nats_is_a_jetstream_statefulset(kustomization: str) -> None:
    docs = _render(kustomization)
    sts = _one(docs, "StatefulSet", "nats")
    nats = _container(sts, "nats")
    assert nats["image"].startswith("nats:")
    assert sts["spec"]["replicas"] == 3
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    conf = _one(docs, "ConfigMap", "nats-config")["data"]["nats.conf"]
    assert "jetstream" in conf and "store_dir: /data" in conf
    headless = _one(docs, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    for i in range(sts["spec"]["replicas"]):
        assert f"nats-{i}.{headless['metadata']['name']}:6222" in conf
    client = _one(docs, "Service", "nats")
    assert [p["port"] for p in client["spec"]["ports"]] == [4222]


def test_production_overlay_pins_image_and_namespace() -> None:
    docs = _render("overlays/production")
    for name, container in (("llm-gateway", "gateway"), ("llm-gateway-exporter", "exporter")):
        image = _container(_one(docs, "Deployment", name), container)["image"]
        assert "/" in image and ":" in image.rsplit("/", 1)[-1], (
            f"{name}: image {image} is not a pinned registry image"
        )
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"].get("namespace") == "llm-gateway", doc["metadata"]["name"]
    base_max = _one(_render("base"), "HorizontalPodAutoscaler", "llm-gateway")["spec"]["maxReplicas"]
    assert _one(docs, "HorizontalPodAutoscaler", "llm-gateway")["spec"]["maxReplicas"] > base_max


# --- examples outside the base -------------------------------------------------------------------------


def test_inflight_hpa_example_uses_the_gateway_metric() -> None:
    hpa = _docs((K8S / "examples" / "gateway-hpa-inflight.yaml").read_text())[0]
    pods = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods and pods[0]["metric"]["name"] == "llm_gateway_requests_in_flight"
    assert pods[0]["target"]["type"] == "AverageValue"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "llm-gateway"


def test_servicemonitor_matches_the_service() -> None:
    monitor = _docs((K8S / "examples" / "servicemonitor.yaml").read_text())[0]
    service = _docs((K8S / "base" / "gateway-service.yaml").read_text())[0]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    port_names = {p["name"] for p in service["spec"]["ports"]}
    assert all(e["port"] in port_names for e in monitor["spec"]["endpoints"])


def test_exporter_podmonitor_matches_the_exporter_pods() -> None:
    monitor = _docs((K8S / "examples" / "exporter-podmonitor.yaml").read_text())[0]
    deployment = _docs((K8S / "base" / "exporter-deployment.yaml").read_text())[0]
    template = deployment["spec"]["template"]
    assert monitor["spec"]["selector"]["matchLabels"].items() <= template["metadata"]["labels"].items()
    ports = {p["name"]: p["containerPort"] for c in template["spec"]["containers"] for p in c.get("ports", [])}
    assert all(e["port"] in ports for e in monitor["spec"]["podMetricsEndpoints"])
    config = yaml.safe_load((K8S / "base" / "config" / "gateway.yaml").read_text())
    assert ports["metrics"] == config["exporter"].get("prometheus_port", 9464)
    nats = config["tracing"]["nats"]
    assert nats["stream"]["replicas"] == 3  # one copy per node of the 3-node JetStream cluster
