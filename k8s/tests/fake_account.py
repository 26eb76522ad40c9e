#!/usr/bin/env python3
"""A simulated AWS account and EKS cluster for walking k8s/bring-up offline.

Installed (by test_bring_up.py) as `aws`, `eksctl`, `helm` and `kubectl` on
PATH; `kubectl kustomize` goes to the real kubectl. State lives in
$FAKE_ACCOUNT/state.json. Each command either does what the real service
would (records what it made) or is REFUSED, exiting 1 with the reason, when
something it needs does not exist yet. Each refusal models one upstream
behaviour, named where it is checked:

- CloudFormation: Fn::ImportValue of an export nobody made fails; creating
  an OIDC provider or log group that already exists fails.
- eksctl v0.230.0 creates each access entry while it creates the cluster
  (pkg/actions/accessentry/creator.go, AWS::EKS::AccessEntry): EKS refuses a
  principal that does not exist.
- helm: an add-on that calls AWS needs its Pod Identity association; the
  ALB controller needs the VPC; Alertmanager mounts its Secrets (the
  install waits for pods that cannot start); SPO needs cert-manager.
- kubectl apply: a namespaced object needs its namespace, a custom resource
  its CRD; a DBInstance its subnet group and security group.
- ACK: the controller's identity must be allowed the calls CreateDBInstance
  makes with manageMasterUserPassword; a FieldExport only patches a
  ConfigMap that exists (runtime pkg/runtime/field_export_reconciler.go).
- External Secrets: a Secret appears only when its store's service account
  has an IRSA role that exists and may read each remote key, and the key
  and property exist.
- Pods: every ConfigMap/Secret key they need must exist; Localhost seccomp
  profiles must be installed; the service's database roles must exist.
- AWS Load Balancer Controller v3.5.0: HTTPS without a certificate ARN finds
  an ISSUED certificate by host (pkg/certs/cert_discovery.go); named
  subnets must exist; readiness gates hold a rollout until the ALB exists.
"""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from iam import allows  # noqa: E402

ACCOUNT = "111122223333"
REGION = "eu-west-1"
STATE = Path(os.environ["FAKE_ACCOUNT"]) / "state.json"
K8S = Path(__file__).resolve().parents[1]
BUILT_IN = {"Namespace", "ConfigMap", "Secret", "ServiceAccount", "Service", "Deployment", "Job", "CronJob",
            "HorizontalPodAutoscaler", "PodDisruptionBudget", "Ingress", "NetworkPolicy", "ResourceQuota",
            "LimitRange", "Role", "RoleBinding", "PriorityClass"}
CLUSTER_SCOPED = {"Namespace", "PriorityClass", "SeccompProfile"}


def load() -> dict:
    if STATE.exists():
        return json.loads(STATE.read_text())
    return {"roles": {}, "oidc": [], "ecr": [], "exports": {}, "stacks": {}, "owned": {}, "subnets": [],
            "subnet_groups": [], "security_groups": [], "log_groups": {}, "certificates": [], "cluster": None,
            "pod_identity": {}, "irsa": {}, "sm": {}, "namespaces": [], "crds": {}, "addons": [], "k8s": {},
            "db": {}, "db_roles": {}, "revision": {}, "albs": {}, "dns": {}, "hosted_zone": None}


state = load()


def save():
    STATE.write_text(json.dumps(state, indent=1, sort_keys=True))


def refuse(reason: str):
    save()
    print(f"REFUSED: {reason}", file=sys.stderr)
    with open(STATE.parent / "refusals", "a") as fh:
        fh.write(reason + "\n")
    sys.exit(1)


# --- CloudFormation ------------------------------------------------------------

class Fn:
    def __init__(self, name, value):
        self.name, self.value = name, value


def cfn_yaml(text: str):
    class Loader(yaml.SafeLoader):
        pass
    for tag in ["Ref", "Sub", "GetAtt", "Split", "ImportValue", "Join", "Select", "If", "Equals", "GetAZs"]:
        def make(tag):
            def construct(loader, node):
                if isinstance(node, yaml.ScalarNode):
                    return Fn(tag, loader.construct_scalar(node))
                return Fn(tag, loader.construct_sequence(node, deep=True))
            return construct
        Loader.add_constructor("!" + tag, make(tag))
    return yaml.load(text, Loader=Loader)


