"""What a first apply on a real cluster would trip over: the pipeline's
rights, the objects pods depend on, the identities they assume, the image
tags they pull."""

import re

import pytest

from conftest import K8S, OVERLAYS, ROOT, cluster_config, one

# kind -> (API group, resource): the kinds an overlay may contain.
RESOURCES = {
    "ConfigMap": ("", "configmaps"), "Service": ("", "services"), "ServiceAccount": ("", "serviceaccounts"),
    "Deployment": ("apps", "deployments"), "CronJob": ("batch", "cronjobs"),
    "HorizontalPodAutoscaler": ("autoscaling", "horizontalpodautoscalers"),
    "PodDisruptionBudget": ("policy", "poddisruptionbudgets"),
    "Ingress": ("networking.k8s.io", "ingresses"), "NetworkPolicy": ("networking.k8s.io", "networkpolicies"),
    "ServiceMonitor": ("monitoring.coreos.com", "servicemonitors"), "PrometheusRule": ("monitoring.coreos.com", "prometheusrules"),
    "ExternalSecret": ("external-secrets.io", "externalsecrets"), "SecretStore": ("external-secrets.io", "secretstores"),
}
APPLY = {"get", "create", "patch"}  # what `kubectl apply` needs of each kind


def allowed(role: dict, group: str, resource: str) -> set[str]:
    verbs = set()
    for rule in role["rules"]:
        if group in rule["apiGroups"] and resource in rule["resources"] and not rule.get("resourceNames"):
            verbs |= set(rule["verbs"])
    return verbs


@pytest.mark.parametrize("env", OVERLAYS)
def test_the_deployer_may_apply_every_object_of_its_overlay_and_nothing_more(rendered, platform, env):
    role = one(platform[env], "Role", "petstore-deployer")
    assert role["metadata"]["namespace"] == f"petstore-{env}"
    for obj in rendered[env]:
        assert obj["kind"] in RESOURCES, f"{obj['kind']}: a kind the deployer Role has no rule for"
        group, resource = RESOURCES[obj["kind"]]
        missing = APPLY - allowed(role, group, resource)
        assert not missing, f"{env}: the deployer cannot {sorted(missing)} {resource}"
    # What k8s/deploy does besides apply: watch the rollout, undo it.
    assert {"get", "list", "watch"} <= allowed(role, "apps", "replicasets")
    assert {"update", "patch"} <= allowed(role, "apps", "deployments")
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"], rule
        assert "delete" not in rule["verbs"], rule
        if "secrets" in rule["resources"]:
            # One secret, read only: the admin token a component rollout needs.
            assert (rule["resources"], rule.get("resourceNames"), rule["verbs"]) == (["secrets"], ["petstore-admin"], ["get"]), rule


def test_each_pipeline_role_reaches_its_own_environment_only(platform):
    entries = {e["principalARN"]: e["kubernetesGroups"] for e in cluster_config()["accessConfig"]["accessEntries"]}
    for env in OVERLAYS:
        binding = one(platform[env], "RoleBinding", "petstore-deployer")
        assert binding["roleRef"]["name"] == "petstore-deployer"
        groups = [s["name"] for s in binding["subjects"] if s["kind"] == "Group"]
        assert groups == [f"petstore-deployers-{env}"]
        role = f"arn:aws:iam::111122223333:role/petstore-ci-deploy-{env}"
        assert entries[role] == groups, f"{role} must map to {groups} only"
    # The workflow deploys with exactly those roles (the action names them).
    action = (ROOT / ".github" / "actions" / "deploy" / "action.yaml").read_text()
    assert "role/petstore-ci-deploy-${{ inputs.environment }}" in action


def referenced(pod: dict) -> set[tuple[str, str, bool]]:
    """(kind, name, optional) of every ConfigMap and Secret a pod mounts or reads."""
    refs = set()
    for c in pod.get("initContainers", []) + pod["containers"]:
        for e in c.get("env", []):
            for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                ref = e.get("valueFrom", {}).get(key)
                if ref:
                    refs.add((kind, ref["name"], bool(ref.get("optional"))))
    for v in pod.get("volumes", []):
        if "configMap" in v:
            refs.add(("ConfigMap", v["configMap"]["name"], bool(v["configMap"].get("optional"))))
        if "secret" in v:
            refs.add(("Secret", v["secret"]["secretName"], bool(v["secret"].get("optional"))))
    return refs


def pods(objs: list[dict]):
    for o in objs:
        if o["kind"] == "Deployment":
            yield o["spec"]["template"]["spec"]
        if o["kind"] == "CronJob":
            yield o["spec"]["jobTemplate"]["spec"]["template"]["spec"]


