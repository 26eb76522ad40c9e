"""Offline tests of the deployment: every overlay renders and validates, and
every number and rule of REQUIREMENTS.md sits where docs/requirements.md says.
A change to any of them fails here.

Run through k8s/tests/run, which provides the tools (kubectl, kubernetes-validate,
checkov, yamllint, promtool, node with the CRD models).
"""

import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
OVERLAYS = ["development", "staging", "production"]
# Kinds that are not built into Kubernetes: validated by their own models.
CRD_GROUPS = ("monitoring.coreos.com", "external-secrets.io", "security-profiles-operator.x-k8s.io")


def render(path: Path) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(path)], check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    return {env: render(K8S / "overlays" / env) for env in OVERLAYS}


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(objs: list[dict]) -> dict:
    return one(objs, "Deployment", "petstore")["spec"]["template"]["spec"]["containers"][0]


def env_of(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c["env"]}


def is_crd(obj: dict) -> bool:
    return obj["apiVersion"].split("/")[0] in CRD_GROUPS


# --- Rendering and validation -------------------------------------------------


@pytest.mark.parametrize("env", OVERLAYS)
def test_overlay_renders_into_its_own_namespace(rendered, env):
    objs = rendered[env]
    ns = one(objs, "Namespace")
    assert ns["metadata"]["name"] == f"petstore-{env}"
    for obj in objs:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == f"petstore-{env}", obj["metadata"]["name"]


