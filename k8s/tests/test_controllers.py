"""What the controllers and charts really do with our objects, each modelled
from its upstream source at the version we pin (read at that tag; the file
and what it shows are named in each test), rather than what our files say
about them. Vendored evidence lives in upstream/<addon>/ (SOURCE names the
tag; templates/ holds the chart templates whose logic is modelled)."""

import ipaddress
import json
import re
import subprocess

import pytest
import yaml

from conftest import K8S, OVERLAYS, UPSTREAM, addons, chart_values, cluster_config, load_all, one, pods_of
from iam import allows, wildcard_grants

ACCOUNT, REGION = "111122223333", "eu-west-1"


def addon(name: str) -> dict:
    return next(a for a in addons() if a["name"] == name)


def cfn(path):
    from test_manifests import cfn_loader
    return yaml.load(path.read_text(), Loader=cfn_loader())


# --- ACK RDS controller: its identity -------------------------------------------

# What rds-controller v1.11.1's DBInstance reconciler calls for our objects:
# pkg/resource/db_instance/sdk.go (CreateDBInstance, DescribeDBInstances,
# ModifyDBInstance) and tags.go (AddTagsToResource, RemoveTagsFromResource,
# ListTagsForResource); DeleteDBInstance is never reached with
# deletionPolicy retain. With manageMasterUserPassword, RDS makes a secret
# `rds!db-…` in Secrets Manager as the caller and encrypts it with KMS: the
# rds-controller commit 5a5d5cf (PR #251, not in v1.11.1) records that
# AmazonRDSFullAccess alone fails CreateDBInstance "first to use KMS keys
# then to create passwords" and adds these rights.
ACK_CALLS = ["rds:CreateDBInstance", "rds:DescribeDBInstances", "rds:ModifyDBInstance",
             "rds:AddTagsToResource", "rds:RemoveTagsFromResource", "rds:ListTagsForResource"]
MASTER_SECRET_CALLS = ["secretsmanager:CreateSecret", "secretsmanager:TagResource", "secretsmanager:DescribeSecret"]


def ack_policy() -> dict:
    assoc = next(p for p in cluster_config()["iam"]["podIdentityAssociations"] if p["serviceAccountName"] == "ack-rds-controller")
    assert not assoc.get("permissionPolicyARNs"), "a managed policy: upstream's AmazonRDSFullAccess is rds:* on * without Secrets Manager"
    return assoc["permissionPolicy"]