def cfn_eval(v, ctx):
    params, conditions, refs = ctx
    if isinstance(v, Fn):
        if v.name == "Ref":
            if v.value in params:
                return params[v.value]
            return refs.get(v.value, f"ref:{v.value}")
        if v.name == "Sub":
            s = v.value
            return re.sub(r"\$\{([\w:]+)\}", lambda m: str({"AWS::AccountId": ACCOUNT, "AWS::Region": REGION}.get(
                m.group(1), params.get(m.group(1), refs.get(m.group(1), m.group(0))))), s)
        if v.name == "If":
            cond, a, b = v.value
            return cfn_eval(a if conditions[cond] else b, ctx)
        if v.name == "Equals":
            a, b = (cfn_eval(x, ctx) for x in v.value)
            return a == b
        if v.name == "Select":
            i, lst = v.value
            return cfn_eval(lst, ctx)[int(i)]
        if v.name == "Split":
            sep, s = v.value
            return cfn_eval(s, ctx).split(sep)
        if v.name == "GetAtt":
            return f"getatt:{v.value}"
        if v.name == "ImportValue":
            return cfn_import(cfn_eval(v.value, ctx))
        return f"{v.name}:{v.value}"
    if isinstance(v, dict):
        if set(v) == {"Fn::ImportValue"}:
            return cfn_import(cfn_eval(v["Fn::ImportValue"], ctx))
        return {k: cfn_eval(x, ctx) for k, x in v.items()}
    if isinstance(v, list):
        return [cfn_eval(x, ctx) for x in v]
    return v


def cfn_import(name: str):
    if name not in state["exports"]:
        refuse(f"CloudFormation: No export named {name} found (the stack that exports it has not been created)")
    return state["exports"][name]


def own(key: str, stack: str, what: str):
    owner = state["owned"].get(key)
    if owner is not None and owner != stack:
        refuse(f"CloudFormation {stack}: {what} already exists (made by {owner})")
    state["owned"][key] = stack


def cloudformation_deploy(args):
    stack = value_of(args, "--stack-name")
    template = cfn_yaml(Path(value_of(args, "--template-file")).read_text())
    params = {k: str(p.get("Default", "")) for k, p in (template.get("Parameters") or {}).items()}
    if "--parameter-overrides" in args:
        for kv in args[args.index("--parameter-overrides") + 1:]:
            if kv.startswith("--"):
                break
            k, _, v = kv.partition("=")
            params[k] = v
    for k, p in (template.get("Parameters") or {}).items():
        if p.get("Type", "").startswith("List<"):
            params[k] = params[k].split(",")
        if p.get("Type") == "AWS::Route53::HostedZone::Id" and not params[k]:
            refuse(f"CloudFormation {stack}: parameter {k} is required")
    ctx = (params, {}, {})
    for name, cond in (template.get("Conditions") or {}).items():
        ctx[1][name] = bool(cfn_eval(cond, ctx))
    refs = ctx[2]
    for logical, res in template["Resources"].items():
        if "Condition" in res and not ctx[1][res["Condition"]]:
            continue
        props = cfn_eval(res.get("Properties", {}), ctx)
        t = res["Type"]
        if t == "AWS::IAM::OIDCProvider":
            url = props["Url"]
            arn = f"arn:aws:iam::{ACCOUNT}:oidc-provider/{url.removeprefix('https://')}"
            if arn in state["oidc"] and state["owned"].get(arn) != stack:
                refuse(f"CloudFormation {stack}: EntityAlreadyExists: an OIDC provider for {url} already exists in the account")
            own(arn, stack, f"OIDC provider {url}")
            state["oidc"] = sorted(set(state["oidc"]) | {arn})
            refs[logical] = arn
        elif t == "AWS::IAM::Role":
            for st in props["AssumeRolePolicyDocument"]["Statement"]:
                fed = st.get("Principal", {}).get("Federated")
                if fed and fed not in state["oidc"]:
                    refuse(f"CloudFormation {stack}: role {props['RoleName']} trusts {fed}, which does not exist")
            own("role:" + props["RoleName"], stack, f"role {props['RoleName']}")
            state["roles"][props["RoleName"]] = {"policies": [p["PolicyDocument"] for p in props.get("Policies", [])]}
            refs[logical] = props["RoleName"]
        elif t == "AWS::ECR::Repository":
            own("ecr:" + props["RepositoryName"], stack, "repository")
            state["ecr"] = sorted(set(state["ecr"]) | {props["RepositoryName"]})
        elif t == "AWS::RDS::DBSubnetGroup":
            state["subnet_groups"] = sorted(set(state["subnet_groups"]) | {props["DBSubnetGroupName"]})
            refs[logical] = props["DBSubnetGroupName"]
        elif t == "AWS::EC2::SecurityGroup":
            sg = f"sg-{logical.lower()}"
            state["security_groups"] = sorted(set(state["security_groups"]) | {sg})
            refs[logical] = sg
        elif t == "AWS::Logs::LogGroup":
            own("logs:" + props["LogGroupName"], stack, f"log group {props['LogGroupName']}")
            state["log_groups"][props["LogGroupName"]] = props.get("RetentionInDays")
        elif t == "AWS::EC2::Subnet":
            import ipaddress
            net = ipaddress.ip_network(props["CidrBlock"])
            if not net.subnet_of(ipaddress.ip_network(state["cluster"]["cidr"])):
                refuse(f"CloudFormation {stack}: subnet {net} is outside the VPC")
            for s in state["subnets"]:
                if s.get("stack") != stack and ipaddress.ip_network(s["cidr"]).overlaps(net):
                    refuse(f"CloudFormation {stack}: InvalidSubnet.Conflict: {net} overlaps {s['cidr']}")
            name = next((t_["Value"] for t_ in props.get("Tags", []) if t_["Key"] == "Name"), logical)
            state["subnets"] = [s for s in state["subnets"] if s.get("name") != name]
            state["subnets"].append({"cidr": str(net), "name": name, "az": props["AvailabilityZone"], "tags": {}, "stack": stack})
        elif t == "AWS::CertificateManager::Certificate":
            state["certificates"] = sorted(set(state["certificates"]) | {props["DomainName"], *props.get("SubjectAlternativeNames", [])})
            state["hosted_zone"] = params.get("HostedZoneId")
        refs.setdefault(logical, f"{t}:{logical}")
    outputs = {}
    for k, out in (template.get("Outputs") or {}).items():
        outputs[k] = cfn_eval(out["Value"], ctx)
    state["stacks"][stack] = outputs
    save()


