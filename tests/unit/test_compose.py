"""docker-compose.yml, deploy/ and the code agree: every installed service runs, with real setting names.

The compose file is written by hand (readable, with YAML anchors); these tests make it strict: a
service without a block, a misspelt GYRE_* variable, a port that differs from the service's
settings or a service Prometheus does not scrape fails here, long before anyone runs Docker.
"""

from __future__ import annotations

import base64
import importlib.util
import shutil
import string
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from gyre_common.artifacts import ArtifactSettings
from gyre_common.service import ServiceSpec, discover_services
from gyre_common.settings import DatabaseSettings, KafkaSettings, TelemetrySettings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
INFRASTRUCTURE = {"kafka", "postgres", "otel-collector", "prometheus", "init"}
SERVICES = discover_services()


def _load_generator() -> ModuleType:
    path = ROOT / "scripts" / "generate_config_docs.py"
    spec = importlib.util.spec_from_file_location("generate_config_docs", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _known_variables() -> set[str]:
    """Every environment variable some settings class reads."""
    gen = _load_generator()
    return {env for section in gen.all_sections() for env in gen.env_names(section).values()}


KNOWN_VARIABLES = _known_variables()


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def _services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    services = compose["services"]
    assert isinstance(services, dict)
    return services


def _environment(block: dict[str, Any]) -> dict[str, str]:
    env = block.get("environment") or {}
    # The dict form is the one used here (it merges with anchors); a list would defeat that.
    assert isinstance(env, dict), "use the mapping form of `environment`"
    return {str(key): str(value) for key, value in env.items()}


def _port_fields(spec: ServiceSpec) -> dict[str, int]:
    """Field name -> default of every ``*_port`` setting of the service."""
    return {name: int(field.default) for name, field in spec.settings.model_fields.items()
            if name.endswith("_port")}


def _host_fields(spec: ServiceSpec) -> list[str]:
    """Every ``*_host`` (bind address) setting of the service."""
    return [name for name in spec.settings.model_fields if name.endswith("_host")]


def _uses_kafka(spec: ServiceSpec) -> bool:
    """The runner connects to the broker (and checks it for readiness) only for a service with topics."""
    return bool(spec.consumes or spec.produces)


def _uses_database(spec: ServiceSpec) -> bool:
    """The runner opens a pool (and checks it for readiness) only for a service with a schema."""
    return spec.schema is not None


def _compose_port(spec: ServiceSpec, compose: dict[str, Any], field: str) -> int:
    block = _services(compose).get(spec.name)
    assert block is not None, f"docker-compose.yml has no block for service {spec.name}"
    env = _environment(block)
    name = spec.settings.env_name(field)
    assert name in env, f"docker-compose.yml service {spec.name}: set {name}"
    return int(env[name])


# ----- services ----------------------------------------------------------------------------------------


def test_one_block_per_installed_service(compose: dict[str, Any]) -> None:
    blocks = set(_services(compose)) - INFRASTRUCTURE
    assert blocks == {spec.name for spec in SERVICES}, (
        "docker-compose.yml must have one block per installed service (template at the top of the file)"
    )


def test_service_blocks(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for spec in SERVICES:
        where = f"docker-compose.yml service {spec.name}"
        assert spec.name in services, f"{where}: missing"
        block = services[spec.name]
        build = block.get("build")
        assert isinstance(build, dict), f"{where}: build"
        assert build.get("context") == "." and build.get("dockerfile") == "deploy/Dockerfile", where
        assert build.get("args", {}).get("SERVICE") == spec.name, f"{where}: build arg SERVICE"
        assert build.get("target", "service") == "service", where
        # deploy/Dockerfile runs `python -m gyre_<SERVICE>` unless the block says otherwise.
        command = block.get("command") or ["python", "-m", f"gyre_{spec.name}"]
        assert command[-2:] == ["-m", spec.module], f"{where}: must run `python -m {spec.module}`"

        env = _environment(block)
        assert env.get("OTEL_SERVICE_NAME") == spec.name, where
        for field in _host_fields(spec):
            # In a container, loopback is unreachable from the other containers and the host.
            variable = spec.settings.env_name(field)
            assert env.get(variable) == "0.0.0.0", f"{where}: {variable}"
        for field in _port_fields(spec):
            assert spec.settings.env_name(field) in env, f"{where}: set {spec.settings.env_name(field)}"
        kafka, database = _uses_kafka(spec), _uses_database(spec)
        kafka_variable = KafkaSettings.env_name("bootstrap_servers")
        database_variable = DatabaseSettings.env_name("url")
        if kafka:
            assert env.get(kafka_variable) == "kafka:9092", f"{where}: {kafka_variable}"
        else:
            assert kafka_variable not in env, f"{where}: declares no topics, so needs no {kafka_variable}"
        if database:
            assert urlsplit(env.get(database_variable, "")).hostname == "postgres", f"{where}: {database_variable}"
        else:
            # No schema: the runner opens no pool, and the container needs no database password.
            assert database_variable not in env, f"{where}: has no schema, so needs no {database_variable}"
        assert env.get(TelemetrySettings.env_name("otlp_endpoint")) == "http://otel-collector:4317", where

        http_port = _compose_port(spec, compose, "http_port")
        test = block.get("healthcheck", {}).get("test")
        assert test == ["CMD", "gyre-probe", f"http://127.0.0.1:{http_port}/readyz"], f"{where}: healthcheck"

        depends = block.get("depends_on")
        assert isinstance(depends, dict), f"{where}: depends_on"
        # Wait for exactly the infrastructure the service uses: the broker for topics, the database
        # for a schema, and `init` (topics created, migrations applied) for either.
        expected = {"kafka": kafka, "postgres": database, "init": kafka or database}
        conditions = {"kafka": "service_healthy", "postgres": "service_healthy",
                      "init": "service_completed_successfully"}
        for target, needed in expected.items():
            if needed:
                assert depends.get(target) == {"condition": conditions[target]}, f"{where}: depends_on {target}"
            else:
                assert target not in depends, f"{where}: need not wait for {target}"


LOOPBACK = ("127.0.0.1", "localhost", "[::1]")


def test_no_service_is_left_on_loopback(compose: dict[str, Any]) -> None:
    """A setting whose default points at loopback (another service's address, a bind host) must be set.

    In a container, 127.0.0.1 is the container itself: defaults made for `make up` are wrong there.
    """
    for spec in SERVICES:
        env = _environment(_services(compose)[spec.name])
        for name, field in spec.settings.model_fields.items():
            if isinstance(field.default, str) and any(host in field.default for host in LOOPBACK):
                variable = spec.settings.env_name(name)
                assert variable in env, f"{spec.name}: set {variable} (default {field.default!r} is loopback)"
                assert not any(host in env[variable] for host in LOOPBACK), f"{spec.name}: {variable}"


def _address_problems(spec: ServiceSpec, env: dict[str, str]) -> tuple[int, list[str]]:
    """Addresses of other Gyre services in ``spec``'s own variables, and those at the wrong port.

    ``host:port`` is a gRPC address (the target's gRPC port); ``http://host:port`` its HTTP port.
    """
    ports = {other.name: _port_fields(other) for other in SERVICES}
    checked, problems = 0, []
    for variable, value in env.items():
        if not variable.startswith(f"GYRE_{spec.name.upper()}_") or ":" not in value:
            continue
        url = "://" in value
        split = urlsplit(value if url else f"//{value}")
        if split.hostname in ports:
            checked += 1
            expected = ports[split.hostname]["http_port" if url else "grpc_port"]
            if split.port != expected:
                problems.append(f"{spec.name}: {variable}={value}, expected port {expected}")
    return checked, problems


def test_service_addresses_point_at_service_ports(compose: dict[str, Any]) -> None:
    checked = 0
    for spec in SERVICES:
        count, problems = _address_problems(spec, _environment(_services(compose)[spec.name]))
        assert problems == []
        checked += count
    assert checked or len(SERVICES) < 2, "no inter-service address found: is the check still looking?"


def test_artifacts_root_is_on_the_shared_volume(compose: dict[str, Any]) -> None:
    """Every service told where artifacts are has the shared volume mounted there (and only there)."""
    variable = ArtifactSettings.env_name("root")
    for spec in SERVICES:
        block = _services(compose)[spec.name]
        mounts = {volume.split(":")[1]: volume.split(":")[0] for volume in block.get("volumes", [])}
        root = _environment(block).get(variable)
        if root is None:
            assert "artifacts" not in mounts.values(), f"{spec.name}: mounts artifacts but sets no {variable}"
        else:
            assert mounts.get(root) == "artifacts", f"{spec.name}: {variable}={root} is not the artifacts volume"


def test_service_ports_match_settings_and_do_not_clash(compose: dict[str, Any]) -> None:
    taken: dict[int, str] = {}
    for spec in SERVICES:
        for field, default in _port_fields(spec).items():
            port = _compose_port(spec, compose, field)
            if default:
                assert port == default, f"{spec.name}: {field} is {default} in its settings, {port} here"
            assert port not in taken, f"port {port} of {spec.name} is already {taken[port]}'s"
            taken[port] = spec.name


def test_every_gyre_variable_exists(compose: dict[str, Any]) -> None:
    used = {(name, key) for name, block in _services(compose).items() for key in _environment(block)}
    unknown = sorted(f"{name}: {key}" for name, key in used
                     if key.startswith("GYRE_") and key not in KNOWN_VARIABLES)
    assert unknown == [], "variables no settings class reads (misspelt?)"


# ----- infrastructure ------------------------------------------------------------------------------------


def test_kafka_runs_kraft(compose: dict[str, Any]) -> None:
    kafka = _services(compose)["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    env = _environment(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"].startswith(f"{env['KAFKA_NODE_ID']}@kafka:")
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in env["KAFKA_LISTENERS"]
    assert "://kafka:9092" in env["KAFKA_ADVERTISED_LISTENERS"]
    # kafka-storage.sh only accepts a base64url-encoded UUID (16 bytes) as cluster id.
    assert len(base64.urlsafe_b64decode(env["CLUSTER_ID"] + "==")) == 16
    test = " ".join(kafka["healthcheck"]["test"])
    assert "kafka-broker-api-versions.sh" in test or "kafka-topics.sh" in test


def test_postgres(compose: dict[str, Any]) -> None:
    postgres = _services(compose)["postgres"]
    assert postgres["image"] == "postgres:16"
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in postgres["volumes"])
    user = _environment(postgres)["POSTGRES_USER"]
    url = urlsplit(_environment(_services(compose)["init"])[DatabaseSettings.env_name("url")])
    assert url.username == user and url.path == "/" + _environment(postgres)["POSTGRES_DB"]


def test_init_job(compose: dict[str, Any]) -> None:
    init = _services(compose)["init"]
    assert init["build"] == {"context": ".", "dockerfile": "deploy/Dockerfile", "target": "init"}
    assert init["command"] == ["gyre-stack", "init"]
    assert init["restart"] == "no"
    assert init["depends_on"] == {"kafka": {"condition": "service_healthy"},
                                  "postgres": {"condition": "service_healthy"}}
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text(encoding="utf-8")
    assert "AS init" in dockerfile and "AS service" in dockerfile


def test_depends_on_conditions_fit_their_targets(compose: dict[str, Any]) -> None:
    services = _services(compose)
    for name, block in services.items():
        for target, rule in (block.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = rule["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health; it has no check"
            elif condition == "service_completed_successfully":
                assert services[target].get("restart") == "no", f"{target} must be a one-shot job"
            else:
                assert condition == "service_started"
                assert "healthcheck" not in services[target], f"{name} should wait for {target} to be healthy"


def test_healthchecks_where_the_image_allows(compose: dict[str, Any]) -> None:
    services = _services(compose)
    # The collector image is distroless: nothing inside it could run a healthcheck.
    without = {name for name, block in services.items() if "healthcheck" not in block}
    assert without == {"otel-collector", "init"}


def test_otel_collector_pipelines(compose: dict[str, Any]) -> None:
    collector = _services(compose)["otel-collector"]
    assert collector["image"].startswith("otel/opentelemetry-collector-contrib:")
    assert any(volume.startswith("./deploy/otel-collector.yaml:") for volume in collector["volumes"])
    config = yaml.safe_load((ROOT / "deploy" / "otel-collector.yaml").read_text(encoding="utf-8"))
    assert config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(":4317")
    pipelines = config["service"]["pipelines"]
    assert "prometheus" in pipelines["metrics"]["exporters"]
    assert "debug" in pipelines["traces"]["exporters"]
    for pipeline in pipelines.values():
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline.get(kind, [])) <= set(config.get(kind) or {}), f"undeclared {kind}"


def test_prometheus_scrapes_every_service(compose: dict[str, Any]) -> None:
    prometheus = _services(compose)["prometheus"]
    assert any(volume.startswith("./deploy/prometheus.yml:") for volume in prometheus["volumes"])
    config = yaml.safe_load((ROOT / "deploy" / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    collector_targets = [t for group in jobs["otel-collector"]["static_configs"] for t in group["targets"]]
    assert collector_targets == ["otel-collector:8889"]
    gyre = jobs["gyre"]
    assert gyre.get("metrics_path", "/metrics") == "/metrics"
    scraped = {target: group.get("labels", {}).get("service")
               for group in gyre["static_configs"] for target in group["targets"]}
    expected = {f"{spec.name}:{_compose_port(spec, compose, 'http_port')}": spec.name for spec in SERVICES}
    assert scraped == expected


def test_compose_config_is_valid() -> None:
    """`docker compose config` parses the file; needs the compose plugin, not a running engine."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker client here has no compose plugin to validate with")
    result = subprocess.run([docker, "compose", "-f", str(COMPOSE_FILE), "config", "--quiet"],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr


# ----- Kubernetes ------------------------------------------------------------------------------------------

K8S = ROOT / "deploy" / "k8s"


def _documents(path: Path, text: str | None = None) -> list[dict[str, Any]]:
    loaded = yaml.safe_load_all(text if text is not None else path.read_text(encoding="utf-8"))
    return [doc for doc in loaded if doc]


def _render_template(name: str, http_port: int, grpc_port: int) -> list[dict[str, Any]]:
    template = string.Template((K8S / "service.template.yaml").read_text(encoding="utf-8"))
    text = template.substitute(SERVICE=name, SERVICE_UPPER=name.upper(),
                               HTTP_PORT=http_port, GRPC_PORT=grpc_port)
    return _documents(K8S / "service.template.yaml", text)


def test_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))
    manifests = {str(path.relative_to(K8S)) for path in K8S.rglob("*.yaml")}
    assert set(kustomization["resources"]) == manifests - {"kustomization.yaml", "service.template.yaml"}
    kinds = {doc["kind"] for resource in kustomization["resources"] for doc in _documents(K8S / resource)}
    assert {"Namespace", "ConfigMap"} <= kinds


def test_k8s_variables_exist() -> None:
    for path in sorted(K8S.rglob("*.yaml")):
        if path.name == "service.template.yaml":
            continue
        for doc in _documents(path):
            keys = set((doc.get("data") or {}) if doc["kind"] == "ConfigMap" else ())
            for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                keys |= {item["name"] for item in container.get("env", [])}
            unknown = sorted(key for key in keys if key.startswith("GYRE_") and key not in KNOWN_VARIABLES)
            assert unknown == [], f"{path.name}: variables no settings class reads"


def test_k8s_service_template() -> None:
    # Rendered for every installed service, or for a stand-in while there is none.
    targets = [(spec.name, _port_fields(spec).get("http_port") or 7999,
                _port_fields(spec).get("grpc_port") or 7998) for spec in SERVICES]
    targets = targets or [("example", 7999, 7998)]
    for name, http_port, grpc_port in targets:
        deployment, service = _render_template(name, http_port, grpc_port)
        assert (deployment["kind"], service["kind"]) == ("Deployment", "Service")
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        assert ports == {"http": http_port, "grpc": grpc_port}
        env = {item["name"]: item["value"] for item in container["env"]}
        assert env[f"GYRE_{name.upper()}_HTTP_PORT"] == str(http_port)
        assert env[f"GYRE_{name.upper()}_HTTP_HOST"] == env[f"GYRE_{name.upper()}_GRPC_HOST"] == "0.0.0.0"
        assert {ref.get("configMapRef", {}).get("name") for ref in container["envFrom"]} >= {"gyre-shared"}
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
        if SERVICES:
            assert set(env) - {"OTEL_SERVICE_NAME"} <= KNOWN_VARIABLES


def test_k8s_manifest_per_service() -> None:
    """Every installed service has services/<name>.yaml: a probed Deployment and its Service, set for a cluster."""
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text(encoding="utf-8"))["resources"])
    for spec in SERVICES:
        path = K8S / "services" / f"{spec.name}.yaml"
        where = f"deploy/k8s/services/{spec.name}.yaml"
        assert path.exists(), f"{where}: render it from service.template.yaml"
        assert f"services/{spec.name}.yaml" in listed, f"{where}: list it in kustomization.yaml"
        by_kind = {doc["kind"]: doc for doc in _documents(path)}
        assert set(by_kind) == {"Deployment", "Service"}, where
        deployment, service = by_kind["Deployment"], by_kind["Service"]
        assert deployment["metadata"]["name"] == f"gyre-{spec.name}", where
        # Other pods reach the service by this name: the addresses below rely on it.
        assert service["metadata"]["name"] == spec.name, where
        assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"], where

        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == f"gyre-{spec.name}:0.1.0", where
        for probe, path_ in (("startupProbe", "/healthz"), ("readinessProbe", "/readyz"),
                             ("livenessProbe", "/healthz")):
            assert container[probe]["httpGet"] == {"path": path_, "port": "http"}, f"{where}: {probe}"
        ports = _port_fields(spec)
        assert {port["name"]: port["containerPort"] for port in container["ports"]} == {
            "http": ports["http_port"], "grpc": ports["grpc_port"]}, f"{where}: ports"
        assert {port["name"]: port["port"] for port in service["spec"]["ports"]} == {
            "http": ports["http_port"], "grpc": ports["grpc_port"]}, f"{where}: Service ports"

        env = {item["name"]: str(item["value"]) for item in container["env"]}
        assert env.get("OTEL_SERVICE_NAME") == spec.name, where
        for field in _host_fields(spec):
            assert env.get(spec.settings.env_name(field)) == "0.0.0.0", f"{where}: {spec.settings.env_name(field)}"
        for field, default in ports.items():
            assert env.get(spec.settings.env_name(field)) == str(default), f"{where}: {spec.settings.env_name(field)}"
        for name, field in spec.settings.model_fields.items():
            if isinstance(field.default, str) and any(host in field.default for host in LOOPBACK):
                variable = spec.settings.env_name(name)
                assert variable in env, f"{where}: set {variable} (default {field.default!r} is loopback)"
                assert not any(host in env[variable] for host in LOOPBACK), f"{where}: {variable}"
        assert _address_problems(spec, env)[1] == [], where
        sources = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
        assert "gyre-shared" in sources, where
        if _uses_database(spec):
            assert "gyre-database" in sources, f"{where}: the database URL comes from Secret gyre-database"
