"""Offline tests of the service's manifests: every overlay and platform
kustomization renders and validates against the pinned cluster version and
CRDs, and every number and rule of docs/requirements-original.md sits where
docs/requirements.md says. A change to any of them fails here.

Run through k8s/tests/run, which provides the tools (kubectl, kubernetes-validate,
checkov, yamllint, promtool, cfn-lint).
"""

import json
import os
import re
import shutil
import subprocess

import pytest
import yaml

from conftest import K8S, OVERLAYS, ROOT, cluster_config, container, env_of, load_all, one
from crd_schema import load_crds, problems

BUILT_IN_GROUPS = ("", "apps", "batch", "policy", "autoscaling", "networking.k8s.io", "rbac.authorization.k8s.io", "scheduling.k8s.io")


def is_crd(obj: dict) -> bool:
    return obj["apiVersion"].rpartition("/")[0] not in BUILT_IN_GROUPS


def kubernetes_version() -> str:
    return cluster_config()["metadata"]["version"] + ".0"


# --- Rendering and validation -------------------------------------------------


@pytest.mark.parametrize("env", OVERLAYS)
def test_an_overlay_holds_only_objects_of_its_own_namespace(rendered, env):
    # The pipeline's Role is namespaced: a cluster-scoped object (a Namespace,
    # a SeccompProfile) in an overlay is one it cannot apply.
    for obj in rendered[env]:
        assert obj["metadata"].get("namespace") == f"petstore-{env}", f"{obj['kind']} {obj['metadata']['name']}"


@pytest.mark.parametrize("env", OVERLAYS)
def test_the_platform_of_an_environment_is_its_namespace_quota_limits_and_deployer_role(platform, env):
    objs = platform[env]
    assert one(objs, "Namespace")["metadata"]["name"] == f"petstore-{env}"
    assert {o["kind"] for o in objs} == {"Namespace", "ResourceQuota", "LimitRange", "Role", "RoleBinding"}