def value_of(args, flag, default=None):
    return args[args.index(flag) + 1] if flag in args else default


# --- the cluster -----------------------------------------------------------------

def eksctl(args):
    if args[:2] == ["get", "cluster"]:
        sys.exit(0 if state["cluster"] else 1)
    assert args[:2] == ["create", "cluster"], args
    if state["cluster"]:
        refuse("eksctl: cluster petstore already exists")
    cfg = yaml.safe_load(Path(value_of(args, "-f")).read_text())
    # eksctl v0.230.0: one AWS::EKS::AccessEntry per entry; EKS refuses a
    # principal that does not exist.
    for entry in cfg.get("accessConfig", {}).get("accessEntries", []):
        role = entry["principalARN"].rsplit("/", 1)[1]
        if role not in state["roles"]:
            refuse(f"eksctl: CreateAccessEntry: principal {entry['principalARN']} does not exist")
    # eksctl's subnets (pkg/vpc/vpc.go SetSubnets; pkg/cfn/builder/vpc_ipv4.go tags).
    import ipaddress
    vpc = ipaddress.ip_network(cfg["vpc"]["cidr"])
    zones = cfg["availabilityZones"]
    size = 8 if 2 * len(zones) <= 8 else 16
    blocks = list(vpc.subnets(new_prefix=vpc.prefixlen + (3 if size == 8 else 4)))
    subnets = []
    for i, az in enumerate(zones):
        subnets.append({"cidr": str(blocks[i]), "az": az, "name": f"public-{az}", "tags": {"kubernetes.io/role/elb": "1"}, "stack": "eksctl"})
        subnets.append({"cidr": str(blocks[i + len(zones)]), "az": az, "name": f"private-{az}", "tags": {"kubernetes.io/role/internal-elb": "1"}, "stack": "eksctl"})
    state["subnets"] = subnets
    state["cluster"] = {"vpc": "vpc-0a1b2c3d4e5f60718", "cidr": cfg["vpc"]["cidr"], "zones": zones}
    stack = f"eksctl-{cfg['metadata']['name']}-cluster"
    state["exports"].update({f"{stack}::VPC": "vpc-0a1b2c3d4e5f60718", f"{stack}::ClusterSecurityGroupId": "sg-cluster",
                             f"{stack}::SubnetsPrivate": ",".join(s["cidr"] for s in subnets if "internal-elb" in str(s["tags"])),
                             f"{stack}::SubnetsPublic": ",".join(s["cidr"] for s in subnets if "role/elb" in str(s["tags"]))})
    for sa in cfg["iam"].get("serviceAccounts", []):
        state["roles"][sa["roleName"]] = {"policies": [sa["attachPolicy"]] if "attachPolicy" in sa else []}
        state["irsa"][f"{sa['metadata']['namespace']}/{sa['metadata']['name']}"] = sa["roleName"]
    for a in cfg["iam"].get("podIdentityAssociations", []):
        state["pod_identity"][f"{a['namespace']}/{a['serviceAccountName']}"] = {
            "policy": a.get("permissionPolicy"), "managed": a.get("permissionPolicyARNs", []), "wellKnown": a.get("wellKnownPolicies")}
    state["namespaces"] = ["default", "kube-system", "kube-public"]
    save()


