"""What a first apply on a real cluster would trip over: the pipeline's
rights, the objects pods depend on, the identities they assume, the image
tags they pull."""

import re

import pytest

from conftest import K8S, OVERLAYS, ROOT, cluster_config, one, pods_of

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


def referenced(pod: dict) -> set[tuple[str, str, str | None, bool]]:
    """(kind, name, key or None, optional) of every ConfigMap and Secret a pod mounts or reads."""
    refs = set()
    for c in pod.get("initContainers", []) + pod["containers"]:
        for e in c.get("env", []):
            for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                ref = e.get("valueFrom", {}).get(key)
                if ref:
                    refs.add((kind, ref["name"], ref["key"], bool(ref.get("optional"))))
    for v in pod.get("volumes", []):
        if "configMap" in v:
            for item in v["configMap"].get("items") or [{"key": None}]:
                refs.add(("ConfigMap", v["configMap"]["name"], item["key"], bool(v["configMap"].get("optional"))))
        if "secret" in v:
            for item in v["secret"].get("items") or [{"key": None}]:
                refs.add(("Secret", v["secret"]["secretName"], item["key"], bool(v["secret"].get("optional"))))
    return refs


def pods(objs: list[dict]):
    for _, _, pod, _ in pods_of(objs):
        yield pod


def made_in(objs: list[dict], namespace: str) -> dict[tuple[str, str], set[str]]:
    """(kind, name) -> keys, of every ConfigMap and Secret that the given
    objects make in `namespace`, modelling the controllers that make them:
    - an object made directly (generated ConfigMaps included);
    - External Secrets writes the target Secret of an ExternalSecret, with
      its data's keys;
    - ACK's FieldExport adds its key to a ConfigMap THAT ALREADY EXISTS and
      creates nothing: aws-controllers-k8s/runtime (v0.61.0 .. main, which
      rds-controller v1.11.1's go.mod v0.62.0 lies between; the file is the
      same in both) pkg/runtime/field_export_reconciler.go writeToConfigMap
      Gets the ConfigMap, fails with FieldExportMissingConfigMap ("unable
      to get existing configmap") when it is absent, and otherwise merges
      one key into its data. A FieldExport to a ConfigMap nothing creates
      therefore makes nothing."""
    made = {}
    mine = [o for o in objs if o["metadata"].get("namespace", namespace) == namespace]
    for o in mine:
        if o["kind"] in ("ConfigMap", "Secret"):
            made[(o["kind"], o["metadata"]["name"])] = set(o.get("data") or {}) | set(o.get("stringData") or {})
        if o["kind"] == "ExternalSecret":
            made[("Secret", o["spec"]["target"]["name"])] = {d["secretKey"] for d in o["spec"]["data"]}
    for o in mine:
        if o["kind"] == "FieldExport" and o["spec"]["to"]["kind"] == "configmap":
            target = ("ConfigMap", o["spec"]["to"]["name"])
            if target in made:
                made[target].add(o["spec"]["to"].get("key") or f"{namespace}.{o['metadata']['name']}")
    return made


@pytest.mark.parametrize("env", OVERLAYS)
def test_every_configmap_and_secret_a_pod_needs_is_made_by_something(rendered, cluster_objects, database_roles, env):
    ns = f"petstore-{env}"
    # What the pipeline applies, what the admin applied before it (the
    # databases and their ConfigMap), and the DBA step's own objects.
    made = made_in(rendered[env] + cluster_objects + database_roles.get(env, []), ns)
    for objs in (rendered[env], database_roles.get(env, [])):
        for pod in pods(objs):
            for kind, name, key, optional in referenced(pod):
                if optional:
                    continue
                assert (kind, name) in made, f"{env}: {kind} {name} is required, and nothing creates it"
                assert key is None or key in made[(kind, name)], f"{env}: {kind} {name} gets no key {key}"


def test_a_fieldexport_to_a_configmap_nothing_creates_makes_nothing(cluster_objects):
    # The model above, on the defect it guards: without the ConfigMap the
    # FieldExport's key appears nowhere.
    without = [o for o in cluster_objects if not (o["kind"] == "ConfigMap" and o["metadata"]["name"] == "petstore-database")]
    assert ("ConfigMap", "petstore-database") not in made_in(without, "petstore-staging")
    assert made_in(cluster_objects, "petstore-staging")[("ConfigMap", "petstore-database")] == {"DB_HOST"}


