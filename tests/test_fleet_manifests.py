"""deploy/: the fleet's image, Compose file, Kubernetes manifests and Prometheus configuration, checked offline.
Each file against its schema (kubernetes-validate, the Compose specification, promtool), then the wiring
between them. There is no Docker engine or cluster here: nothing is built, started or applied."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from fishvoice.config import Settings

from .conftest import ROOT

DEPLOY = ROOT / "deploy"
# The newest Kubernetes whose schemas kubernetes-validate 1.37.0 ships.
KUBERNETES = "1.37"
QUEUE = "fishvoice_job_queue_depth"
# Compose interpolation only: the replica count, never a server setting.
COMPOSE_ONLY = {"FISHVOICE_REPLICAS"}


def documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def manifests() -> list[dict[str, Any]]:
    return [doc for path in sorted((DEPLOY / "kubernetes").rglob("*.yaml")) for doc in documents(path)]


def resource(kind: str, name: str) -> dict[str, Any]:
    found = [doc for doc in manifests() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} documents"
    return found[0]


def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def check_compose(path: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec", str(path)]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def promtool(path: Path) -> subprocess.CompletedProcess[str]:
    if not shutil.which("promtool"):
        pytest.skip("promtool is not installed (Debian's prometheus package; .ci/run installs it)")
    return subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=60)


# The schemas: each validator passes our files and refuses a broken one (so a pass means something).


@pytest.mark.parametrize("doc", manifests(), ids=lambda d: f"{d['kind']}/{d['metadata']['name']}")
def test_every_kubernetes_document_is_valid(doc):
    assert kubernetes_validate.validate(doc, KUBERNETES, strict=True) == KUBERNETES


def test_kubernetes_validate_refuses_a_broken_deployment():
    broken = copy.deepcopy(resource("Deployment", "fishvoice"))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/ready"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES, strict=True)


def test_the_compose_file_follows_the_compose_specification():
    done = check_compose(DEPLOY / "compose.yaml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_compose_check_refuses_a_broken_file(tmp_path):
    broken = compose()
    broken["services"]["fishvoice"]["healthcheck"]["every"] = "10s"
    (tmp_path / "compose.yaml").write_text(yaml.safe_dump(broken))
    done = check_compose(tmp_path / "compose.yaml")
    assert done.returncode != 0 and "'every' does not match" in done.stdout


def test_the_prometheus_config_passes_promtool():
    done = promtool(DEPLOY / "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_promtool_refuses_a_broken_config(tmp_path):
    broken = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    broken["scrape_configs"][0]["dns_sd_configs"][0]["type"] = "CNAME"
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(broken))
    done = promtool(tmp_path / "prometheus.yml")
    assert done.returncode != 0 and "invalid DNS-SD records type CNAME" in done.stdout + done.stderr


# The wiring: names and paths one file expects of another.


def test_the_hpa_scales_the_deployment_on_the_fleets_queue_as_an_external_metric():
    hpa = resource("HorizontalPodAutoscaler", "fishvoice")
    target = hpa["spec"]["scaleTargetRef"]
    assert resource(target["kind"], target["name"])["apiVersion"] == target["apiVersion"] == "apps/v1"
    [metric] = hpa["spec"]["metrics"]
    assert metric["type"] == "External" and metric["external"]["metric"]["name"] == QUEUE
    assert metric["external"]["target"]["type"] in ("Value", "AverageValue")
    assert 1 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]


def test_the_adapter_serves_the_metric_the_hpa_asks_for():
    config = yaml.safe_load(resource("ConfigMap", "fishvoice-prometheus-adapter")["data"]["config.yaml"])
    [rule] = config["externalRules"]
    assert rule["name"]["as"] == QUEUE and re.fullmatch(rule["name"]["matches"], QUEUE)
    assert QUEUE in rule["seriesQuery"]
    # Every pod reports the same fleet-wide number: max keeps it once, sum would count it per pod.
    assert rule["metricsQuery"].replace(" ", "").startswith("max(<<.Series>>")


def pod_specs() -> list[dict[str, Any]]:
    return [doc["spec"]["template"]["spec"] for doc in manifests() if doc["kind"] == "Deployment"]


def test_deployments_probe_ready_and_live_on_the_served_port():
    assert len(pod_specs()) == 2  # CPU and GPU
    for spec in pod_specs():
        [container] = spec["containers"]
        assert container["ports"] == [{"name": "http", "containerPort": 8000}]
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/live", "port": "http"}
        assert container["startupProbe"]["httpGet"]["path"] == "/live"
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # the models load first
        assert spec["enableServiceLinks"] is False  # else the Service named fishvoice sets FISHVOICE_PORT


def test_the_service_reaches_every_fishvoice_pod():
    service = resource("Service", "fishvoice")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    for doc in manifests():
        if doc["kind"] == "Deployment":
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert service["spec"]["selector"].items() <= labels.items(), doc["metadata"]["name"]
            assert doc["spec"]["selector"]["matchLabels"].items() <= labels.items()


def compose_environments() -> list[dict[str, Any]]:
    services = compose()["services"]
    return [services[name]["environment"] for name in ("fishvoice", "fishvoice-gpu")]


def kubernetes_environments() -> list[dict[str, Any]]:
    envs = [doc.get("data") or doc.get("stringData") for doc in manifests() if doc["kind"] in ("ConfigMap", "Secret")]
    envs += [{e["name"]: e["value"] for e in spec["containers"][0].get("env", [])} for spec in pod_specs()]
    return [env for env in envs if any(key.startswith("FISHVOICE_") for key in env)]


def setting_fields(env: dict[str, Any]) -> dict[str, str]:
    """FISHVOICE_<FIELD> keys as Settings' field names, refusing one that names no field."""
    fields = {key.removeprefix("FISHVOICE_").lower(): str(value) for key, value in env.items()}
    unknown = set(fields) - set(Settings.model_fields)
    assert not unknown, f"not fields of fishvoice.config.Settings: {sorted(unknown)}"
    return fields