ADDON_IAM_NEEDS = {"aws-load-balancer-controller", "cluster-autoscaler", "aws-for-fluent-bit", "ack-rds-controller"}


def helm(args):
    assert args[:2] == ["upgrade", "--install"], args
    name, ns = args[2], value_of(args, "--namespace")
    if not state["cluster"]:
        refuse(f"helm {name}: no cluster")
    addons = {a["name"]: a for a in yaml.safe_load((K8S / "cluster" / "addons" / "addons.yaml").read_text())["addons"]}
    addon = addons[name]
    sys.path.insert(0, str(K8S / "tests"))
    from conftest import chart_values
    values = chart_values(addon)
    if "iam" in addon and f"{ns}/{addon['iam']}" not in state["pod_identity"]:
        refuse(f"helm {name}: no Pod Identity association for {ns}/{addon['iam']}")
    if name == "aws-load-balancer-controller":
        sets = [args[i + 1] for i, a in enumerate(args) if a == "--set"]
        if f"vpcId={state['cluster']['vpc']}" not in sets:
            refuse(f"helm {name}: vpcId is not the cluster's VPC ({sets})")
    if name == "security-profiles-operator" and "cert-manager" not in state["addons"]:
        refuse("helm security-profiles-operator: its webhook certificate needs cert-manager, not installed yet")
    if name == "kube-prometheus-stack":
        for secret in values["alertmanager"]["alertmanagerSpec"].get("secrets", []):
            if f"Secret/monitoring/{secret}" not in state["k8s"]:
                refuse(f"helm {name} --wait: Alertmanager cannot mount Secret monitoring/{secret}, which does not exist")
    if ns not in state["namespaces"]:
        if "--create-namespace" not in args:
            refuse(f"helm {name}: namespace {ns} does not exist")
        state["namespaces"].append(ns)
    for crd in addon.get("upstream", {}).get("crds", []):
        path = K8S / "tests" / "upstream" / name / (Path(crd).name if Path(crd).name.startswith("crd-") else "crd-" + Path(crd).name)
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                state["crds"][doc["spec"]["names"]["kind"]] = name
    state["addons"] = sorted(set(state["addons"]) | {name})
    save()


# --- Kubernetes objects ------------------------------------------------------------

def key(obj) -> str:
    ns = obj["metadata"].get("namespace")
    return f"{obj['kind']}/{ns}/{obj['metadata']['name']}" if ns else f"{obj['kind']}/{obj['metadata']['name']}"


def apply_objects(objs, default_ns=None):
    if not state["cluster"]:
        refuse("kubectl apply: no cluster")
    for obj in objs:
        kind = obj["kind"]
        if kind not in BUILT_IN and kind not in state["crds"]:
            refuse(f"kubectl apply: no kind {kind} (its CRD is installed by an add-on not installed yet)")
        if kind not in CLUSTER_SCOPED:
            obj["metadata"].setdefault("namespace", default_ns or "default")
            if obj["metadata"]["namespace"] not in state["namespaces"]:
                refuse(f"kubectl apply: {kind} {obj['metadata']['name']}: namespace {obj['metadata']['namespace']} does not exist")
        k = key(obj)
        live = state["k8s"].get(k)
        if kind == "Namespace":
            state["namespaces"] = sorted(set(state["namespaces"]) | {obj["metadata"]["name"]})
        if kind == "Job" and live and live["spec"]["template"] != obj["spec"]["template"]:
            refuse(f"kubectl apply: Job {obj['metadata']['name']}: spec.template: field is immutable")
        if kind == "ConfigMap" and live:
            # Client-side apply keeps keys another writer added (not in last-applied).
            kept = {k_: v for k_, v in (live.get("data") or {}).items() if k_ not in live.get("_applied", [])}
            obj = {**obj, "data": {**kept, **(obj.get("data") or {})}}
        if kind == "DBInstance":
            spec = obj["spec"]
            if spec["dbSubnetGroupName"] not in state["subnet_groups"]:
                refuse(f"ACK: DBInstance {obj['metadata']['name']}: DB subnet group {spec['dbSubnetGroupName']} does not exist")
            for sg in spec.get("vpcSecurityGroupIDs", []):
                if sg not in state["security_groups"]:
                    refuse(f"ACK: DBInstance {obj['metadata']['name']}: security group {sg} does not exist")
        obj["_applied"] = list((obj.get("data") or {}).keys()) if kind == "ConfigMap" else []
        state["k8s"][k] = obj
    save()


def objects(ns=None, kind=None):
    for k, o in state["k8s"].items():
        if (kind is None or o["kind"] == kind) and (ns is None or o["metadata"].get("namespace") == ns):
            yield o


def secret_arn(name: str) -> str:
    return name if name.startswith("arn:") else f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:{name}-AbCdEf"