@pytest.mark.parametrize("env", OVERLAYS)
def test_every_iam_role_a_service_account_names_is_one_the_cluster_creates(rendered, database_roles, env):
    irsa = {(s["metadata"]["namespace"], s["metadata"]["name"]): s["roleName"] for s in cluster_config()["iam"]["serviceAccounts"]}
    for sa in (o for o in rendered[env] + database_roles.get(env, []) if o["kind"] == "ServiceAccount"):
        arn = sa["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn")
        if arn is None:
            continue
        name = sa["metadata"]["name"]
        assert irsa.get((f"petstore-{env}", name)) == arn.rsplit("/", 1)[1], f"{env}: {name} names {arn}, which cluster.yaml does not create"


PIPELINE_TAG = re.compile(r"^[0-9a-f]{12}$")


def test_overlays_pull_only_images_the_pipeline_pushed_and_pinned_public_ones(rendered):
    main = (ROOT / ".github" / "workflows" / "main.yaml").read_text()
    # The pipeline tags each image with the commit's first 12 hex digits.
    assert 'tag=${GITHUB_SHA::12}' in main
    for env in OVERLAYS:
        for pod in pods(rendered[env]):
            for c in pod.get("initContainers", []) + pod["containers"]:
                if c["image"].startswith("111122223333.dkr.ecr.eu-west-1.amazonaws.com/petstore:"):
                    # k8s/deploy swaps this for a pushed tag; it refuses anything else.
                    assert c["image"].endswith(":set-by-k8s-deploy"), c["image"]
                else:
                    # A public image: a release tag for people, its digest for the node.
                    assert re.fullmatch(r"[\w./-]+:\d+\.\d+(\.\d+)?@sha256:[0-9a-f]{64}", c["image"]), f"{c['image']}: not pinned by digest"
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


def quantity(q) -> float:
    q = str(q)
    for unit, f in (("Gi", 1024), ("Mi", 1), ("Ki", 1 / 1024), ("m", 0.001)):
        if q.endswith(unit):
            return float(q[: -len(unit)]) * f
    return float(q)


def pod_quota(pod: dict, field: str, resource: str) -> float:
    """What the quota charges a pod: the larger of its containers' sum and
    its largest init container (Kubernetes' effective pod request/limit)."""
    def of(c):
        return quantity(c.get("resources", {}).get(field, {}).get(resource, 0))
    return max([sum(of(c) for c in pod["containers"])] + [of(c) for c in pod.get("initContainers", [])])


@pytest.mark.parametrize("env", OVERLAYS)
def test_quota_and_limits(platform, rendered, database_roles, env):
    quota = one(platform[env], "ResourceQuota")["spec"]["hard"]
    limits = one(platform[env], "LimitRange")["spec"]["limits"][0]
    assert limits["default"] == {"cpu": "500m", "memory": "512Mi", "ephemeral-storage": "1Gi"}
    assert limits["defaultRequest"] == {"cpu": "250m", "memory": "256Mi", "ephemeral-storage": "1Gi"}
    # The worst moment: the HPA's maximum plus a 25% surge, the daily export
    # and the one-shot DBA Job at once, plus room for one more service pod,
    # so that nothing that may coincide waits on the quota (an exact fit
    # stalls a rollout at the maximum).
    dep = one(rendered[env], "Deployment", "petstore")
    hpa = [o for o in rendered[env] if o["kind"] == "HorizontalPodAutoscaler"]
    top = hpa[0]["spec"]["maxReplicas"] if hpa else dep["spec"]["replicas"]
    service = dep["spec"]["template"]["spec"]
    others = [pod for kind, _, pod, _ in pods_of(rendered[env] + database_roles.get(env, [])) if kind != "Deployment"]
    pods_at_once = [service] * (top + -(-top * 25 // 100) + 1) + others
    assert len(pods_at_once) <= int(quota["pods"]), f"{env}: {len(pods_at_once)} pods, quota {quota['pods']}"
    for field in ("requests", "limits"):
        for resource in ("cpu", "memory", "ephemeral-storage"):
            need = sum(pod_quota(p, field, resource) for p in pods_at_once)
            assert need <= quantity(quota[f"{field}.{resource}"]), f"{env}: {field}.{resource} needs {need}, quota {quota[f'{field}.{resource}']}"


def test_every_action_the_workflows_use_is_pinned_by_commit():
    # A tag can be moved to other code; a full commit SHA cannot. The version
    # rides along as a comment for people and for update tools.
    uses = []
    for path in sorted((ROOT / ".github").rglob("*.y*ml")):
        for line in path.read_text().splitlines():
            m = re.match(r"^\s*(?:- )?uses:\s*(\S+)(.*)$", line)
            if m:
                uses.append((path.name, m.group(1), m.group(2).strip()))
    assert len(uses) >= 10
    for name, ref, comment in uses:
        if ref.startswith("./"):
            continue
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", ref), f"{name}: {ref} is not pinned by commit"
        assert re.fullmatch(r"# v\d+\.\d+\.\d+", comment), f"{name}: {ref} needs its version as '# vX.Y.Z'"
