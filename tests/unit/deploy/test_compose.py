"""docker/docker-compose.yml, checked without Docker: the services, volumes, restart policies, and
that every variable the backend reads reaches both the server and the workers."""
from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import fields
from pathlib import Path

import pytest
import yaml

from backend.service.settings import Settings
from tests.unit.deploy import files

SERVICES = {"label-studio", "postgres", "redis", "backend", "worker"}
BACKENDS = ("backend", "worker")
# Variables read in backend/ that the containers do not use, and why.
NOT_FOR_CONTAINERS = {"LS_VENV": "bench-backend only: where a local Label Studio is installed"}
# Defaults that differ from Settings' own in the compose file: the other services' addresses and
# the volume holding MODEL_DIR.
DOCKER_OVERRIDES = {"label_studio_url", "redis_url", "model_dir"}


@pytest.fixture(scope="module")
def compose():
    return files.compose()


@pytest.fixture(scope="module")
def services(compose):
    return compose["services"]


def _env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    assert isinstance(env, dict), "use the mapping form of environment (KEY: value)"
    return env


def test_every_service_is_there(services):
    assert SERVICES <= set(services)


def test_restart_policies(services):
    for name in SERVICES:
        assert services[name].get("restart") == "unless-stopped", name


def test_named_volumes_declared_and_used(compose, services):
    declared = set(compose["volumes"])
    used: dict[str, set[str]] = {}
    for _name, service in services.items():
        for spec in service.get("volumes", []):
            source, _, target = str(spec).partition(":")
            if not source.startswith((".", "/", "~")):
                used.setdefault(source, set()).add(files.interpolate(target))
    assert set(used) == declared, "every named volume is declared at the top level and used"
    model_dir = files.interpolate(_env(services["backend"])["MODEL_DIR"])
    assert used["models"] == {model_dir}, "the models volume is mounted at MODEL_DIR"
    assert used["label-studio-data"] == {"/label-studio/data"}
    assert used["postgres-data"] == {"/var/lib/postgresql/data"}
    assert used["redis-data"] == {"/data"}
    for name in BACKENDS:
        assert f"models:{_env(services[name])['MODEL_DIR']}" in services[name]["volumes"], name


def test_every_variable_the_backend_reads_reaches_server_and_worker(services):
    wanted = files.settings_variables() | (files.environ_reads_in_backend() - set(NOT_FOR_CONTAINERS))
    assert "LOG_LEVEL" in wanted and "LABEL_STUDIO_URL" in wanted  # the discovery itself works
    for name in BACKENDS:
        env = _env(services[name])
        missing = wanted - set(env)
        assert not missing, f"{name} lacks {sorted(missing)}"
        for key in wanted:
            var = files.variable(env[key])
            assert var is not None and var[0] == key, f"{name}: {key} should be ${{{key}:-...}}, is {env[key]!r}"


def test_server_and_worker_share_image_and_settings(services):
    backend, worker = services["backend"], services["worker"]
    assert backend["environment"] == worker["environment"]
    assert backend["image"] == worker["image"]
    assert backend["build"] == worker["build"]
    assert backend["volumes"] == worker["volumes"]
    assert backend["command"] == ["serve"]
    assert worker["command"] == ["worker"]


def test_compose_defaults_are_the_backends_own(services):
    """With nothing set, the containers get Settings' defaults, except the service addresses."""
    env = {k: files.interpolate(v) for k, v in _env(services["backend"]).items()}
    settings, defaults = Settings.from_env(env), Settings()
    for f in fields(Settings):
        if f.name not in DOCKER_OVERRIDES:
            assert getattr(settings, f.name) == getattr(defaults, f.name), f.name.upper()
    assert settings.label_studio_url == "http://label-studio:8080"
    assert settings.redis_url == "redis://redis:6379/0"
    assert str(settings.model_dir) == files.dockerfile_env()["MODEL_DIR"]
    assert env["LOG_LEVEL"] == "INFO"


def test_addresses_point_at_the_services(services):
    env = {k: files.interpolate(v) for k, v in _env(services["backend"]).items()}
    ls = re.fullmatch(r"http://([\w-]+):(\d+)", env["LABEL_STUDIO_URL"])
    assert ls and ls[1] in services and any(str(p).endswith(f":{ls[2]}") for p in services[ls[1]]["ports"])
    redis = re.fullmatch(r"redis://([\w-]+):6379/\d+", env["REDIS_URL"])
    assert redis and redis[1] == "redis"
    # Label Studio reaches the backend at http://backend:<PORT>, the port gunicorn binds
    assert [files.interpolate(p) for p in services["backend"]["ports"]] == [f"{env['PORT']}:{env['PORT']}"]
    assert env["PORT"] == "9090" and env["HOST"] == "0.0.0.0"