def test_the_ack_controller_may_make_our_databases_with_managed_passwords_and_nothing_more(cluster_objects):
    # Upstream's recommendation at the pinned tag (vendored), which lacks the
    # Secrets Manager and KMS rights and grants rds:* on *.
    assert (UPSTREAM / "ack-rds-controller" / "recommended-policy-arn").read_text().strip() == "arn:aws:iam::aws:policy/AmazonRDSFullAccess"
    policy = ack_policy()
    assert not wildcard_grants(policy), wildcard_grants(policy)
    for db in (o for o in cluster_objects if o["kind"] == "DBInstance"):
        spec = db["spec"]
        arn = f"arn:aws:rds:{REGION}:{ACCOUNT}:db:{spec['dbInstanceIdentifier']}"
        for action in ACK_CALLS:
            assert allows(policy, action, arn), f"{action} on {arn}"
        assert allows(policy, "rds:CreateDBInstance", f"arn:aws:rds:{REGION}:{ACCOUNT}:subgrp:{spec['dbSubnetGroupName']}")
        assert allows(policy, "rds:CreateDBInstance", f"arn:aws:rds:{REGION}:{ACCOUNT}:pg:default.postgres{spec['engineVersion']}")
        assert allows(policy, "rds:CreateDBInstance", f"arn:aws:rds:{REGION}:{ACCOUNT}:og:default:postgres-{spec['engineVersion']}")
        if spec.get("manageMasterUserPassword"):
            secret = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:rds!db-6f1c2b9e-8f0a-4c7e-9a55-2f3e4d5c6b7a-AbCdEf"
            for action in MASTER_SECRET_CALLS:
                assert allows(policy, action, secret), action
            key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
            for action in ["kms:GenerateDataKey", "kms:Decrypt", "kms:DescribeKey"]:
                assert allows(policy, action, key, {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com"}), action
                # Only through Secrets Manager or RDS, never directly.
                assert not allows(policy, action, key, {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}), action
    # Nothing beyond this project's instances, and no deletes.
    assert not allows(policy, "rds:ModifyDBInstance", f"arn:aws:rds:{REGION}:{ACCOUNT}:db:someone-elses")
    assert not allows(policy, "rds:DeleteDBInstance", f"arn:aws:rds:{REGION}:{ACCOUNT}:db:petstore-production")
    assert not allows(policy, "secretsmanager:GetSecretValue", f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:petstore/production/db-AbCdEf")


def test_the_dba_identity_reads_only_its_own_databases_master_secret():
    # RDS tags the secret it manages with aws:rds:primaryDBInstanceArn; the
    # role's condition on that tag keeps staging's DBA out of production's.
    roles = {s["roleName"]: s["attachPolicy"] for s in cluster_config()["iam"]["serviceAccounts"]}
    secret = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:rds!db-6f1c2b9e-AbCdEf"
    for env, other in [("staging", "production"), ("production", "staging")]:
        policy = roles[f"petstore-{env}-dba"]
        tag = "secretsmanager:ResourceTag/aws:rds:primaryDBInstanceArn"
        assert allows(policy, "secretsmanager:GetSecretValue", secret, {tag: f"arn:aws:rds:{REGION}:{ACCOUNT}:db:petstore-{env}"})
        assert not allows(policy, "secretsmanager:GetSecretValue", secret, {tag: f"arn:aws:rds:{REGION}:{ACCOUNT}:db:petstore-{other}"})
        for name in ["db", "db-component"]:
            assert allows(policy, "secretsmanager:GetSecretValue", f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:petstore/{env}/{name}-AbCdEf")
        assert not allows(policy, "secretsmanager:GetSecretValue", f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:petstore/{env}/admin-AbCdEf")


# --- The DBA step ----------------------------------------------------------------

@pytest.mark.parametrize("env", ["staging", "production"])
def test_the_dba_job_runs_the_roles_file_as_the_master_user_with_the_two_role_secrets(database_roles, env):
    objs = database_roles[env]
    job = one(objs, "Job", "petstore-database-roles")
    pod = job["spec"]["template"]["spec"]
    c = pod["containers"][0]
    env_vars = {e["name"]: e for e in c["env"]}

    def secret(var):
        return env_vars[var]["valueFrom"]["secretKeyRef"]

    # psql, exactly the interface the host team fixed (issue 20).
    assert c["command"] == ["psql"]
    args = c["args"]
    variables = dict(args[i + 1].split("=", 1) for i in range(len(args)) if args[i] == "-v")
    assert variables == {"ON_ERROR_STOP": "1", "dbname": "petstore", "app_role": "$(APP_ROLE)", "app_password": "$(APP_PASSWORD)",
                         "component_role": "$(COMPONENT_ROLE)", "component_password": "$(COMPONENT_PASSWORD)"}
    sql = args[args.index("-f") + 1]
    # The file is database-roles.sql itself, mounted from a generated ConfigMap.
    mount = next(m for m in c["volumeMounts"] if sql.startswith(m["mountPath"] + "/"))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    cm = one(objs, "ConfigMap", volume["configMap"]["name"])
    assert cm["data"][sql.rsplit("/", 1)[1]] == (K8S / "components" / "postgres" / "database-roles.sql").read_text()
    # Connected to the service's database, TLS verified, as the master user
    # from the RDS-managed secret.
    assert env_vars["PGHOST"]["valueFrom"]["configMapKeyRef"] == {"name": "petstore-database", "key": "DB_HOST"}
    assert env_vars["PGDATABASE"]["value"] == variables["dbname"] == "petstore"
    assert env_vars["PGSSLMODE"]["value"] == "verify-full"
    es = {o["metadata"]["name"]: o for o in objs if o["kind"] == "ExternalSecret"}
    master = es[secret("PGUSER")["name"]]
    assert {d["remoteRef"]["key"] for d in master["spec"]["data"]} == {"${MasterUserSecretArn}"}, "filled in by k8s/database-roles/apply"
    assert master["spec"]["target"]["deletionPolicy"] == "Delete"
    roles = es[secret("APP_ROLE")["name"]]
    remote = {d["secretKey"]: (d["remoteRef"]["key"], d["remoteRef"]["property"]) for d in roles["spec"]["data"]}
    # The same Secrets Manager secrets the service's own Secrets come from.
    assert [remote[secret(v)["key"]] for v in ["APP_ROLE", "APP_PASSWORD", "COMPONENT_ROLE", "COMPONENT_PASSWORD"]] == [
        (f"petstore/{env}/db", "username"), (f"petstore/{env}/db", "password"),
        (f"petstore/{env}/db-component", "username"), (f"petstore/{env}/db-component", "password")]
    # Its own NetworkPolicy: nothing in; DNS and PostgreSQL to the database subnets out.
    np = one(objs, "NetworkPolicy", "petstore-dba")["spec"]
    assert np["podSelector"]["matchLabels"].items() <= job["spec"]["template"]["metadata"]["labels"].items()
    assert np["policyTypes"] == ["Ingress", "Egress"] and not np.get("ingress")
    assert {p["port"] for r in np["egress"] for p in r["ports"]} == {53, 5432}
    db_rule = next(r for r in np["egress"] if r["ports"][0]["port"] == 5432)
    assert {p["ipBlock"]["cidr"] for p in db_rule["to"]} == {s["cidr"] for s in eksctl_subnets() if s["private"]}


def test_the_dba_step_removes_the_master_credentials_when_it_ends(tmp_path):
    calls = tmp_path / "calls"
    (tmp_path / "kubectl").write_text(f"""#!/usr/bin/env bash
echo "kubectl $*" >> {calls}
case "$*" in
  kustomize*) exec {subprocess.run(["which", "kubectl"], capture_output=True, text=True).stdout.strip()} "$@" ;;
  *jsonpath*) printf 'arn:aws:secretsmanager:eu-west-1:111122223333:secret:rds!db-1-AbCdEf' ;;
  apply*) cat > {tmp_path}/applied.yaml ;;
  *"wait job"*) exit 1 ;;
esac
""")
    (tmp_path / "kubectl").chmod(0o755)
    result = subprocess.run([str(K8S / "database-roles" / "apply"), "staging"], capture_output=True, text=True,
                            env={"PATH": f"{tmp_path}:/usr/bin:/bin"})
    assert result.returncode == 1, "a failed Job fails the step"
    lines = calls.read_text().splitlines()
    assert any(line.startswith("kubectl -n petstore-staging delete externalsecret dba-master dba-roles") for line in lines)
    assert "rds!db-1-AbCdEf" in (tmp_path / "applied.yaml").read_text()


# --- eksctl's subnets and the AWS Load Balancer Controller ------------------------

def eksctl_subnets() -> list[dict]:
    """The subnets eksctl v0.230.0 makes: pkg/vpc/vpc.go SetSubnets splits
    the VPC into 8 blocks (up to 8 subnets: prefix + 3), public ones first,
    one per zone, then private; pkg/cfn/builder/vpc_ipv4.go tags private ones
    kubernetes.io/role/internal-elb=1 and public ones kubernetes.io/role/elb=1.
    Nodes (privateNetworking) and so pods (VPC CNI) live in the private ones."""
    cfg = cluster_config()
    vpc = ipaddress.ip_network(cfg["vpc"]["cidr"])
    zones = cfg["availabilityZones"]
    total = 2 * len(zones)
    extra = 3 if total <= 8 else 4
    blocks = list(vpc.subnets(new_prefix=vpc.prefixlen + extra))
    out = []
    for i, az in enumerate(zones):
        out.append({"cidr": str(blocks[i]), "az": az, "private": False, "tags": {"kubernetes.io/role/elb": "1"}, "name": None})
        out.append({"cidr": str(blocks[i + len(zones)]), "az": az, "private": True, "tags": {"kubernetes.io/role/internal-elb": "1"}, "name": None})
    return out


def stack_subnets() -> list[dict]:
    """The subnets k8s/cluster/aws.yaml adds, by Name tag."""
    tpl = cfn(K8S / "cluster" / "aws.yaml")
    out = []
    for res in tpl["Resources"].values():
        if res["Type"] == "AWS::EC2::Subnet":
            tags = {t["Key"]: t["Value"] for t in res["Properties"]["Tags"]}
            out.append({"cidr": res["Properties"]["CidrBlock"], "name": tags.get("Name"), "tags": tags, "private": False})
    return out


def alb_subnets(ingress: dict) -> list[dict]:
    """Where the ALB controller (v3.5.0) puts an Ingress's load balancer:
    pkg/networking/subnet_resolver.go uses the subnets the annotation names
    (by ID or Name tag, ResolveViaNameOrIDSlice), else discovers them by the
    role tag of the scheme: internal -> kubernetes.io/role/internal-elb,
    internet-facing -> kubernetes.io/role/elb (lines 183-193)."""
    ann = ingress["metadata"]["annotations"]
    if "alb.ingress.kubernetes.io/subnets" in ann:
        names = [n.strip() for n in ann["alb.ingress.kubernetes.io/subnets"].split(",")]
        found = [s for s in stack_subnets() + eksctl_subnets() if s["name"] in names]
        assert len(found) == len(names), f"subnets {names}: only {[s['name'] for s in found]} exist"
        return found
    tag = "kubernetes.io/role/internal-elb" if ann.get("alb.ingress.kubernetes.io/scheme") == "internal" else "kubernetes.io/role/elb"
    return [s for s in eksctl_subnets() if tag in s["tags"]]


def admitted_to(policies: list[dict], port: int) -> list[ipaddress.IPv4Network]:
    return [ipaddress.ip_network(peer["ipBlock"]["cidr"]) for p in policies for rule in p["spec"].get("ingress", [])
            if port in {x["port"] for x in rule["ports"]} for peer in rule["from"] if "ipBlock" in peer]


@pytest.mark.parametrize("env", OVERLAYS)
def test_the_albs_subnets_are_admitted_to_8080_and_no_subnet_that_holds_pods_is(rendered, env):
    ingress = one(rendered[env], "Ingress")
    admitted = admitted_to([o for o in rendered[env] if o["kind"] == "NetworkPolicy"], 8080)
    subnets = alb_subnets(ingress)
    assert len({s.get("az") or s["cidr"] for s in subnets}) >= 2, "an ALB needs two zones"
    for s in subnets:
        net = ipaddress.ip_network(s["cidr"])
        assert any(net.subnet_of(a) for a in admitted), f"{env}: the ALB sits in {net}, which the NetworkPolicy does not admit to 8080"
    # Admitting the subnets that hold nodes would admit every pod of the cluster.
    for s in eksctl_subnets():
        if s["private"]:
            net = ipaddress.ip_network(s["cidr"])
            assert not any(net.overlaps(a) for a in admitted), f"{env}: {net} holds every pod, and is admitted to 8080"


def test_developments_alb_subnets_lie_in_the_vpc_clear_of_eksctls():
    vpc = ipaddress.ip_network(cluster_config()["vpc"]["cidr"])
    taken = [ipaddress.ip_network(s["cidr"]) for s in eksctl_subnets()]
    for s in stack_subnets():
        net = ipaddress.ip_network(s["cidr"])
        assert net.subnet_of(vpc) and not any(net.overlaps(t) for t in taken), s


def webhook_selects(namespace_labels: dict, pod_labels: dict) -> bool:
    """The pod mutator of eks-charts v0.0.242's aws-load-balancer-controller
    chart (templates/webhook.yaml, vendored): namespaceSelector
    `elbv2.k8s.aws/pod-readiness-gate-inject In [enabled]` (unless
    webhookNamespaceSelectors replaces it) and objectSelector
    `app.kubernetes.io/name NotIn [aws-load-balancer-controller]`; the
    controller then injects a readiness gate for each TargetGroupBinding
    (target-type ip) that selects the pod."""
    template = (UPSTREAM / "aws-load-balancer-controller" / "templates" / "webhook.yaml").read_text()
    first = template.split("- clientConfig:")[1]
    assert "key: elbv2.k8s.aws/pod-readiness-gate-inject" in first and "- enabled" in first, "the template changed: re-read it"
    values = chart_values(addon("aws-load-balancer-controller"))
    expressions = values.get("webhookNamespaceSelectors") or [
        {"key": "elbv2.k8s.aws/pod-readiness-gate-inject", "operator": "In", "values": ["enabled"]}]
    for e in expressions:
        have = namespace_labels.get(e["key"])
        if e["operator"] == "In" and have not in e["values"]:
            return False
        if e["operator"] == "NotIn" and have in e["values"]:
            return False
    if values.get("enablePodReadinessGateInject") is False:
        return False
    return pod_labels.get("app.kubernetes.io/name") != "aws-load-balancer-controller"


@pytest.mark.parametrize("env", OVERLAYS)
def test_rollouts_wait_for_the_alb_to_pass_new_pods_health_checks(platform, rendered, env):
    ns = one(platform[env], "Namespace")["metadata"]["labels"]
    dep = one(rendered[env], "Deployment", "petstore")
    assert webhook_selects(ns, dep["spec"]["template"]["metadata"]["labels"]), f"{env}: no ALB readiness gate"
    assert one(rendered[env], "Ingress")["metadata"]["annotations"]["alb.ingress.kubernetes.io/target-type"] == "ip"


def certificate_domains() -> dict[str, str]:
    tpl = cfn(K8S / "cluster" / "certificates.yaml")
    domain = tpl["Parameters"]["Domain"]["Default"]
    out = {}
    for name, res in tpl["Resources"].items():
        if res["Type"] == "AWS::CertificateManager::Certificate":
            env = {t["Key"]: t["Value"] for t in res["Properties"]["Tags"]}["Environment"]
            out[env] = res["Properties"]["DomainName"].replace("${Domain}", domain)
            assert res["Properties"]["ValidationMethod"] == "DNS"
            assert res["Properties"]["DomainValidationOptions"][0]["HostedZoneId"] == "HostedZoneId"
    return out


def domain_matches_host(domain: str, host: str) -> bool:
    """pkg/certs/cert_discovery.go domainMatchesHost (v3.5.0): a wildcard
    covers exactly one label; otherwise the names are equal."""
    if domain.startswith("*."):
        d, h = domain.split("."), host.split(".")
        return len(d) == len(h) and d[1:] == h[1:]
    return domain == host


@pytest.mark.parametrize("env", OVERLAYS)
def test_each_ingress_host_finds_its_issued_certificate(rendered, env):
    # ALB controller v3.5.0 pkg/ingress/model_build_listener.go: with HTTPS in
    # listen-ports and no certificate-arn, computeIngressInferredTLSCertARNs
    # takes every rule host and spec.tls host, and Discover fails the
    # Ingress ("no certificate found for host") unless an ISSUED certificate
    # matches each. k8s/cluster/certificates.yaml issues them (DNS validation).
    ing = one(rendered[env], "Ingress")
    assert "alb.ingress.kubernetes.io/certificate-arn" not in ing["metadata"]["annotations"]
    assert '"HTTPS"' in ing["metadata"]["annotations"]["alb.ingress.kubernetes.io/listen-ports"]
    issued = certificate_domains()
    for host in [r["host"] for r in ing["spec"]["rules"]] + [h for t in ing["spec"].get("tls", []) for h in t["hosts"]]:
        matches = [e for e, d in issued.items() if domain_matches_host(d, host)]
        assert matches == [env], f"{env}: {host} is covered by the certificates of {matches}"


# --- Security Profiles Operator --------------------------------------------------

def test_the_security_profiles_operator_and_its_daemon_run_the_v1_0_0_release_image():
    # deploy/helm/templates/deployment.yaml (v1.0.0, vendored) renders
    # `image: registry/repository:tag` with imagePullPolicy Always fixed;
    # internal/pkg/manager/spod/spod_controller.go gives the privileged
    # daemon (spod) and the webhook that same image and pull policy. The
    # chart's values default to a staging build tagged `latest`.
    template = (UPSTREAM / "security-profiles-operator" / "templates" / "deployment.yaml").read_text()
    line = re.search(r"^\s+image: (.+)$", template, re.M).group(1)
    assert line == "{{ .Values.spoImage.registry }}/{{ .Values.spoImage.repository }}:{{ .Values.spoImage.tag }}", "the template changed"
    assert re.search(r"^\s+imagePullPolicy: Always$", template, re.M)
    spo = addon("security-profiles-operator")
    values = chart_values(spo)
    image = f"{values['spoImage']['registry']}/{values['spoImage']['repository']}:{values['spoImage']['tag']}"
    assert image == f"registry.k8s.io/security-profiles-operator/security-profiles-operator:v{spo['chart']['version']}", image
    # selinuxd's images are `latest` too: they must stay unused.
    assert values["enableSelinux"] is False


# --- Cluster Autoscaler ------------------------------------------------------------

def blocks_scale_down(pod: dict, annotations: dict, skip_nodes_with_local_storage: bool) -> list[str]:
    """cluster-autoscaler 1.35.0 (chart 9.59.0's appVersion):
    simulator/drainability/rules/rules.go applies the local-storage rule
    unless --skip-nodes-with-local-storage=false (flags.go default true);
    utils/drain/drain.go HasBlockingLocalStorage blocks on any hostPath or
    non-memory emptyDir volume that the pod's
    cluster-autoscaler.kubernetes.io/safe-to-evict-local-volumes annotation
    (comma-separated names) does not list."""
    if not skip_nodes_with_local_storage:
        return []
    listed = set(filter(None, annotations.get("cluster-autoscaler.kubernetes.io/safe-to-evict-local-volumes", "").split(",")))
    return [v["name"] for v in pod.get("volumes", [])
            if ("hostPath" in v or ("emptyDir" in v and (v["emptyDir"] or {}).get("medium") != "Memory")) and v["name"] not in listed]


def test_no_pod_of_ours_holds_a_node_back_from_scale_down(rendered, database_roles):
    args = chart_values(addon("cluster-autoscaler")).get("extraArgs", {})
    skip = str(args.get("skip-nodes-with-local-storage", True)).lower() != "false"
    objs = [o for env in OVERLAYS for o in rendered[env]] + [o for objs in database_roles.values() for o in objs]
    objs += load_all(K8S / "cluster" / "overprovisioning.yaml")
    checked = 0
    for kind, name, pod, meta in pods_of(objs):
        blocking = blocks_scale_down(pod, meta.get("annotations", {}), skip)
        assert not blocking, f"{kind} {name}: local volumes {blocking} keep its node from being removed"
        checked += 1
    assert checked >= 8


# --- kube-prometheus-stack --------------------------------------------------------

def chart_condition(template: str, values: dict) -> bool:
    """Evaluate the `{{- if and … }}` that guards a kube-prometheus-stack
    template (88.5.3, vendored) against the values: `.Values.a.b` terms,
    `(not (.Values.x | default false))` and semverCompare (true for the
    cluster's 1.35)."""
    head = next(line for line in template.splitlines() if line.startswith("{{- if and"))
    terms = re.findall(r"\(not \(\.Values\.([\w.]+) \| default false\)\)|\(semverCompare [^)]*\)|\.Values\.([\w.]+)", head)
    result = True
    for negated, plain in terms:
        path = negated or plain
        if not path:
            continue
        v = values
        for part in path.split("."):
            v = v.get(part) if isinstance(v, dict) else None
        result = result and (not bool(v) if negated else bool(v))
    return result


# EKS runs these itself: unreachable from the cluster's Prometheus (kube-proxy
# listens for metrics on 127.0.0.1), so their targets would be down forever.
EKS_HIDDEN = {
    "kube-controller-manager": ["exporters/kube-controller-manager/servicemonitor.yaml", "prometheus/rules-1.14/kubernetes-system-controller-manager.yaml"],
    "kube-scheduler": ["exporters/kube-scheduler/servicemonitor.yaml", "prometheus/rules-1.14/kubernetes-system-scheduler.yaml",
                       "prometheus/rules-1.14/kube-scheduler.rules.yaml"],
    "etcd": ["exporters/kube-etcd/servicemonitor.yaml", "prometheus/rules-1.14/etcd.yaml"],
    "kube-proxy": ["exporters/kube-proxy/servicemonitor.yaml", "prometheus/rules-1.14/kubernetes-system-kube-proxy.yaml"],
}


def test_no_chart_scrape_or_alert_targets_what_eks_runs_out_of_reach():
    values = chart_values(addon("kube-prometheus-stack"))
    defaults = yaml.safe_load((UPSTREAM / "kube-prometheus-stack" / "values.yaml").read_text())
    for component, templates in EKS_HIDDEN.items():
        for t in templates:
            text = (UPSTREAM / "kube-prometheus-stack" / "templates" / t).read_text()
            assert chart_condition(text, defaults), f"the chart's defaults render {t}: the model is checked against them"
            assert not chart_condition(text, values), f"{component}: {t} is rendered, and would alert forever on EKS"


def route(tree: dict, labels: dict) -> str:
    """Alertmanager's routing: the first child route whose matchers all hold
    takes the alert (continue: false), recursively; else the parent's receiver."""
    for child in tree.get("routes", []):
        ok = True
        for m in child.get("matchers", []):
            k, op, v = re.fullmatch(r'\s*(\w+)\s*(=~|!=|=)\s*"?([^"]*)"?\s*', m).groups()
            have = labels.get(k, "")
            ok &= {"=": have == v, "!=": have != v, "=~": re.fullmatch(v, have) is not None}[op]
        if ok:
            return route({**child, "receiver": child.get("receiver", tree["receiver"])}, labels)
    return tree["receiver"]


def test_every_service_alert_reaches_a_receiver_that_notifies(rendered):
    values = chart_values(addon("kube-prometheus-stack"))
    config = values["alertmanager"]["config"]
    receivers = {r["name"]: r for r in config["receivers"]}
    mounted = set(values["alertmanager"]["alertmanagerSpec"].get("secrets", []))
    for rule in one(rendered["production"], "PrometheusRule")["spec"]["groups"][0]["rules"]:
        labels = {"alertname": rule["alert"], "namespace": "petstore-production", **rule["labels"]}
        name = route(config["route"], labels)
        notifiers = {k: v for k, v in receivers[name].items() if k.endswith("_configs") and v}
        assert notifiers, f"{rule['alert']} goes to receiver {name}, which notifies nobody"
        for cfgs in notifiers.values():
            for c in cfgs:
                for k, path in c.items():
                    if k.endswith("_file"):
                        # Alertmanager mounts spec.secrets at /etc/alertmanager/secrets/<name>/.
                        secret = re.fullmatch(r"/etc/alertmanager/secrets/([^/]+)/[^/]+", path).group(1)
                        assert secret in mounted, f"{path}: Secret {secret} is not mounted"
    # The chart's heartbeat stays silent.
    assert route(config["route"], {"alertname": "Watchdog", "severity": "none"}) == "null"


def test_prometheus_keeps_what_its_scratch_volume_holds():
    spec = chart_values(addon("kube-prometheus-stack"))["prometheus"]["prometheusSpec"]
    size = spec["storageSpec"]["emptyDir"]["sizeLimit"]
    assert re.fullmatch(r"\d+Gi", size) and spec["retentionSize"].endswith("GB")
    assert int(spec["retentionSize"][:-2]) < int(size[:-2]), "TSDB bounded below the volume's limit, or the kubelet evicts it"
    assert int(spec["retention"].rstrip("d")) <= 2


# --- ACK adoption (docs/disaster-recovery.md, A) ----------------------------------

STUB_ADOPT = r"""#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$STATE/calls"
case "$(basename "$0") $*" in
  "aws rds describe-db-instances"*) echo available ;;
  "aws cloudformation describe-stacks"*) echo sg-0123 ;;
  "kubectl -n petstore-production get dbinstance/petstore-production") [ -f "$STATE/managed" ] ;;
  "kubectl -n petstore-production delete dbinstance/petstore-production"*)
    grep -q "deletion-policy=retain" "$STATE/calls" || { echo "deleted WITH the AWS instance" >&2; exit 3; }
    rm -f "$STATE/managed" ;;
  "kubectl apply -f -") cat > "$STATE/applied.yaml"; [ -f "$STATE/managed" ] && echo managed > "$STATE/applied-onto" ; true ;;
esac
"""


def need_adoption(obj: dict, managed: bool) -> bool:
    """aws-controllers-k8s/runtime v0.61.0 pkg/runtime/reconciler.go:
    needAdoption = NeedAdoption(desired) && !IsManaged(desired) && the
    ResourceAdoption gate (Beta, on: pkg/featuregate/features.go; the chart's
    featureGates.ResourceAdoption true). NeedAdoption: an adoption-policy of
    adopt or adopt-or-create (util.go GetAdoptionPolicy); an `adopt` needs
    adoption-fields JSON (handlePopulation, else terminal)."""
    ann = obj["metadata"].get("annotations", {})
    policy = ann.get("services.k8s.aws/adoption-policy")
    if policy not in ("adopt", "adopt-or-create") or managed:
        return False
    gate = yaml.safe_load((UPSTREAM / "ack-rds-controller" / "values.yaml").read_text())["featureGates"]["ResourceAdoption"]
    merged = chart_values(addon("ack-rds-controller")).get("featureGates", {}).get("ResourceAdoption", gate)
    if not merged:
        return False
    if policy == "adopt":
        json.loads(ann["services.k8s.aws/adoption-fields"])
    return True


def test_runbook_a_hands_the_restored_instance_to_ack_by_adoption(tmp_path):
    # The command runbook A gives, run against stand-ins for kubectl and aws.
    runbook = (K8S.parent / "docs" / "disaster-recovery.md").read_text()
    section = runbook.split("## A.")[1].split("\n## ")[0]
    command = re.search(r"^(k8s/cluster/rds/adopt .+)$", section, re.M).group(1)
    state = tmp_path / "state"
    state.mkdir()
    (state / "managed").touch()  # the DBInstance exists and holds the ACK finalizer
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ["kubectl", "aws"]:
        (bin_dir / tool).write_text(STUB_ADOPT)
        (bin_dir / tool).chmod(0o755)
    import os
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STATE": str(state), "NEW": "petstore-production-restored"}
    result = subprocess.run(["bash", "-c", command], cwd=K8S.parent, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert not (state / "applied-onto").exists(), "applied onto the managed resource: ACK ignores adoption there"
    db = next(d for d in yaml.safe_load_all((state / "applied.yaml").read_text()) if d and d["kind"] == "DBInstance")
    assert need_adoption(db, managed=(state / "managed").exists())
    fields = json.loads(db["metadata"]["annotations"]["services.k8s.aws/adoption-fields"])
    assert fields == {"dbInstanceIdentifier": "petstore-production-restored"} == {"dbInstanceIdentifier": db["spec"]["dbInstanceIdentifier"]}
    # The name is kept, so the FieldExport exports the new address.
    assert db["metadata"]["name"] == "petstore-production"


def test_a_managed_resource_is_never_adopted():
    db = {"metadata": {"annotations": {"services.k8s.aws/adoption-policy": "adopt", "services.k8s.aws/adoption-fields": "{}"}}}
    assert need_adoption(db, managed=False) and not need_adoption(db, managed=True)


# --- runc 1.3.5 under the service's seccomp profile -------------------------------

def names(path) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")}


def test_the_profile_lets_the_nodes_runc_start_the_service_and_the_cache_be_made():
    # EKS AL2023 nodes for Kubernetes 1.35 run runc 1.3.5-1.amzn2023.0.2
    # (awslabs/amazon-eks-ami CHANGELOG.md, release v20260714). runc v1.3.5
    # libcontainer/standard_init_linux.go loads the filter (line 226) and
    # THEN reopens the exec fifo (pathrs.Reopen, line 258) and closes
    # inherited fds (utils.UnsafeCloseFrom, line 294), both through
    # pathrs-lite's procfs handle, which opens /proc/thread-self/fd with
    # openat2 and falls back to readlinkat/openat/statx/fstat only when
    # openat2 fails (vendor/github.com/cyphar/filepath-securejoin/pathrs-lite).
    # runc-init.txt is what runc's init was traced calling after the filter
    # (k8s/seccomp/derive.sh --runc-init), under 1.3.5.
    runc = (K8S / "seccomp" / "runc-init.txt").read_text()
    traced = re.search(r"^# traced under: (.+)$", runc, re.M).group(1)
    assert "runc 1.3.5" in traced, traced
    runtime = names(K8S / "seccomp" / "runc-init.txt")
    assert {"openat2", "execve", "close", "getdents64", "fstat", "statx", "write"} <= runtime
    extra = names(K8S / "seccomp" / "extra.txt")
    # The component cache and shared artifacts are created lazily: mkdir
    # (musl) or mkdirat (glibc).
    assert {"mkdir", "mkdirat"} <= extra
    profile = set(json.loads((K8S / "seccomp" / "petstore.json").read_text())["syscalls"][0]["names"])
    missing = (runtime | extra) - profile
    assert not missing, f"regenerate with k8s/seccomp/derive.sh: {sorted(missing)}"


# --- Disaster recovery: what survives the loss of the region --------------------

def survives_region_loss() -> dict[str, str]:
    """Read from the configuration, not from the runbook: is each recovery
    input copied out of the cluster's region? RDS automated backups are
    regional unless replicated (StartDBInstanceAutomatedBackupsReplication,
    called from the destination region); an S3 bucket is regional unless it
    has a ReplicationConfiguration to a bucket elsewhere; a Secrets Manager
    secret unless it has replica regions; ECR unless the registry has a
    ReplicationConfiguration to another region."""
    region = cluster_config()["metadata"]["region"]
    bring_up = (K8S / "bring-up").read_text()
    aws = cfn(K8S / "cluster" / "aws.yaml")["Resources"]
    pipeline = cfn(K8S / "cluster" / "pipeline.yaml")["Resources"]
    bucket = next(r for r in aws.values() if r["Type"] == "AWS::S3::Bucket")["Properties"]
    ecr = [r for r in pipeline.values() if r["Type"] == "AWS::ECR::ReplicationConfiguration"]
    ecr_regions = {d["Region"] for r in ecr for rule in r["Properties"]["ReplicationConfiguration"]["Rules"]
                   for d in rule["Destinations"]}
    yes = {True: "yes", False: "no"}
    return {
        "RDS automated backups and snapshots": yes["start-db-instance-automated-backups-replication" in bring_up],
        "daily logical export": yes["ReplicationConfiguration" in bucket],
        "secrets": yes["--add-replica-regions" in bring_up],
        "images": yes[bool(ecr_regions - {region})],
    }


def test_the_dr_runbook_says_what_survives_the_loss_of_the_region():
    runbook = (K8S.parent / "docs" / "disaster-recovery.md").read_text()
    rows = {m[0].split(" (")[0].strip(): m[2].strip()
            for m in re.findall(r"^\| ([^|]+) \| ([^|]+) \| (yes|no) \|$", runbook, re.M)}
    truth = survives_region_loss()
    for thing, survives in truth.items():
        assert rows.get(thing) == survives, f"docs/disaster-recovery.md says '{rows.get(thing)}' for {thing}; the configuration says {survives}"
    # The targets for a lost region stand or fall with those inputs.
    met = all(v == "yes" for v in truth.values())
    claim = re.search(r"\*\*Loss of the region: RTO and RPO are (not met|met)\.\*\*", runbook)
    assert claim and claim.group(1) == ("met" if met else "not met"), "the region-loss line must follow the table"