@pytest.mark.parametrize("env", OVERLAYS)
def test_built_in_objects_are_valid_for_the_clusters_kubernetes_version(rendered, platform, cluster_objects, database_roles, env, tmp_path):
    builtins = [o for o in rendered[env] + platform[env] + cluster_objects + database_roles.get(env, []) if not is_crd(o)]
    path = tmp_path / f"{env}.yaml"
    path.write_text(yaml.safe_dump_all(builtins))
    result = subprocess.run(
        ["kubernetes-validate", "--strict", "-k", kubernetes_version(), str(path)], capture_output=True, text=True
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    # A WARN means "no schema for this kind": on a built-in kind that is a failure.
    assert "WARN" not in output, output
    assert output.count("INFO") >= len(builtins), output


def test_custom_resources_fit_the_crds_of_the_pinned_add_on_versions(rendered, platform, cluster_objects, database_roles):
    crds = load_crds()
    objs = [o for env in OVERLAYS for o in rendered[env] + platform[env] + database_roles.get(env, []) if is_crd(o)]
    objs += [o for o in cluster_objects if is_crd(o)]
    kinds = {o["kind"] for o in objs}
    assert {"ServiceMonitor", "PrometheusRule", "ExternalSecret", "SecretStore", "SeccompProfile", "DBInstance", "FieldExport"} <= kinds
    found = [p for o in objs for p in problems(o, crds)]
    assert not found, "\n".join(found)


def test_the_crd_check_refuses_what_the_api_server_would_refuse(rendered):
    crds = load_crds()
    es = one(rendered["production"], "ExternalSecret", "db-credentials")
    assert not problems(es, crds)
    # external-secrets.io/v1beta1 is no longer served (ESO v0.17+).
    assert "not served" in problems({**es, "apiVersion": "external-secrets.io/v1beta1"}, crds)[0]
    # A field the CRD does not have (kubectl apply validates strictly).
    assert problems({**es, "spec": {**es["spec"], "refreshInterva": "1h"}}, crds)
    # SeccompProfile is cluster-scoped (SPO v0.9+): a namespace is refused.
    sp = load_all(K8S / "cluster" / "seccomp" / "seccompprofiles.yaml")[0]
    assert "Cluster" in problems({**sp, "metadata": {**sp["metadata"], "namespace": "petstore-staging"}}, crds)[0]
    # The CRDs' CEL rules (x-kubernetes-validations) are kept and evaluated:
    # ESO 2.9.0 refuses reserved keys in an AWS store's customSessionTags …
    store = one(rendered["production"], "SecretStore")
    aws = store["spec"]["provider"]["aws"]
    tagged = {**store, "spec": {"provider": {"aws": {**aws, "customSessionTags": {"esoNamespace": "x"}}}}}
    assert any("reserved keys" in p for p in problems(tagged, crds))
    assert not problems({**store, "spec": {"provider": {"aws": {**aws, "customSessionTags": {"team": "x"}}}}}, crds)
    # … and ACK's DBInstance keeps availabilityZone immutable (a transition
    # rule, checked on an update only).
    db = next(o for o in load_all(K8S / "cluster" / "rds" / "production.yaml") if o["kind"] == "DBInstance")
    placed = {**db, "spec": {**db["spec"], "availabilityZone": "eu-west-1a"}}
    assert not problems(placed, crds)
    moved = {**db, "spec": {**db["spec"], "availabilityZone": "eu-west-1b"}}
    assert "immutable" in problems(moved, crds, old=placed)[0]


def test_seccomp_profiles_list_exactly_the_derived_syscalls_and_pods_use_their_own(rendered, cluster_objects):
    profile = json.loads((K8S / "seccomp" / "petstore.json").read_text())
    allowed = set(profile["syscalls"][0]["names"])
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO"
    assert {"accept4", "mmap", "futex"} <= allowed
    assert len(allowed) < 120, "an allowlist, not everything"
    profiles = {o["metadata"]["name"]: o for o in cluster_objects if o["kind"] == "SeccompProfile"}
    for env in ["staging", "production"]:
        pod = one(rendered[env], "Deployment", "petstore")["spec"]["template"]["spec"]
        seccomp = pod["securityContext"]["seccompProfile"]
        assert seccomp["type"] == "Localhost"
        # The operator writes a cluster-scoped profile to operator/<name>.json.
        name = re.fullmatch(r"operator/([a-z0-9-]+)\.json", seccomp["localhostProfile"]).group(1)
        sp = profiles[name]
        assert sp["metadata"]["labels"]["Environment"] == env, "each environment has its own profile"
        assert sp["spec"]["defaultAction"] == "SCMP_ACT_ERRNO"
        names = {n for rule in sp["spec"]["syscalls"] if rule["action"] == "SCMP_ACT_ALLOW" for n in rule["names"]}
        assert names == allowed, "regenerate with k8s/seccomp/derive.sh"


@pytest.mark.parametrize("env", OVERLAYS)
def test_checkov_finds_nothing(rendered, platform, env, tmp_path):
    (tmp_path / f"{env}.yaml").write_text(yaml.safe_dump_all(rendered[env] + platform[env]))
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


def test_every_object_carries_the_required_tags(rendered, platform):
    for env in OVERLAYS:
        for obj in rendered[env] + platform[env]:
            labels = obj["metadata"].get("labels", {})
            where = f"{env}: {obj['kind']} {obj['metadata']['name']}"
            assert labels.get("Environment") == env, where
            assert labels.get("Application") == "pet-store", where
            assert labels.get("Owner"), where
            assert labels.get("Cost-Center"), where


@pytest.mark.parametrize("env", OVERLAYS)
def test_namespace_enforces_restricted_pod_security(platform, env):
    labels = one(platform[env], "Namespace")["metadata"]["labels"]
    for mode in ["enforce", "audit", "warn"]:
        assert labels[f"pod-security.kubernetes.io/{mode}"] == "restricted"


@pytest.mark.parametrize("env", OVERLAYS)
def test_resources_ports_and_probes(rendered, env):
    c = container(rendered[env])
    assert c["resources"]["requests"] == {"cpu": "250m", "memory": "256Mi", "ephemeral-storage": "1Gi"}
    assert c["resources"]["limits"] == {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    # The admin API and /metrics on ports of their own (issue 20).
    assert ports == {"http": 8080, "admin": 9090, "metrics": 9091}
    assert c["livenessProbe"]["httpGet"] == {"path": "/api/v1/health/live", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/api/v1/health/ready", "port": "http"}
    assert c["startupProbe"]["httpGet"]["path"] == "/api/v1/health/live"
    env_vars = env_of(c)
    assert env_vars["PORT"]["value"] == "8080" and env_vars["ADMIN_PORT"]["value"] == "9090"
    assert env_vars["METRICS_PORT"]["value"] == "9091"


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
    for obj in rendered[env]:
        if obj["kind"] not in ("Deployment", "CronJob"):
            continue
        pod = obj["spec"]["template"]["spec"] if obj["kind"] == "Deployment" else obj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] >= 10000 and pod["securityContext"]["runAsGroup"] >= 10000
        for c in pod.get("initContainers", []) + pod["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"] == {"drop": ["ALL"]}
    assert one(rendered[env], "ServiceAccount", "petstore")["automountServiceAccountToken"] is False
    seccomp = one(rendered[env], "Deployment")["spec"]["template"]["spec"]["securityContext"]["seccompProfile"]
    assert seccomp == {"type": "RuntimeDefault"} if env == "development" else seccomp["type"] == "Localhost"


@pytest.mark.parametrize("env", OVERLAYS)
def test_spread_across_nodes_and_zones_with_a_disruption_budget(rendered, env):
    pod = one(rendered[env], "Deployment")["spec"]["template"]["spec"]
    keys = {t["topologyKey"] for t in pod["topologySpreadConstraints"]}
    assert keys == {"topology.kubernetes.io/zone", "kubernetes.io/hostname"}
    assert pod["affinity"]["podAntiAffinity"]
    pdb = one(rendered[env], "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == (0 if env == "development" else 1)


def tolerates(toleration: dict, taint: dict) -> bool:
    # Kubernetes' rule: an empty key with Exists tolerates every taint.
    if toleration.get("effect") not in (None, "", taint["effect"]):
        return False
    if toleration.get("operator") == "Exists":
        return toleration.get("key") in (None, "", taint["key"])
    return toleration.get("key") == taint["key"] and toleration.get("value") == taint["value"]


def test_production_runs_on_its_own_node_group_and_nothing_else_does(rendered):
    groups = {g["name"]: g for g in cluster_config()["managedNodeGroups"]}
    taint = groups["production"]["taints"][0]
    for env in OVERLAYS:
        pod = one(rendered[env], "Deployment")["spec"]["template"]["spec"]
        tolerated = any(tolerates(t, taint) for t in pod.get("tolerations", []))
        assert tolerated == (env == "production"), env
    pod = one(rendered["production"], "Deployment")["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == groups["production"]["labels"]


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
    # TLS for all external traffic, in every environment: the ALB terminates it
    # with an ACM certificate (no Secret, so no spec.tls), HTTP only redirects.
    assert "tls" not in ing["spec"]
    assert json.loads(ann["alb.ingress.kubernetes.io/listen-ports"]) == [{"HTTP": 80}, {"HTTPS": 443}]
    # No placeholder ARN: the controller finds the certificate by host
    # (test_controllers.py, test_each_ingress_host_finds_its_issued_certificate).
    assert "alb.ingress.kubernetes.io/certificate-arn" not in ann
    assert ann["alb.ingress.kubernetes.io/ssl-redirect"] == "443"
    assert ann["alb.ingress.kubernetes.io/scheme"] == ("internal" if env == "development" else "internet-facing")
    assert f"Environment={env}" in ann["alb.ingress.kubernetes.io/tags"]
    hosts = {e: one(rendered[e], "Ingress")["spec"]["rules"][0]["host"] for e in OVERLAYS}
    assert len(set(hosts.values())) == len(OVERLAYS), "each environment its own host (and certificate)"


@pytest.mark.parametrize("env", OVERLAYS)
def test_network_policies_deny_by_default_and_allow_only_what_is_needed(rendered, env):
    policies = [o for o in rendered[env] if o["kind"] == "NetworkPolicy"]
    deny = one(policies, "NetworkPolicy", "default-deny-all")["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}
    ingress_ports, egress = set(), {}
    for p in policies:
        selected = p["spec"]["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name", "*")
        for rule in p["spec"].get("ingress", []):
            ports = {port["port"] for port in rule["ports"]}
            ingress_ports |= ports
            if 8080 in ports:
                # Only the ALB's subnets: no pod selector (the controller's pods send no traffic).
                assert all(set(peer) == {"ipBlock"} for peer in rule["from"]), rule
            if 9091 in ports:
                # Prometheus scrapes the metrics port, and only it.
                assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
                assert ports == {9091}
        for rule in p["spec"].get("egress", []):
            egress.setdefault(selected, set()).update(port["port"] for port in rule["ports"])
    # The admin port (9090) has no peer: it is reached by port-forward only.
    assert ingress_ports == {8080, 9091}
    assert egress["petstore"] == ({53} if env == "development" else {53, 5432})
    # Only the daily export reaches out on 443 (S3, STS), and it exists only with a database.
    assert egress.get("petstore-export") == (None if env == "development" else {53, 443, 5432})


@pytest.mark.parametrize("env", OVERLAYS)
def test_configuration_and_secrets(rendered, env):
    cm = [o for o in rendered[env] if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("app-config")]
    assert len(cm) == 1
    cm = cm[0]
    # The name carries a hash of the data, so a change rolls out (and back) with the pods.
    assert re.fullmatch(r"app-config-[a-z0-9]{10}", cm["metadata"]["name"])
    assert set(cm["data"]) == {"CORS_ORIGINS", "API_VERSION", "PAGINATION_LIMIT"}
    e = env_of(container(rendered[env]))
    for key in cm["data"]:
        assert e[key]["valueFrom"]["configMapKeyRef"] == {"name": cm["metadata"]["name"], "key": key}
    assert e["ENVIRONMENT"]["value"] == env
    assert e["LOG_LEVEL"]["value"] in ("INFO", "DEBUG")
    assert not [o for o in rendered[env] if o["kind"] == "Secret"], "no secret is committed"
    if env == "development":
        assert e["DATABASE_URL"]["value"].startswith("sqlite://")
        assert "COMPONENT_ARTIFACT_KEY_FILE" not in e and "DB_COMPONENT_USER" not in e
        return
    url = e["DATABASE_URL"]["value"]
    assert url.startswith("postgres://$(DB_HOST):5432/petstore?sslmode=verify-full")
    # $(DB_HOST) expands only from a variable defined before it.
    names = [v["name"] for v in container(rendered[env])["env"]]
    assert names.index("DB_HOST") < names.index("DATABASE_URL")
    for key in ["DB_USER", "DB_PASSWORD"]:
        assert e[key]["valueFrom"]["secretKeyRef"] == {"name": "db-credentials", "key": key}
    # The components' SQL runs as its own login role (issue 20).
    assert e["DB_COMPONENT_USER"]["valueFrom"]["secretKeyRef"] == {"name": "db-component-credentials", "key": "username"}
    assert e["DB_COMPONENT_PASSWORD"]["valueFrom"]["secretKeyRef"] == {"name": "db-component-credentials", "key": "password"}
    # The artifact key is a mounted file, never an environment variable.
    pod = one(rendered[env], "Deployment", "petstore")["spec"]["template"]["spec"]
    mount = next(m for m in container(rendered[env])["volumeMounts"] if m["name"] == "component-artifact-key")
    volume = next(v for v in pod["volumes"] if v["name"] == "component-artifact-key")
    assert volume["secret"] == {"secretName": "component-artifact-key", "items": [{"key": "key", "path": "key"}]}
    assert e["COMPONENT_ARTIFACT_KEY_FILE"]["value"] == f"{mount['mountPath']}/key" and mount["readOnly"]


@pytest.mark.parametrize("env", ["staging", "production"])
def test_staging_and_production_read_their_secrets_from_their_own_prefix(rendered, env):
    es = {o["metadata"]["name"]: o["spec"] for o in rendered[env] if o["kind"] == "ExternalSecret"}
    assert set(es) == {"db-credentials", "db-component-credentials", "petstore-admin", "component-signing-key", "component-artifact-key"}
    assert {d["secretKey"] for d in es["db-credentials"]["data"]} == {"DB_USER", "DB_PASSWORD"}
    remote = {(d["secretKey"], d["remoteRef"]["key"], d["remoteRef"]["property"]) for d in es["db-component-credentials"]["data"]}
    assert remote == {("username", "db-component", "username"), ("password", "db-component", "password")}
    assert [(d["secretKey"], d["remoteRef"]["key"]) for d in es["component-artifact-key"]["data"]] == [("key", "component-artifact-key")]
    for name, spec in es.items():
        assert spec["target"]["name"] == name
    store = one(rendered[env], "SecretStore")["spec"]["provider"]["aws"]
    assert store["service"] == "SecretsManager"
    assert store["prefix"] == f"petstore/{env}/"
    # The reader's role may read exactly that prefix (k8s/cluster/cluster.yaml).
    sa = {s["metadata"]["namespace"]: s for s in cluster_config()["iam"]["serviceAccounts"] if s["metadata"]["name"] == "petstore-secrets-reader"}
    resources = sa[f"petstore-{env}"]["attachPolicy"]["Statement"][0]["Resource"]
    assert resources == [f"arn:aws:secretsmanager:eu-west-1:111122223333:secret:petstore/{env}/*"]


# --- Monitoring --------------------------------------------------------------


def documented_metrics() -> set[str]:
    return set(re.findall(r"^\| `([a-z_]+)` \|", (ROOT / "docs" / "observability.md").read_text(), re.M))


def rules(objs: list[dict]) -> list[dict]:
    return one(objs, "PrometheusRule")["spec"]["groups"][0]["rules"]


def test_alerts_use_the_documented_metric_names_and_thresholds(rendered):
    objs = rendered["production"]
    by_name = {r["alert"]: r for r in rules(objs)}
    assert set(by_name) == {"PetstoreHighErrorRate", "PetstoreHighLatencyP95", "PetstoreHighCpu", "PetstoreHighMemory",
                            "PetstorePodRestarts", "PetstoreStatementsRefused", "PetstoreArtifactsRefused",
                            "PetstoreCanaryRolledBack"}
    documented = documented_metrics() | {"kube_pod_container_status_restarts_total"}
    for alert in by_name.values():
        for metric in re.findall(r"\b((?:petstore|process|kube)_[a-z_]+?)(?:_bucket)?\b", alert["expr"]):
            assert metric in documented, f"{alert['alert']} uses {metric}, not in docs/observability.md"
    assert "> 0.01" in by_name["PetstoreHighErrorRate"]["expr"]
    assert "histogram_quantile(0.95" in by_name["PetstoreHighLatencyP95"]["expr"] and "> 0.5" in by_name["PetstoreHighLatencyP95"]["expr"]
    # The CPU and memory alerts divide by the container's limits: keep them in step.
    limits = container(objs)["resources"]["limits"]
    assert limits["cpu"] == "500m" and "/ 0.5 > 0.85" in by_name["PetstoreHighCpu"]["expr"]
    assert limits["memory"] == "512Mi" and "/ (512 * 1024 * 1024) > 0.85" in by_name["PetstoreHighMemory"]["expr"]
    sm = one(objs, "ServiceMonitor")["spec"]
    assert sm["endpoints"][0]["port"] == "metrics" and sm["endpoints"][0]["path"] == "/metrics"
    # Prometheus names the job after the Service it scrapes: the rules' job label.
    scraped = [o for o in objs if o["kind"] == "Service"
               and all(o["metadata"].get("labels", {}).get(k) == v for k, v in sm["selector"]["matchLabels"].items())]
    assert [o["metadata"]["name"] for o in scraped] == ["petstore-metrics"]
    assert 'job="petstore-metrics"' in by_name["PetstoreHighCpu"]["expr"]


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


# --- Cluster, database ----------------------------------------------------------


def test_cluster_runs_a_supported_version_on_amazon_linux_2023_with_irsa():
    cfg = cluster_config()
    assert cfg["iam"]["withOIDC"] is True
    # AL2 has no EKS AMIs for Kubernetes 1.33+ (docs/requirements.md): AL2023.
    major, minor = map(int, cfg["metadata"]["version"].split("."))
    assert (major, minor) >= (1, 33)
    for ng in cfg["managedNodeGroups"]:
        assert (ng["instanceType"], ng["amiFamily"], ng["minSize"], ng["maxSize"]) == ("t3.small", "AmazonLinux2023", 2, 5)
        assert ng["tags"]["Application"] == "pet-store"
        assert {"Environment", "Application", "Owner", "Cost-Center"} <= set(ng["tags"])
    vpc_cni = next(a for a in cfg["addons"] if a["name"] == "vpc-cni")
    assert json.loads(vpc_cni["configurationValues"])["enableNetworkPolicy"] == "true"
    assert {"Environment", "Application", "Owner", "Cost-Center"} <= set(cfg["metadata"]["tags"])
    assert {g["tags"]["Environment"] for g in cfg["managedNodeGroups"]} == {"production", "staging"}


def test_cluster_autoscaler_scales_down_at_40_percent():
    values = yaml.safe_load((K8S / "cluster" / "addons" / "cluster-autoscaler.yaml").read_text())
    assert values["extraArgs"]["scale-down-utilization-threshold"] == 0.4
    assert values["autoDiscovery"]["clusterName"] == cluster_config()["metadata"]["name"]
    for ng in cluster_config()["managedNodeGroups"]:
        assert ng["tags"]["k8s.io/cluster-autoscaler/enabled"] == "true"
        assert ng["tags"][f"k8s.io/cluster-autoscaler/{cluster_config()['metadata']['name']}"] == "owned"


@pytest.mark.parametrize("env", ["staging", "production"])
def test_each_database_keeps_daily_backups_7_days_and_follows_minor_upgrades(cluster_objects, env):
    db = next(o for o in cluster_objects if o["kind"] == "DBInstance" and o["metadata"]["namespace"] == f"petstore-{env}")["spec"]
    assert (db["engine"], db["allocatedStorage"], db["storageType"]) == ("postgres", 20, "gp3")
    assert db["backupRetentionPeriod"] == 7
    assert db["storageEncrypted"] and not db["publiclyAccessible"] and db["deletionProtection"]
    assert {t["key"]: t["value"] for t in db["tags"]}["Environment"] == env
    # With automatic minor upgrades, a pinned minor version would have the
    # controller fight RDS: the major version only.
    if db["autoMinorVersionUpgrade"]:
        assert re.fullmatch(r"\d+", db["engineVersion"]), db["engineVersion"]
    # The subnet group and security group are made by k8s/cluster/aws.yaml.
    aws = yaml.load((K8S / "cluster" / "aws.yaml").read_text(), Loader=cfn_loader())
    assert db["dbSubnetGroupName"] == aws["Resources"]["DatabaseSubnetGroup"]["Properties"]["DBSubnetGroupName"]
    for sg in db["vpcSecurityGroupIDs"]:
        output = re.fullmatch(r"\$\{(\w+)\}", sg).group(1)
        assert output in aws["Outputs"], f"{sg} is not an output of the petstore-aws stack"
    # RDS writes PostgreSQL's log to /aws/rds/instance/<id>/postgresql and
    # makes that group itself, never expiring, unless it exists: the stack
    # makes it first, kept 30 days.
    groups = {r["Properties"]["LogGroupName"]: r["Properties"]["RetentionInDays"]
              for r in aws["Resources"].values() if r["Type"] == "AWS::Logs::LogGroup"}
    for log in db["enableCloudwatchLogsExports"]:
        assert groups.get(f"/aws/rds/instance/{db['dbInstanceIdentifier']}/{log}") == 30
    # The Deployment reads the address the controller exports.
    export = next(o for o in cluster_objects if o["kind"] == "FieldExport" and o["metadata"]["namespace"] == f"petstore-{env}")["spec"]
    assert export["from"]["resource"]["name"] == f"petstore-{env}" and export["from"]["path"] == ".status.endpoint.address"
    assert (export["to"]["kind"], export["to"]["name"], export["to"]["key"]) == ("configmap", "petstore-database", "DB_HOST")


def cfn_loader():
    """A YAML loader that reads CloudFormation's short tags (!Ref, !Sub, …) as plain values."""
    class Loader(yaml.SafeLoader):
        pass
    for tag in ["!Ref", "!Sub", "!GetAtt", "!Split", "!ImportValue", "!Join", "!Select", "!If", "!Equals", "!GetAZs"]:
        Loader.add_constructor(tag, lambda loader, node: loader.construct_scalar(node) if isinstance(node, yaml.ScalarNode) else loader.construct_sequence(node))
    return Loader


def test_the_aws_stack_is_valid_cloudformation():
    stacks = [str(K8S / "cluster" / f) for f in ["pipeline.yaml", "certificates.yaml", "aws.yaml"]]
    result = subprocess.run(["cfn-lint", *stacks], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_requirements_map_cites_tests_that_exist_and_every_number():
    original = (ROOT / "docs" / "requirements-original.md").read_text()
    mapping = (ROOT / "docs" / "requirements.md").read_text()
    numbers = set(re.findall(r"\d+(?:\.\d+)?", original))
    missing = sorted(n for n in numbers if not re.search(rf"(?<![\d.]){re.escape(n)}(?![\d])", mapping))
    assert not missing, f"numbers of docs/requirements-original.md not in docs/requirements.md: {missing}"
    # Every test a row says guards it must exist: a renamed or deleted test
    # leaves its requirement unguarded, and this fails.
    sources = "".join(p.read_text() for p in list((K8S / "tests").glob("test_*.py")) + list((ROOT / "tests").glob("*.rs")))
    defined = set(re.findall(r"(?:def|fn) (test_\w+|[a-z_]+)\(", sources))
    cited = set(re.findall(r"`(test_\w+)`", mapping))
    assert len(cited) > 20
    assert not sorted(cited - defined), f"cited in docs/requirements.md but not defined: {sorted(cited - defined)}"


def test_the_optional_mesh_adds_ambient_mtls_and_only_its_ports(tmp_path):
    # Opt in as an operator would: both halves, on top of staging.
    for half, base in [("overlay", "overlays/staging"), ("platform", "platform/staging")]:
        d = tmp_path / half
        d.mkdir()
        comp = "components/mesh" if half == "overlay" else "platform/components/mesh"
        (d / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": [os.path.relpath(K8S / base, d)], "components": [os.path.relpath(K8S / comp, d)]}))
    from conftest import render
    ns = one(render(tmp_path / "platform"), "Namespace")
    assert ns["metadata"]["labels"]["istio.io/dataplane-mode"] == "ambient"
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    objs = render(tmp_path / "overlay")
    mesh = one(objs, "NetworkPolicy", "petstore-allow-mesh")["spec"]
    assert {p["port"] for r in mesh["ingress"] for p in r["ports"]} == {15008, 8080}
    assert one(objs, "NetworkPolicy", "default-deny-all")
    # No sidecar: the pod spec is the same as without the mesh.
    plain = one(render(K8S / "overlays" / "staging"), "Deployment", "petstore")
    assert one(objs, "Deployment", "petstore")["spec"] == plain["spec"]