@pytest.mark.parametrize("env", OVERLAYS)
def test_built_in_objects_are_valid_kubernetes_1_32(rendered, env, tmp_path):
    builtins = [o for o in rendered[env] if not is_crd(o)]
    path = tmp_path / f"{env}.yaml"
    path.write_text(yaml.safe_dump_all(builtins))
    result = subprocess.run(
        ["kubernetes-validate", "--strict", "-k", "1.32.0", str(path)], capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # A WARN means "no schema for this kind": on a built-in kind that is a failure.
    assert "WARN" not in output, output
    assert output.count("INFO") >= len(builtins), output


@pytest.mark.parametrize("env", OVERLAYS)
def test_custom_resources_match_their_crd_models(rendered, env):
    crds = [o for o in rendered[env] if is_crd(o) and not o["apiVersion"].startswith("security-profiles")]
    assert crds, "ServiceMonitor and PrometheusRule at least"
    result = subprocess.run(
        ["node", str(K8S / "tests" / "validate_crds.mjs")],
        input=json.dumps(crds), capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("OK ") == len(crds), result.stdout


def test_seccomp_profile_resource_lists_exactly_the_derived_syscalls(rendered):
    profile = json.loads((K8S / "seccomp" / "petstore.json").read_text())
    allowed = set(profile["syscalls"][0]["names"])
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert {"accept4", "epoll_wait", "mmap", "futex", "execve"} <= allowed or {"accept4", "epoll_pwait"} <= allowed
    assert len(allowed) < 120, "an allowlist, not everything"
    for env in ["staging", "production"]:
        sp = one(rendered[env], "SeccompProfile", "petstore")
        assert sp["apiVersion"] == "security-profiles-operator.x-k8s.io/v1beta1"
        assert sp["spec"]["defaultAction"] == "SCMP_ACT_ERRNO"
        names = {n for rule in sp["spec"]["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" for n in rule["names"]}
        assert names == allowed, "regenerate with k8s/seccomp/derive.sh"


@pytest.mark.parametrize("env", OVERLAYS)
def test_checkov_finds_nothing(rendered, env, tmp_path):
    (tmp_path / f"{env}.yaml").write_text(yaml.safe_dump_all(rendered[env]))
    result = subprocess.run(
        ["checkov", "-d", str(tmp_path), "--framework", "kubernetes", "--config-file",
         str(K8S / "tests" / "checkov.yaml"), "--output", "json", "--quiet"],
        capture_output=True, text=True, env={**os.environ, "BC_SKIP_MAPPING": "TRUE"},
    )
    report = json.loads(result.stdout)
    reports = report if isinstance(report, list) else [report]
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for r in reports for c in r["results"]["failed_checks"]]
    assert not failed, "\n".join(failed)
    assert sum(r["summary"]["passed"] for r in reports) > 50


def test_yaml_sources_are_lint_clean():
    result = subprocess.run(
        ["yamllint", "--strict", "-c", str(K8S / "tests" / "yamllint.yaml"), str(K8S), str(ROOT / ".github")],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- The requirements, number by number ---------------------------------------


def test_every_object_carries_the_required_tags(rendered):
    for env, objs in rendered.items():
        for obj in objs:
            labels = obj["metadata"].get("labels", {})
            where = f"{env}: {obj['kind']} {obj['metadata']['name']}"
            assert labels.get("Environment") == env, where
            assert labels.get("Application") == "pet-store", where
            assert labels.get("Owner"), where
            assert labels.get("Cost-Center"), where


@pytest.mark.parametrize("env", OVERLAYS)
def test_namespace_enforces_restricted_pod_security(rendered, env):
    labels = one(rendered[env], "Namespace")["metadata"]["labels"]
    for mode in ["enforce", "audit", "warn"]:
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


@pytest.mark.parametrize("env", OVERLAYS)
def test_resources_ports_and_probes(rendered, env):
    c = container(rendered[env])
    assert c["resources"]["requests"] == {"cpu": "250m", "memory": "256Mi", "ephemeral-storage": "1Gi"}
    assert c["resources"]["limits"] == {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8080, "admin": 9090}
    assert c["livenessProbe"]["httpGet"] == {"path": "/api/v1/health/live", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/api/v1/health/ready", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/api/v1/health/live"
    env_vars = env_of(c)
    assert env_vars["PORT"]["value"] == "8080" and env_vars["ADMIN_PORT"]["value"] == "9090"


@pytest.mark.parametrize("env", OVERLAYS)
def test_rolling_update_is_25_percent_both_ways(rendered, env):
    strategy = one(rendered[env], "Deployment")["spec"]["strategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}


@pytest.mark.parametrize("env", OVERLAYS)
def test_termination_grace_covers_the_services_drain(rendered, env):
    pod = one(rendered[env], "Deployment")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    e = env_of(c)
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    grace = int(e["SHUTDOWN_GRACE_MS"]["value"]) / 1000
    drain = int(e["SHUTDOWN_DRAIN_MS"]["value"]) / 1000
    assert pod["terminationGracePeriodSeconds"] > pre_stop + grace + drain


@pytest.mark.parametrize("env", OVERLAYS)
def test_pod_security_context(rendered, env):
    pod = one(rendered[env], "Deployment")["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert pod["automountServiceAccountToken"] is False
    assert one(rendered[env], "ServiceAccount", "petstore")["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] >= 10000 and pod["securityContext"]["runAsGroup"] >= 10000
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert "add" not in sc["capabilities"]
    seccomp = pod["securityContext"]["seccompProfile"]
    if env == "development":
        assert seccomp == {"type": "RuntimeDefault"}
    else:
        assert seccomp == {"type": "Localhost", "localhostProfile": f"operator/petstore-{env}/petstore.json"}


@pytest.mark.parametrize("env", OVERLAYS)
def test_spread_across_nodes_and_zones_with_a_disruption_budget(rendered, env):
    pod = one(rendered[env], "Deployment")["spec"]["template"]["spec"]
    keys = {t["topologyKey"] for t in pod["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert pod["affinity"]["podAntiAffinity"]
    pdb = one(rendered[env], "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == (0 if env == "development" else 1)


def test_the_hpa_owns_replicas_where_it_exists(rendered):
    assert one(rendered["development"], "Deployment")["spec"]["replicas"] == 1
    assert not [o for o in rendered["development"] if o["kind"] == "HorizontalPodAutoscaler"]
    for env in ["staging", "production"]:
        assert "replicas" not in one(rendered[env], "Deployment")["spec"]
        hpa = one(rendered[env], "HorizontalPodAutoscaler")["spec"]
        assert hpa["scaleTargetRef"]["name"] == "petstore"
        assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 10)
        assert hpa["metrics"] == [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]
        up, down = hpa["behavior"]["scaleUp"], hpa["behavior"]["scaleDown"]
        assert up["policies"] == [{"type": "Pods", "value": 2, "periodSeconds": 60}]
        assert down["policies"] == [{"type": "Pods", "value": 1, "periodSeconds": 300}]
        assert down["stabilizationWindowSeconds"] == 300


@pytest.mark.parametrize("env", OVERLAYS)
def test_service_and_ingress(rendered, env):
    svc = one(rendered[env], "Service", "petstore")["spec"]
    assert svc["type"] == "ClusterIP"
    assert svc["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    ing = one(rendered[env], "Ingress")
    ann = ing["metadata"]["annotations"]
    assert ing["spec"]["ingressClassName"] == "alb"
    assert ann["alb.ingress.kubernetes.io/healthcheck-path"] == "/api/v1/health"
    paths = [p for r in ing["spec"]["rules"] for p in r["http"]["paths"]]
    assert [(p["path"], p["pathType"]) for p in paths] == [("/api/v1", "Prefix")]
    # The admin port is never exposed: only the public Service's http port is a backend.
    assert {(p["backend"]["service"]["name"], p["backend"]["service"]["port"]["name"]) for p in paths} == {("petstore", "http")}
    if env == "development":
        assert "tls" not in ing["spec"]
    else:
        assert ing["spec"]["tls"][0]["hosts"]
        assert "HTTPS" in ann["alb.ingress.kubernetes.io/listen-ports"]
        assert ann["alb.ingress.kubernetes.io/certificate-arn"].startswith("arn:aws:acm:")
        assert ann["alb.ingress.kubernetes.io/ssl-redirect"] == "443"


@pytest.mark.parametrize("env", OVERLAYS)
def test_network_policies_deny_by_default_and_allow_only_what_is_needed(rendered, env):
    policies = [o for o in rendered[env] if o["kind"] == "NetworkPolicy"]
    deny = one(policies, "NetworkPolicy", "default-deny-all")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    ingress_ports, egress_ports = set(), set()
    for p in policies:
        for rule in p["spec"].get("ingress", []):
            ports = {port["port"] for port in rule["ports"]}
            ingress_ports |= ports
            if 9090 in ports:
                assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
        for rule in p["spec"].get("egress", []):
            egress_ports |= {port["port"] for port in rule["ports"]}
    assert ingress_ports == {8080, 9090}
    assert egress_ports == ({53} if env == "development" else {53, 5432})


@pytest.mark.parametrize("env", OVERLAYS)
def test_configuration_and_secrets(rendered, env):
    cm = one(rendered[env], "ConfigMap", "app-config")["data"]
    assert set(cm) == {"CORS_ORIGINS", "API_VERSION", "PAGINATION_LIMIT"}
    e = env_of(container(rendered[env]))
    for key in cm:
        assert e[key]["valueFrom"]["configMapKeyRef"] == {"name": "app-config", "key": key}
    assert e["ENVIRONMENT"]["value"] == env
    assert e["LOG_LEVEL"]["value"] in ("INFO", "DEBUG")
    assert not [o for o in rendered[env] if o["kind"] == "Secret"], "no secret is committed"
    if env == "development":
        assert e["DATABASE_URL"]["value"].startswith("sqlite://")
    else:
        assert e["DATABASE_URL"]["value"].startswith("postgres://")
        assert "@" not in e["DATABASE_URL"]["value"], "credentials come from the secret"
        for key in ["DB_USER", "DB_PASSWORD"]:
            assert e[key]["valueFrom"]["secretKeyRef"] == {"name": "db-credentials", "key": key}


def test_production_reads_credentials_from_secrets_manager(rendered):
    es = one(rendered["production"], "ExternalSecret", "db-credentials")["spec"]
    assert es["target"]["name"] == "db-credentials"
    assert {d["secretKey"] for d in es["data"]} == {"DB_USER", "DB_PASSWORD"}
    store = one(rendered["production"], "SecretStore")["spec"]["provider"]["aws"]
    assert store["service"] == "SecretsManager"
    assert not [o for o in rendered["staging"] if o["kind"] == "ExternalSecret"]
    template = yaml.safe_load((K8S / "templates" / "db-credentials.yaml").read_text())
    assert set(template["stringData"]) == {"DB_USER", "DB_PASSWORD"}
    assert set(template["stringData"].values()) == {"REPLACE_ME"}


@pytest.mark.parametrize("env", OVERLAYS)
def test_irsa_rbac_quota_and_limits(rendered, env):
    sa = one(rendered[env], "ServiceAccount", "petstore")
    assert sa["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith("arn:aws:iam::")
    role = one(rendered[env], "Role", "petstore-deployer")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
        assert "delete" not in rule["verbs"], rule
        # One secret only, read only: the admin token a component rollout needs.
        if "secrets" in rule["resources"]:
            assert (rule["resources"], rule.get("resourceNames"), rule["verbs"]) == (["secrets"], ["petstore-admin"], ["get"]), rule
    assert not [b for b in rendered[env] if b["kind"] == "RoleBinding" and any(s.get("name") == "petstore" for s in b["subjects"])]
    quota = one(rendered[env], "ResourceQuota")["spec"]["hard"]
    assert quota["limits.cpu"] == "7" and quota["pods"] == "14"
    limits = one(rendered[env], "LimitRange")["spec"]["limits"][0]
    assert limits["default"] == {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"}
    assert limits["defaultRequest"] == {"cpu": "250m", "memory": "256Mi", "ephemeral-storage": "1Gi"}


# --- Monitoring --------------------------------------------------------------


def documented_metrics() -> set[str]:
    return set(re.findall(r"^\| `([a-z_]+)` \|", (ROOT / "docs" / "metrics.md").read_text(), re.M))


def rules(objs: list[dict]) -> list[dict]:
    return one(objs, "PrometheusRule")["spec"]["groups"][0]["rules"]


def test_alerts_use_the_documented_metric_names_and_thresholds(rendered):
    objs = rendered["production"]
    by_name = {r["alert"]: r for r in rules(objs)}
    assert set(by_name) == {"PetstoreHighErrorRate", "PetstoreHighLatencyP95", "PetstoreHighCpu", "PetstoreHighMemory", "PetstorePodRestarts"}
    documented = documented_metrics() | {"kube_pod_container_status_restarts_total"}
    for alert in by_name.values():
        for metric in re.findall(r"\b((?:petstore|process|kube)_[a-z_]+?)(?:_bucket)?\b", alert["expr"]):
            assert metric in documented, f"{alert['alert']} uses {metric}, not in docs/metrics.md"
    assert "> 0.01" in by_name["PetstoreHighErrorRate"]["expr"]
    assert "histogram_quantile(0.95" in by_name["PetstoreHighLatencyP95"]["expr"] and "> 0.5" in by_name["PetstoreHighLatencyP95"]["expr"]
    # The CPU and memory alerts divide by the container's limits: keep them in step.
    limits = container(objs)["resources"]["limits"]
    assert limits["cpu"] == "500m" and "/ 0.5 > 0.85" in by_name["PetstoreHighCpu"]["expr"]
    assert limits["memory"] == "512Mi" and "/ (512 * 1024 * 1024) > 0.85" in by_name["PetstoreHighMemory"]["expr"]
    sm = one(objs, "ServiceMonitor")["spec"]
    assert sm["endpoints"][0]["port"] == "admin" and sm["endpoints"][0]["path"] == "/metrics"


def test_alert_rules_fire_above_and_stay_silent_below_their_thresholds(rendered, tmp_path):
    groups = one(rendered["production"], "PrometheusRule")["spec"]["groups"]
    (tmp_path / "full.yaml").write_text(yaml.safe_dump({"groups": groups}))
    check = subprocess.run(["promtool", "check", "rules", str(tmp_path / "full.yaml")], capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    stripped = [{**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]} for g in groups]
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": stripped}))
    shutil.copy(K8S / "tests" / "alerts.test.yaml", tmp_path / "alerts.test.yaml")
    test = subprocess.run(["promtool", "test", "rules", str(tmp_path / "alerts.test.yaml")], capture_output=True, text=True)
    assert test.returncode == 0, test.stdout + test.stderr
    assert test.stdout.count("SUCCESS") >= 1 or "SUCCESS" in test.stderr


def test_alert_tests_cover_every_alert(rendered):
    tests = yaml.safe_load((K8S / "tests" / "alerts.test.yaml").read_text())["tests"]
    tested = {t["alertname"] for case in tests for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert tested == {r["alert"] for r in rules(rendered["production"])}


def test_fluent_bit_ships_json_logs_to_cloudwatch_for_30_days():
    objs = render(K8S / "cluster" / "fluent-bit")
    conf = one(objs, "ConfigMap", "fluent-bit-petstore")["data"]["fluent-bit.conf"]
    sections = [
        (header, dict(re.findall(r"^\s+(\S+)\s+(.+?)\s*$", body, re.M)))
        for header, body in re.findall(r"^\[(\w+)\]\n((?:(?!\[).*\n?)*)", conf, re.M)
    ]
    outputs = [s for h, s in sections if h == "OUTPUT"]
    filters = [s for h, s in sections if h == "FILTER"]
    assert [o["Name"] for o in outputs] == ["cloudwatch_logs"]
    assert outputs[0]["log_retention_days"] == "30"
    assert any(f["Name"] == "kubernetes" and f["Merge_Log"] == "On" and f["Merge_Parser"] == "json" for f in filters)


# --- Cluster, database, pipeline ---------------------------------------------


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def test_cluster_node_group_and_irsa():
    cfg = load_all(K8S / "cluster" / "cluster.yaml")[0]
    assert cfg["iam"]["withOIDC"] is True
    ng = cfg["managedNodeGroups"][0]
    assert (ng["instanceType"], ng["amiFamily"], ng["minSize"], ng["maxSize"]) == ("t3.small", "AmazonLinux2", 2, 5)
    vpc_cni = next(a for a in cfg["addons"] if a["name"] == "vpc-cni")
    assert json.loads(vpc_cni["configurationValues"])["enableNetworkPolicy"] == "true"
    for tags in [cfg["metadata"]["tags"], ng["tags"]]:
        assert {"Environment", "Application", "Owner", "Cost-Center"} <= set(tags)
        assert tags["Application"] == "pet-store"


def test_cluster_autoscaler_thresholds():
    values = yaml.safe_load((K8S / "cluster" / "cluster-autoscaler-values.yaml").read_text())
    assert values["extraArgs"]["scale-down-utilization-threshold"] == 0.4
    # The 80% scale-up threshold: a placeholder holding 20% of a t3.small (2 vCPU).
    placeholder = next(d for d in load_all(K8S / "cluster" / "overprovisioning.yaml") if d["kind"] == "Deployment")
    cpu = placeholder["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
    assert int(cpu.rstrip("m")) / 2000 == 0.2


def test_rds_instance_storage_backups_and_tags():
    db = next(d for d in load_all(K8S / "cluster" / "rds.yaml") if d["kind"] == "DBInstance")["spec"]
    assert (db["engine"], db["allocatedStorage"], db["storageType"]) == ("postgres", 20, "gp3")
    assert db["backupRetentionPeriod"] == 7
    assert db["storageEncrypted"] and not db["publiclyAccessible"] and db["deletionProtection"]
    assert {t["key"] for t in db["tags"]} == {"Environment", "Application", "Owner", "Cost-Center"}


def test_pipeline_deploys_development_automatically_and_production_on_approval():
    main = yaml.safe_load((ROOT / ".github" / "workflows" / "main.yaml").read_text())
    assert main[True]["push"]["branches"] == ["main"]  # YAML 1.1 reads `on` as true
    jobs = main["jobs"]
    assert jobs["image"]["needs"] == "test"
    assert "environment" in jobs["deploy-development"]
    assert jobs["deploy-production"]["environment"] == "production"
    deploy = (ROOT / ".github" / "actions" / "deploy" / "action.yaml").read_text()
    assert "rollout status deployment/petstore" in deploy and "--timeout=" in deploy
    assert "rollout undo deployment/petstore" in deploy
    rollback = yaml.safe_load((ROOT / ".github" / "workflows" / "rollback.yaml").read_text())
    assert "workflow_dispatch" in rollback[True]


def test_requirements_map_names_every_number_of_the_requirements_document():
    original = (ROOT / "docs" / "requirements-original.md").read_text()
    mapping = (ROOT / "docs" / "requirements.md").read_text()
    numbers = set(re.findall(r"\d+(?:\.\d+)?", original))
    missing = sorted(n for n in numbers if not re.search(rf"(?<![\d.]){re.escape(n)}(?![\d])", mapping))
    assert not missing, f"numbers of REQUIREMENTS.md not in docs/requirements.md: {missing}"