def test_worker_scales_out(services):
    worker = services["worker"]
    assert "container_name" not in worker and "ports" not in worker
    assert worker["healthcheck"] == {"disable": True}  # no HTTP server in a worker
    assert all("container_name" not in s for s in services.values())


def test_worker_gpu_reservation_is_a_commented_block_that_parses():
    text = files.COMPOSE.read_text()
    block = re.search(r"^    # deploy:\n(?:^    #.*\n)+", text, re.M)
    assert block, "commented deploy.resources.reservations.devices block under worker"
    uncommented = re.sub(r"^    # ?", "    ", block[0], flags=re.M)
    enabled = yaml.safe_load(text.replace(block[0], uncommented))
    devices = enabled["services"]["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": 1, "capabilities": ["gpu"]}]


def test_backend_healthcheck_is_the_images(services):
    (check,) = [i for i in files.dockerfile() if i.keyword == "HEALTHCHECK"]
    assert services["backend"]["healthcheck"]["test"] == ["CMD", *check.exec_form()]
    assert services["backend"]["depends_on"]["redis"]["condition"] == "service_healthy"


def test_build_args_match_the_dockerfile(services):
    args = services["backend"]["build"]["args"]
    defaults = files.dockerfile_args()
    assert set(args) == set(defaults)
    for name, value in args.items():
        var = files.variable(value)
        assert var == (name, defaults[name]), name
    context = Path(files.COMPOSE.parent, services["backend"]["build"]["context"])
    assert (context / "Dockerfile").resolve() == files.DOCKERFILE


def test_label_studio_on_postgres(services):
    ls, pg = services["label-studio"], services["postgres"]
    assert ls["image"] == "heartexlabs/label-studio:1.23.2"
    env = {k: files.interpolate(v) for k, v in _env(ls).items()}
    pg_env = {k: files.interpolate(v) for k, v in _env(pg).items()}
    assert env["DJANGO_DB"] == "default"
    assert env["POSTGRE_HOST"] == "postgres" and env["POSTGRE_PORT"] == "5432"
    assert env["POSTGRE_NAME"] == pg_env["POSTGRES_DB"]
    assert env["POSTGRE_USER"] == pg_env["POSTGRES_USER"]
    assert env["POSTGRE_PASSWORD"] == pg_env["POSTGRES_PASSWORD"]
    assert _env(ls)["POSTGRE_PASSWORD"] == _env(pg)["POSTGRES_PASSWORD"]  # one variable for both
    assert ls["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "healthcheck" in pg and "healthcheck" in ls
    assert any(str(p).endswith(":8080") for p in ls["ports"])


def test_label_studio_accepts_a_local_backend_and_knows_the_token(services):
    env = _env(services["label-studio"])
    flat = {k: files.interpolate(v) for k, v in env.items()}
    assert flat["ML_BLOCK_LOCAL_IP"] == "false"          # else http://backend:9090 is refused
    assert flat["SSRF_PROTECTION_ENABLED"] == "false"    # else the automatic /webhook is refused
    assert flat["LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN"] == "true"
    assert "@" in flat["LABEL_STUDIO_USERNAME"] and flat["LABEL_STUDIO_PASSWORD"]
    # the first user's token and the backend's key are one variable
    assert files.variable(env["LABEL_STUDIO_USER_TOKEN"])[0] == "LABEL_STUDIO_API_KEY"
    assert files.variable(_env(services["backend"])["LABEL_STUDIO_API_KEY"])[0] == "LABEL_STUDIO_API_KEY"


def test_redis_persists(services):
    redis = services["redis"]
    assert redis["command"][:1] == ["redis-server"]
    assert " ".join(redis["command"][1:]).find("--appendonly yes") >= 0
    assert "redis-data:/data" in redis["volumes"]
    assert "ports" not in redis and "ports" not in services["postgres"]  # not published on the host


def test_env_example_sets_the_secrets_and_names_real_variables(services):
    text = files.ENV_EXAMPLE.read_text()
    names = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", text, re.M))
    assert {"LABEL_STUDIO_API_KEY", "LABEL_STUDIO_PASSWORD", "POSTGRES_PASSWORD", "TORCH_INDEX"} <= names
    known = set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", files.COMPOSE.read_text()))
    assert names <= known, f"not used by the compose file: {sorted(names - known)}"


def _has_compose() -> bool:
    if shutil.which("docker") is None:
        return False
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    return probe.returncode == 0


@pytest.mark.skipif(not _has_compose(), reason="`docker compose` is not installed here (only parsed with PyYAML)")
def test_docker_compose_config_accepts_it():
    result = subprocess.run(["docker", "compose", "-f", str(files.COMPOSE), "config", "--quiet"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
