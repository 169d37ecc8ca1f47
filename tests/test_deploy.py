"""The deployment files, checked as far as a machine without Docker can: compose.yaml parses
and runs only real `conversa` commands, the image's entry point is the console script, every
image is pinned, and everything compose sets is a documented variable."""

from __future__ import annotations

import argparse
import re
import tomllib
from typing import Any

import pytest
import yaml

from server.cli.main import build_parser
from store.scoping import APP_ROLE
from tests.conftest import ROOT

APP_SERVICES = ("migrate", "api", "worker")
"""The services that run the project's image (the others are PostgreSQL and Redis)."""


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text()


def _instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", dockerfile)
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def _documented() -> dict[str, str]:
    text = (ROOT / ".env.example").read_text()
    return dict(re.findall(r"^([A-Z][A-Z0-9_]*)=(.*)$", text, flags=re.MULTILINE))


def _operations_section() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("\n## Operations")
    end = readme.find("\n## ", start + 1)
    return readme[start : end if end != -1 else None]


def test_compose_names_every_service_the_readme_describes(compose: dict[str, Any]) -> None:
    described = set(re.findall(r"^\| `([a-z-]+)` \|", _operations_section(), flags=re.MULTILINE))
    assert described, "the README's Operations section has a table of compose services"
    assert set(compose["services"]) == described
    assert {"postgres", "redis", *APP_SERVICES} <= described


def test_every_service_command_is_a_real_subcommand(compose: dict[str, Any]) -> None:
    commands = _subcommands()
    parser = build_parser()
    for name in APP_SERVICES:
        service = compose["services"][name]
        command = service["command"]
        assert command[0] in commands, f"{name}: {command}"
        parser.parse_args(command)  # the arguments are valid too (SystemExit otherwise)
        health = service.get("healthcheck", {})
        test = health.get("test", [])
        if test[:2] == ["CMD", "conversa"]:
            assert test[2] in commands, f"{name}'s health check: {test}"
    assert compose["services"]["migrate"]["command"] == ["migrate"]
    assert compose["services"]["api"]["command"] == ["serve"]
    assert compose["services"]["worker"]["command"] == ["worker"]


def test_the_image_runs_the_console_script(dockerfile: str) -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts == {"conversa": "server.cli.main:main"}
    found = dict(_instructions(dockerfile))  # the last of each instruction wins, as in Docker
    assert found["ENTRYPOINT"] == '["conversa"]'
    assert found["CMD"] == '["serve"]'
    assert found["USER"].split(":")[0] not in {"root", "0"}
    healthcheck = found["HEALTHCHECK"]
    command = re.search(r'CMD \["conversa", "([a-z-]+)"\]', healthcheck)
    assert command and command.group(1) in _subcommands(), healthcheck
    run = " ".join(arg for word, arg in _instructions(dockerfile) if word == "RUN")
    assert "uv sync --frozen --no-dev --no-install-project" in run, "locked dependencies first"
    assert "uv sync --frozen --no-dev --no-editable" in run


def test_every_image_is_pinned(compose: dict[str, Any], dockerfile: str) -> None:
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", dockerfile, flags=re.MULTILINE))
    stages = set(re.findall(r"^FROM \S+ AS (\w+)$", dockerfile, flags=re.MULTILINE))
    bases = [re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
             for image in re.findall(r"^FROM (\S+)", dockerfile, flags=re.MULTILINE)]  # fmt: skip
    images = [b for b in bases if b not in stages]
    images += [s["image"] for n, s in compose["services"].items() if n not in APP_SERVICES]
    for image in images:
        name, _, tag = image.rpartition(":")
        assert name and re.match(r"^\d+\.\d+\.\d+", tag), f"{image} is not pinned to a version"
    assert "python:3.11." in args["PYTHON_IMAGE"] and "-slim" in args["PYTHON_IMAGE"]
    assert any(i.startswith("pgvector/pgvector:") and i.endswith("-pg16") for i in images)
    makefile = (ROOT / "Makefile").read_text()
    (uv,) = re.findall(r"uv==([\d.]+)", makefile)
    assert f"ghcr.io/astral-sh/uv:{uv}" in images, "the image builds with the project's uv"


def test_compose_sets_only_documented_variables(compose: dict[str, Any]) -> None:
    documented = _documented()
    text = (ROOT / "compose.yaml").read_text()
    interpolated = set(re.findall(r"(?<!\$)\$\{(\w+)", text))
    assert interpolated <= set(documented), interpolated - set(documented)
    for name in APP_SERVICES:
        service = compose["services"][name]
        assert service["env_file"] == ".env"
        unknown = set(service.get("environment", {})) - set(documented)
        assert not unknown, f"{name} sets {unknown}, which .env.example does not document"
        assert service["environment"]["DATABASE_APP_ROLE"] == APP_ROLE
    runtime = [arg for word, arg in _instructions((ROOT / "Dockerfile").read_text())
               if word == "ENV" and "APP_ENV=" in arg]  # fmt: skip
    assert runtime, "the runtime stage sets the service's environment"
    names = set(re.findall(r"(\w+)=", runtime[0])) - {"PATH", "PYTHONUNBUFFERED"}
    assert names and names <= set(documented), names - set(documented)


def test_health_checks_volumes_and_scaling(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name in ("postgres", "redis", "api", "worker"):
        assert services[name]["healthcheck"]["test"], f"{name} has a health check"
    assert services["migrate"]["restart"] == "no"
    for name in ("api", "worker"):
        depends = services[name]["depends_on"]
        assert depends["migrate"] == {"condition": "service_completed_successfully"}
    assert set(compose["volumes"]) == {"pgdata", "redisdata"}
    assert "pgdata:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "redisdata:/data" in services["redis"]["volumes"]
    worker = services["worker"]
    assert worker["deploy"]["replicas"] >= 1
    assert "container_name" not in worker and "ports" not in worker, "scalable"
    init = compose["configs"]["service-role"]["content"]
    assert f"in role {APP_ROLE}" in init and "nosuperuser nobypassrls" in init


def test_the_build_context_leaves_secrets_and_local_state_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".env", ".venv", ".data", ".git", ".tools", "tests"} <= ignored