def es_problem(ns, es) -> str | None:
    """Why External Secrets would not write this ExternalSecret's Secret."""
    ref = es["spec"]["secretStoreRef"]
    store = state["k8s"].get(f"SecretStore/{ns}/{ref['name']}")
    if not store:
        return f"SecretStore {ref['name']} does not exist"
    aws = store["spec"]["provider"]["aws"]
    sa_name = aws["auth"]["jwt"]["serviceAccountRef"]["name"]
    sa = state["k8s"].get(f"ServiceAccount/{ns}/{sa_name}")
    if not sa:
        return f"service account {sa_name} does not exist"
    role = sa["metadata"].get("annotations", {}).get("eks.amazonaws.com/role-arn", "").rsplit("/", 1)[-1]
    if role not in state["roles"] or state["irsa"].get(f"{ns}/{sa_name}") != role:
        return f"IRSA role {role} of {ns}/{sa_name} does not exist (or does not trust that service account)"
    for item in es["spec"]["data"]:
        name = aws.get("prefix", "") + item["remoteRef"]["key"]
        stored = state["sm"].get(name)
        if stored is None:
            return f"Secrets Manager has no secret {name}"
        context = {f"secretsmanager:ResourceTag/{k}": v for k, v in stored.get("tags", {}).items()}
        if not any(allows(p, "secretsmanager:GetSecretValue", secret_arn(name), context) for p in state["roles"][role]["policies"]):
            return f"role {role} may not read {name}"
        prop = item["remoteRef"].get("property")
        if prop and prop not in json.loads(stored["value"]):
            return f"secret {name} has no property {prop}"
    return None


def secret_keys(ns, name) -> set | None:
    s = state["k8s"].get(f"Secret/{ns}/{name}")
    if s:
        return set((s.get("data") or {}) | (s.get("stringData") or {}))
    for es in objects(ns, "ExternalSecret"):
        if es["spec"]["target"]["name"] == name and es_problem(ns, es) is None:
            return {d["secretKey"] for d in es["spec"]["data"]}
    return None


def pod_problems(ns, pod) -> list[str]:
    out = []
    for c in pod.get("initContainers", []) + pod["containers"]:
        for e in c.get("env", []):
            src = e.get("valueFrom", {})
            if "configMapKeyRef" in src and not src["configMapKeyRef"].get("optional"):
                ref = src["configMapKeyRef"]
                cm = state["k8s"].get(f"ConfigMap/{ns}/{ref['name']}")
                if not cm:
                    out.append(f"ConfigMap {ref['name']} does not exist")
                elif ref["key"] not in (cm.get("data") or {}):
                    out.append(f"ConfigMap {ref['name']} has no key {ref['key']}")
            if "secretKeyRef" in src and not src["secretKeyRef"].get("optional"):
                ref = src["secretKeyRef"]
                keys = secret_keys(ns, ref["name"])
                if keys is None:
                    es = next((x for x in objects(ns, "ExternalSecret") if x["spec"]["target"]["name"] == ref["name"]), None)
                    out.append(f"Secret {ref['name']} does not exist" + (f" ({es_problem(ns, es)})" if es else ""))
                elif ref["key"] not in keys:
                    out.append(f"Secret {ref['name']} has no key {ref['key']}")
    for v in pod.get("volumes", []):
        if "configMap" in v and f"ConfigMap/{ns}/{v['configMap']['name']}" not in state["k8s"]:
            out.append(f"ConfigMap {v['configMap']['name']} (volume) does not exist")
        if "secret" in v and secret_keys(ns, v["secret"]["secretName"]) is None:
            out.append(f"Secret {v['secret']['secretName']} (volume) does not exist")
    seccomp = pod.get("securityContext", {}).get("seccompProfile", {})
    if seccomp.get("type") == "Localhost":
        name = re.fullmatch(r"operator/(.+)\.json", seccomp["localhostProfile"]).group(1)
        if f"SeccompProfile/{name}" not in state["k8s"] or "security-profiles-operator" not in state["addons"]:
            out.append(f"seccomp profile {seccomp['localhostProfile']} is not installed on the nodes")
    sa = pod.get("serviceAccountName")
    if sa and f"ServiceAccount/{ns}/{sa}" not in state["k8s"]:
        out.append(f"service account {sa} does not exist")
    return out