def test_every_fishvoice_variable_is_a_setting_with_a_valid_value():
    envs = compose_environments() + kubernetes_environments()
    assert len(envs) == 5
    for env in envs:
        settings = Settings(**setting_fields(env))
        if "FISHVOICE_JOBS" in env:  # one Redis shared by the fleet, for jobs and conversations alike
            assert settings.jobs == settings.store and settings.jobs.startswith("redis://redis:6379")
    interpolated = set(re.findall(r"\$\{(FISHVOICE_\w+)", (DEPLOY / "compose.yaml").read_text())) - COMPOSE_ONLY
    assert interpolated and setting_fields(dict.fromkeys(interpolated))


def test_a_misspelt_variable_is_refused():
    with pytest.raises(AssertionError, match="redis_prefx"):
        setting_fields({"FISHVOICE_REDIS_PREFX": "fishvoice"})


def dockerfile_steps() -> list[tuple[str, str]]:
    sys.path.insert(0, str(ROOT / "scripts"))
    from check_dockerfile import instructions

    return instructions(DEPLOY / "Dockerfile")


def test_the_image_serves_on_8000_and_checks_ready():
    steps = dict(dockerfile_steps())
    assert steps["CMD"] == '["fishvoice", "serve", "--host", "0.0.0.0", "--port", "8000"]'
    assert steps["EXPOSE"] == "8000"
    assert "urllib.request.urlopen('http://127.0.0.1:8000/ready'" in steps["HEALTHCHECK"]
    for op, args in dockerfile_steps():
        if op == "COPY":  # the build context is the repository root
            assert all((ROOT / source).exists() for source in args.split()[:-1]), args


def test_compose_builds_from_dockerfiles_that_exist_and_checks_ready():
    for name in ("fishvoice", "fishvoice-gpu"):
        service = compose()["services"][name]
        context = (DEPLOY / service["build"]["context"]).resolve()
        assert context == ROOT and (context / service["build"]["dockerfile"]).is_file()
        assert "http://127.0.0.1:8000/ready" in " ".join(service["healthcheck"]["test"])
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    gpu = compose()["services"]["fishvoice-gpu"]
    assert gpu["profiles"] == ["gpu"] and gpu["command"][:2] == ["fishvoice", "serve"]
    [device] = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]


def test_prometheus_mounts_a_config_that_scrapes_every_fishvoice_service():
    [mount] = compose()["services"]["prometheus"]["volumes"]
    source, target = mount.split(":")[:2]
    assert (DEPLOY / source).is_file() and target == "/etc/prometheus/prometheus.yml"
    [job] = yaml.safe_load((DEPLOY / source).read_text())["scrape_configs"]
    [sd] = job["dns_sd_configs"]
    assert sd["type"] == "A" and sd["port"] == 8000 and job["metrics_path"] == "/metrics"
    assert set(sd["names"]) == {name for name in compose()["services"] if name.startswith("fishvoice")}