@pytest.mark.parametrize("env", OVERLAYS)
def test_every_configmap_and_secret_a_pod_needs_is_made_by_something(rendered, cluster_objects, env):
    made = {(o["kind"], o["metadata"]["name"]) for o in rendered[env]}
    # Secrets the External Secrets Operator writes, ConfigMaps the ACK controller exports.
    made |= {("Secret", o["spec"]["target"]["name"]) for o in rendered[env] if o["kind"] == "ExternalSecret"}
    made |= {("ConfigMap", o["spec"]["to"]["name"]) for o in cluster_objects
             if o["kind"] == "FieldExport" and o["metadata"]["namespace"] == f"petstore-{env}" and o["spec"]["to"]["kind"] == "configmap"}
    for pod in pods(rendered[env]):
        for kind, name, optional in referenced(pod):
            assert optional or (kind, name) in made, f"{env}: {kind} {name} is required, and nothing creates it"


@pytest.mark.parametrize("env", OVERLAYS)
def test_every_iam_role_a_service_account_names_is_one_the_cluster_creates(rendered, env):
    irsa = {(s["metadata"]["namespace"], s["metadata"]["name"]): s["roleName"] for s in cluster_config()["iam"]["serviceAccounts"]}
    for sa in (o for o in rendered[env] if o["kind"] == "ServiceAccount"):
        arn = sa["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn")
        if arn is None:
            continue
        name = sa["metadata"]["name"]
        if name == "petstore":
            # The service's own role: declared, holding no permission (no AWS calls).
            assert arn == f"arn:aws:iam::111122223333:role/petstore-{env}-app"
            continue
        assert irsa.get((f"petstore-{env}", name)) == arn.rsplit("/", 1)[1], f"{env}: {name} names {arn}, which cluster.yaml does not create"


PIPELINE_TAG = re.compile(r"^[0-9a-f]{12}$")


def test_overlays_pull_only_images_the_pipeline_pushed_and_pinned_public_ones(rendered):
    main = (ROOT / ".github" / "workflows" / "main.yaml").read_text()
    # The pipeline tags each image with the commit's first 12 hex digits.
    assert 'tag=${GITHUB_SHA::12}' in main
    for env in OVERLAYS:
        for pod in pods(rendered[env]):
            for c in pod.get("initContainers", []) + pod["containers"]:
                image, _, tag = c["image"].rpartition(":")
                if image.endswith(".amazonaws.com/petstore"):
                    # k8s/deploy swaps this for a pushed tag; it refuses anything else.
                    assert tag == "set-by-k8s-deploy", c["image"]
                else:
                    assert re.fullmatch(r"\d+\.\d+\.\d+", tag), f"{c['image']}: a public image pinned to a release"
    deploy = (K8S / "deploy").read_text()
    assert "^[0-9a-f]{12}$" in deploy and "set-by-k8s-deploy" in deploy


def test_runbooks_deploy_and_run_what_exists():
    docs = {p.name: p.read_text() for p in (ROOT / "docs").glob("*.md")} | {"README.md": (ROOT / "README.md").read_text()}
    for name, text in docs.items():
        for block in re.findall(r"```(?:sh|bash)?\n(.*?)```", text, re.S):
            # The image has no shell and no PATH: its one binary is /app/petstore.
            assert not re.search(r"exec \S+ -- petstore\b", block), f"{name}: `petstore` is not on the image's PATH; use /app/petstore"
            # An overlay is applied with a tag the pipeline pushed, through k8s/deploy.
            assert "kubectl apply -k k8s/overlays" not in block, f"{name}: apply overlays with k8s/deploy ENV TAG"
            for tag in re.findall(r"k8s/deploy \w+ (\"\$\(git rev-parse --short=12 \w+\)\"|\S+)", block):
                assert tag.startswith('"$(git rev-parse --short=12') or PIPELINE_TAG.match(tag), f"{name}: k8s/deploy with {tag}"


@pytest.mark.parametrize("env", OVERLAYS)
def test_quota_and_limits(platform, rendered, env):
    quota = one(platform[env], "ResourceQuota")["spec"]["hard"]
    assert quota["limits.cpu"] == "7" and quota["pods"] == "14"
    limits = one(platform[env], "LimitRange")["spec"]["limits"][0]
    assert limits["default"] == {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"}
    assert limits["defaultRequest"] == {"cpu": "250m", "memory": "256Mi", "ephemeral-storage": "1Gi"}
    # The quota holds the HPA's maximum plus a 25% surge plus the daily export.
    hpa = [o for o in rendered[env] if o["kind"] == "HorizontalPodAutoscaler"]
    top = hpa[0]["spec"]["maxReplicas"] if hpa else 1
    exports = len([o for o in rendered[env] if o["kind"] == "CronJob"])
    assert top + -(-top * 25 // 100) + exports <= int(quota["pods"])