def db_available(ns, name):
    db = state["k8s"].get(f"DBInstance/{ns}/{name}")
    if not db:
        refuse(f"kubectl wait: dbinstance/{name} does not exist in {ns}")
    if "ack-rds-controller" not in state["addons"]:
        refuse("kubectl wait: the ACK RDS controller is not installed")
    identity = state["pod_identity"].get("ack-system/ack-rds-controller")
    spec = db["spec"]
    db_arn = f"arn:aws:rds:{REGION}:{ACCOUNT}:db:{spec['dbInstanceIdentifier']}"
    # What CreateDBInstance with manageMasterUserPassword needs of its caller.
    calls = [("rds:CreateDBInstance", db_arn, {}),
             ("rds:CreateDBInstance", f"arn:aws:rds:{REGION}:{ACCOUNT}:subgrp:{spec['dbSubnetGroupName']}", {}),
             ("rds:AddTagsToResource", db_arn, {}), ("rds:DescribeDBInstances", db_arn, {})]
    if spec.get("manageMasterUserPassword"):
        calls += [("secretsmanager:CreateSecret", f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:rds!db-0a1b2c", {}),
                  ("kms:GenerateDataKey", f"arn:aws:kms:{REGION}:{ACCOUNT}:key/0a1b2c",
                   {"kms:ViaService": f"secretsmanager.{REGION}.amazonaws.com"})]
    for action, resource, context in calls:
        if identity is None or identity["policy"] is None or not allows(identity["policy"], action, resource, context):
            managed = identity and identity["managed"]
            refuse(f"ACK: CreateDBInstance {name}: AccessDenied for {action} on {resource}"
                   + (f" (managed policies {managed} are not modelled beyond rds)" if managed else ""))
    for log in spec.get("enableCloudwatchLogsExports", []):
        group = f"/aws/rds/instance/{spec['dbInstanceIdentifier']}/{log}"
        if group not in state["log_groups"]:
            state["log_groups"][group] = None  # RDS makes it, never expiring
            state["owned"]["logs:" + group] = "rds"
    arn = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:rds!db-{name}-0a1b2c"
    state["sm"][arn] = {"value": json.dumps({"username": spec["masterUsername"], "password": "generated"}),
                        "tags": {"aws:rds:primaryDBInstanceArn": db_arn}}
    db["status"] = {"dbInstanceStatus": "available", "endpoint": {"address": f"{name}.abc.{REGION}.rds.amazonaws.com"},
                    "masterUserSecret": {"secretARN": arn}}
    state["db"][ns] = True
    # FieldExports of this instance: a patch of a ConfigMap that must exist.
    for fe in objects(ns, "FieldExport"):
        if fe["spec"]["from"]["resource"]["name"] != name:
            continue
        to = fe["spec"]["to"]
        cm = state["k8s"].get(f"ConfigMap/{ns}/{to['name']}")
        if cm is None:
            fe["status"] = {"error": "unable to get existing configmap"}
            continue
        cm.setdefault("data", {})[to["key"]] = db["status"]["endpoint"]["address"]
    save()


def run_job(ns, name):
    job = state["k8s"].get(f"Job/{ns}/{name}")
    if not job:
        refuse(f"kubectl wait: job/{name} does not exist")
    pod = job["spec"]["template"]["spec"]
    problems = pod_problems(ns, pod)
    if problems:
        refuse(f"Job {ns}/{name} cannot start: {'; '.join(problems)}")
    c = pod["containers"][0]
    if c.get("command") == ["psql"]:
        env = {e["name"]: e for e in c["env"]}
        def from_secret(var):
            ref = env[var]["valueFrom"]["secretKeyRef"]
            es = next(x for x in objects(ns, "ExternalSecret") if x["spec"]["target"]["name"] == ref["name"])
            item = next(d for d in es["spec"]["data"] if d["secretKey"] == ref["key"])
            store = state["k8s"][f"SecretStore/{ns}/{es['spec']['secretStoreRef']['name']}"]["spec"]["provider"]["aws"]
            return json.loads(state["sm"][store.get("prefix", "") + item["remoteRef"]["key"]]["value"])[item["remoteRef"]["property"]]
        if not state["db"].get(ns):
            refuse(f"Job {ns}/{name}: the database is not available")
        master = json.loads(next(v for k, v in state["sm"].items() if k.startswith("arn:") and f"db-petstore-{ns.removeprefix('petstore-')}-" in k)["value"])
        if from_secret("PGUSER") != master["username"]:
            refuse(f"Job {ns}/{name}: password authentication failed for the master user")
        state["db_roles"][ns] = sorted({from_secret("APP_ROLE"), from_secret("COMPONENT_ROLE")})
    job["status"] = {"succeeded": 1}
    save()


def rollout(ns):
    dep = state["k8s"].get(f"Deployment/{ns}/petstore")
    if not dep:
        refuse(f"kubectl rollout status: no deployment in {ns}")
    pod = dep["spec"]["template"]["spec"]
    problems = pod_problems(ns, pod)
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    if "DB_USER" in env and not problems:
        wanted = set()
        for var in ("DB_USER", "DB_COMPONENT_USER"):
            ref = env[var]["valueFrom"]["secretKeyRef"]
            es = next(x for x in objects(ns, "ExternalSecret") if x["spec"]["target"]["name"] == ref["name"])
            item = next(d for d in es["spec"]["data"] if d["secretKey"] == ref["key"])
            prefix = state["k8s"][f"SecretStore/{ns}/{es['spec']['secretStoreRef']['name']}"]["spec"]["provider"]["aws"].get("prefix", "")
            wanted.add(json.loads(state["sm"][prefix + item["remoteRef"]["key"]]["value"])[item["remoteRef"]["property"]])
        missing = wanted - set(state["db_roles"].get(ns, []))
        if missing:
            problems.append(f"readiness: password authentication failed for database roles {sorted(missing)} (not created yet)")
    ingress = state["k8s"].get(f"Ingress/{ns}/petstore")
    alb_problem = ingress_problem(ingress) if ingress else None
    ns_obj = state["k8s"].get(f"Namespace/{ns}", {})
    if alb_problem and ns_obj.get("metadata", {}).get("labels", {}).get("elbv2.k8s.aws/pod-readiness-gate-inject") == "enabled":
        problems.append(f"readiness gate: the ALB target never becomes healthy ({alb_problem})")
    if problems:
        refuse(f"rollout of petstore in {ns} never becomes ready: {'; '.join(problems)}")
    state["revision"][ns] = state["revision"].get(ns, 0) + 1
    if ingress and not alb_problem:
        state["albs"][ns] = f"k8s-{ns}-petstore-0123.{REGION}.elb.amazonaws.com"
    save()


def ingress_problem(ing) -> str | None:
    if "aws-load-balancer-controller" not in state["addons"]:
        return "no AWS Load Balancer Controller"
    ann = ing["metadata"].get("annotations", {})
    if "alb.ingress.kubernetes.io/subnets" in ann:
        names = [s.strip() for s in ann["alb.ingress.kubernetes.io/subnets"].split(",")]
        found = [s for s in state["subnets"] if s["name"] in names]
        if len(found) != len(names):
            return f"subnets {names} do not all exist"
    else:
        tag = "kubernetes.io/role/internal-elb" if ann.get("alb.ingress.kubernetes.io/scheme") == "internal" else "kubernetes.io/role/elb"
        if not [s for s in state["subnets"] if tag in s["tags"]]:
            return f"no subnet tagged {tag}"
    if '"HTTPS"' in ann.get("alb.ingress.kubernetes.io/listen-ports", "") and "alb.ingress.kubernetes.io/certificate-arn" not in ann:
        for rule in ing["spec"]["rules"]:
            if rule.get("host") not in state["certificates"]:
                return f"no certificate found for host: {rule.get('host')}"
    return None


def jsonpath(obj, path):
    path = path.strip("{}").lstrip(".")
    cur = obj
    for part in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if cur is None:
            return ""
        if part.startswith("["):
            i = int(part[1:-1])
            cur = cur[i] if isinstance(cur, list) and len(cur) > i else None
        else:
            cur = cur.get(part) if isinstance(cur, dict) else None
    return "" if cur is None else str(cur)


def kubectl(args):
    if args and args[0] == "kustomize":
        os.execv(os.environ["REAL_KUBECTL"], [os.environ["REAL_KUBECTL"], *args])
    ns = None
    if args[:1] == ["-n"]:
        ns, args = args[1], args[2:]
    verb = args[0]
    if verb == "apply":
        if args[1] == "-k":
            out = subprocess.run([os.environ["REAL_KUBECTL"], "kustomize", args[2]], check=True, capture_output=True, text=True).stdout
        else:
            out = sys.stdin.read() if args[2] == "-" else Path(args[2]).read_text()
        apply_objects([d for d in yaml.safe_load_all(out) if d], ns)
    elif verb == "get":
        what = args[1]
        if what == "namespace":
            sys.exit(0 if args[2] in state["namespaces"] else 1)
        kind, _, name = what.partition("/")
        if not name:
            name = args[2]
        kind = {"secret": "Secret", "configmap": "ConfigMap", "dbinstance": "DBInstance", "deployment": "Deployment",
                "ingress": "Ingress", "job": "Job"}[kind]
        obj = state["k8s"].get(f"{kind}/{ns}/{name}")
        if kind == "Deployment" and obj is not None:
            obj = {**obj, "metadata": {**obj["metadata"], "annotations": {"revision": str(state["revision"].get(ns, ""))}}}
        if kind == "Ingress" and obj is not None and ns in state["albs"]:
            obj = {**obj, "status": {"loadBalancer": {"ingress": [{"hostname": state["albs"][ns]}]}}}
        if obj is None:
            sys.exit(0 if "--ignore-not-found" in args else 1)
        out = value_of(args, "-o", "")
        if out.startswith("jsonpath="):
            path = out[len("jsonpath="):].replace("deployment\\.kubernetes\\.io/revision", "revision")
            print(jsonpath(obj, path), end="")
    elif verb == "create" and args[1] == "namespace":
        state["namespaces"] = sorted(set(state["namespaces"]) | {args[2]})
        save()
    elif verb == "create" and args[1] == "secret":
        data = dict(a[len("--from-literal="):].split("=", 1) for a in args if a.startswith("--from-literal="))
        apply_objects([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": args[3], "namespace": ns}, "data": data}], ns)
    elif verb == "wait":
        targets = [a for a in args[1:] if "/" in a and not a.startswith("--")]
        cond = value_of(args, "--for", next((a.split("=", 1)[1] for a in args if a.startswith("--for=")), ""))
        for t in targets:
            kind, name = t.split("/")
            if kind == "dbinstance":
                db_available(ns, name)
            elif kind == "externalsecret":
                es = state["k8s"].get(f"ExternalSecret/{ns}/{name}")
                problem = "it does not exist" if es is None else es_problem(ns, es)
                if problem:
                    refuse(f"ExternalSecret {ns}/{name} never becomes Ready: {problem}")
            elif kind == "job":
                run_job(ns, name)
            else:
                refuse(f"fake kubectl: wait {t} {cond} is not modelled")
    elif verb == "rollout":
        if args[1] == "status":
            rollout(ns)
    elif verb == "delete":
        kind = args[1]
        for name in [a for a in args[2:] if not a.startswith("--")]:
            k = {"externalsecret": "ExternalSecret", "job": "Job", "dbinstance": "DBInstance"}[kind]
            state["k8s"].pop(f"{k}/{ns}/{name}", None)
        save()
    elif verb in ("logs", "annotate"):
        pass
    else:
        refuse(f"fake kubectl: {shlex.join(args)} is not modelled")


def aws(args):
    args = [a for i, a in enumerate(args) if a != "--region" and (i == 0 or args[i - 1] != "--region")]
    service, op = args[0], args[1]
    if (service, op) == ("cloudformation", "deploy"):
        cloudformation_deploy(args)
    elif (service, op) == ("cloudformation", "describe-stacks"):
        stack = value_of(args, "--stack-name")
        if stack not in state["stacks"]:
            refuse(f"CloudFormation: stack {stack} does not exist")
        output = re.search(r"OutputKey=='(\w+)'", value_of(args, "--query")).group(1)
        print(state["stacks"][stack][output])
    elif service == "secretsmanager":
        name = value_of(args, "--secret-id") or value_of(args, "--name")
        if op == "describe-secret":
            sys.exit(0 if name in state["sm"] else 254)
        if op == "create-secret":
            if name in state["sm"]:
                refuse(f"Secrets Manager: {name} already exists")
            state["sm"][name] = {"value": value_of(args, "--secret-string"), "tags": {}}
            save()
        elif op == "get-secret-value":
            if name not in state["sm"]:
                refuse(f"Secrets Manager: no secret {name}")
            print(state["sm"][name]["value"])
    elif (service, op) == ("eks", "describe-cluster"):
        if not state["cluster"]:
            refuse("EKS: no cluster petstore")
        print(state["cluster"]["vpc"])
    elif (service, op) == ("ecr", "describe-images"):
        if value_of(args, "--repository-name") not in state["ecr"]:
            refuse("ECR: repository petstore does not exist")
    elif (service, op) == ("elbv2", "describe-load-balancers"):
        print("Z32O12XQLNTSW2")
    elif (service, op) == ("route53", "change-resource-record-sets"):
        zone = value_of(args, "--hosted-zone-id")
        if zone != state["hosted_zone"]:
            refuse(f"Route 53: hosted zone {zone} is not the one the certificates were validated in")
        change = json.loads(value_of(args, "--change-batch"))["Changes"][0]["ResourceRecordSet"]
        if change["AliasTarget"]["DNSName"] not in state["albs"].values():
            refuse(f"Route 53: {change['AliasTarget']['DNSName']} is no load balancer")
        state["dns"][change["Name"]] = change["AliasTarget"]["DNSName"]
        save()
    else:
        refuse(f"fake aws: {shlex.join(args)} is not modelled")


if __name__ == "__main__":
    tool = Path(sys.argv[0]).name
    with open(STATE.parent / "calls", "a") as fh:
        fh.write(f"{tool} {shlex.join(sys.argv[1:])}\n")
    {"aws": aws, "eksctl": eksctl, "helm": helm, "kubectl": kubectl}[tool](sys.argv[1:])
