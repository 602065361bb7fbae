"""deploy/k8s (the scale-out recipe in the README) holds together: the serve replicas' arguments are
accepted by this version's own command line, the Collector routes by trace id to the replicas' headless
Service in the namespace kustomize puts it in, on the port serve listens on, with the token serve
checks. No cluster runs here; these are the mistakes that would make the recipe fail on one."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml")

from llmobs_tui.cli.parser import build_parser  # noqa: E402
from llmobs_tui.settings import Settings  # noqa: E402

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "k8s"


def _documents() -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all((DEPLOY / "llmobs.yaml").read_text()) if doc]


def _one(kind: str, name: str) -> dict[str, Any]:
    (found,) = [doc for doc in _documents() if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


def _serve_container() -> dict[str, Any]:
    (container,) = _one("StatefulSet", "llmobs-serve")["spec"]["template"]["spec"]["containers"]
    return container


def _expand(args: list[str], env: dict[str, str]) -> list[str]:
    """Kubernetes' $(VAR) substitution in container args."""
    return [re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], arg) for arg in args]


def test_the_serve_replicas_arguments_are_accepted_by_serve() -> None:
    container = _serve_container()
    plain_env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    secret_env = {e["name"] for e in container["env"] if "valueFrom" in e}
    assert {"LLMOBS_TOKEN", "LLMOBS_CLICKHOUSE_PASSWORD"} <= secret_env
    args = _expand(container["args"], plain_env)
    environ = {"LLMOBS_TOKEN": "0123456789abcdef0123456789abcdef", "LLMOBS_CLICKHOUSE_PASSWORD": "pw"}
    settings = Settings.from_args(build_parser().parse_args(args), environ)
    assert settings.command == "serve" and settings.host == "0.0.0.0"
    assert settings.store_url is not None and settings.store_url.password == "pw"
    assert settings.grpc_port == 4317
    # Without the token, serve would refuse to listen beyond loopback: the manifest must give one.
    with pytest.raises(Exception, match="token"):
        Settings.from_args(build_parser().parse_args(args), {"LLMOBS_CLICKHOUSE_PASSWORD": "pw"})


def test_the_collector_routes_by_trace_id_to_the_replicas_port_with_their_token() -> None:
    collector = yaml.safe_load((DEPLOY / "collector.yaml").read_text())
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    namespace = kustomization["namespace"]
    balancing = collector["exporters"]["loadbalancing"]
    assert balancing["routing_key"] == "traceID"
    headless = _one("Service", "llmobs-serve-headless")
    assert headless["spec"]["clusterIP"] == "None"
    assert balancing["resolver"]["dns"]["hostname"] == f"llmobs-serve-headless.{namespace}.svc.cluster.local"
    assert str(balancing["resolver"]["dns"]["port"]) == "4317" == str(headless["spec"]["ports"][0]["port"])
    assert _one("StatefulSet", "llmobs-serve")["spec"]["serviceName"] == "llmobs-serve-headless"
    assert balancing["protocol"]["otlp"]["headers"]["authorization"] == "Bearer ${env:LLMOBS_TOKEN}"
    for signal in ("traces", "logs"):
        assert collector["service"]["pipelines"][signal]["exporters"] == ["loadbalancing"]
    # Metrics to the same replicas with the same token, never by trace id, as deltas (a stream the ring
    # moves would otherwise be counted again from its start on its new replica).
    metrics = collector["service"]["pipelines"]["metrics"]
    (exporter,) = metrics["exporters"]
    by_stream = collector["exporters"][exporter]
    assert by_stream["routing_key"] in ("service", "resource", "metric", "streamID")
    assert by_stream["resolver"] == balancing["resolver"] and by_stream["protocol"] == balancing["protocol"]
    assert metrics["processors"][0] == "cumulativetodelta" and "cumulativetodelta" in collector["processors"]
    # The Collector gets the same secret's token, and its config from the generated ConfigMap.
    (container,) = _one("Deployment", "llmobs-collector")["spec"]["template"]["spec"]["containers"]
    assert {e["name"] for e in container["env"]} >= {"LLMOBS_TOKEN"}
    assert kustomization["configMapGenerator"][0]["files"] == ["collector.yaml"]
    assert "--config=/conf/collector.yaml" in container["args"]


def test_the_replicas_keep_their_outbox_on_a_persistent_volume() -> None:
    statefulset = _one("StatefulSet", "llmobs-serve")
    container = _serve_container()
    data_home = {e["name"]: e.get("value") for e in container["env"]}["XDG_DATA_HOME"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    claims = {c["metadata"]["name"] for c in statefulset["spec"]["volumeClaimTemplates"]}
    assert mounts["data"] == data_home and "data" in claims
