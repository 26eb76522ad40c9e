"""k8s/bring-up, walked from an empty account against a simulated AWS
account and cluster (fake_account.py, installed as aws, eksctl, helm and
kubectl): every step runs for real against the simulation, which refuses a
step whose inputs do not exist yet, the way the real service would (its
docstring names the upstream behaviour behind each refusal). The walk ends
with the service rolled out in every environment behind its DNS name."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import K8S

STEPS = ["pipeline-stack", "certificates", "cluster", "aws-stack", "secrets", "platform", "alerting", "addons",
         "cluster-objects", "databases", "database-roles", "development-admin", "deploy", "dns"]


def walk(tmp_path: Path, steps=STEPS, state: dict | None = None, **extra):
    account = tmp_path / "account"
    bin_dir = tmp_path / "bin"
    account.mkdir(parents=True, exist_ok=True)
    bin_dir.mkdir(parents=True, exist_ok=True)
    for tool in ["aws", "eksctl", "helm", "kubectl"]:
        link = bin_dir / tool
        if not link.exists():
            link.symlink_to(K8S / "tests" / "fake_account.py")
    if state is not None:
        (account / "state.json").write_text(json.dumps(state))
    (tmp_path / "minisign.pub").write_text("untrusted comment: minisign public key\nRWQf6LRCGA9i53mlYecO4IzT51TGPpvWucNSCh1CBM0QTaLn73Y7GFO3\n")
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_ACCOUNT": str(account),
           "REAL_KUBECTL": shutil.which("kubectl"), "HOSTED_ZONE_ID": "Z0123456789ABCDEFGHIJ", "DOMAIN": "example.com",
           "IMAGE_TAG": "0123456789ab", "SIGNING_PUBLIC_KEY": str(tmp_path / "minisign.pub"),
           "ALERT_SLACK_WEBHOOK_URL": "https://hooks.slack.com/services/T0/B0/x", **extra}
    result = subprocess.run([str(K8S / "bring-up"), *steps], env=env, capture_output=True, text=True, timeout=600)
    refusals = (account / "refusals").read_text().splitlines() if (account / "refusals").exists() else []
    final = json.loads((account / "state.json").read_text()) if (account / "state.json").exists() else {}
    return result, refusals, final


@pytest.fixture(scope="module")
def whole_walk(tmp_path_factory):
    return walk(tmp_path_factory.mktemp("walk"))


def test_bring_up_reaches_a_running_service_in_every_environment_from_an_empty_account(whole_walk):
    result, refusals, state = whole_walk
    assert result.returncode == 0 and not refusals, "\n".join(refusals) or result.stderr[-3000:]
    # Every environment rolled out, behind its host, with its certificate.
    assert set(state["revision"]) == {"petstore-development", "petstore-staging", "petstore-production"}
    assert set(state["dns"]) == {"petstore.dev.example.com", "petstore.staging.example.com", "petstore.example.com"}
    # The database roles exist before the service that logs in with them.
    assert state["db_roles"] == {ns: ["petstore", "petstore_component"] for ns in ["petstore-staging", "petstore-production"]}
    # Each FieldExport found its ConfigMap (it creates none).
    for key, obj in state["k8s"].items():
        if obj["kind"] == "FieldExport":
            assert "error" not in obj.get("status", {}), (key, obj["status"])
    # No log group that never expires (RDS makes one unless it exists).
    assert all(days for days in state["log_groups"].values()), state["log_groups"]
    # The master credentials left the cluster with the DBA step.
    assert not [k for k in state["k8s"] if k.startswith("ExternalSecret/") and "/dba-" in k]


def test_the_secrets_it_makes_are_what_the_service_accepts(whole_walk):
    _, _, state = whole_walk
    for env in ["staging", "production"]:
        token = json.loads(state["sm"][f"petstore/{env}/admin"]["value"])["token"]
        assert len(token.encode()) >= 32, "the service refuses an ADMIN_TOKEN under 32 bytes"
        key = json.loads(state["sm"][f"petstore/{env}/component-artifact-key"]["value"])["key"]
        assert re.fullmatch(r"[0-9a-f]{64}", key), "64 hex digits: 256 random bits"
    dev = state["k8s"]["Secret/petstore-development/petstore-admin"]["data"]["ADMIN_TOKEN"]
    assert len(dev.encode()) >= 32


@pytest.mark.parametrize("steps, refusal", [
    # The access entries name the pipeline's roles: the cluster cannot come first.
    (["cluster"], "CreateAccessEntry: principal arn:aws:iam::111122223333:role/petstore-ci-deploy-"),
    # The database stack imports the cluster's VPC and subnets.
    (["pipeline-stack", "aws-stack"], "No export named eksctl-petstore-cluster::"),
])
def test_a_step_that_needs_something_made_later_is_refused(tmp_path, steps, refusal):
    result, refusals, _ = walk(tmp_path, steps)
    assert result.returncode != 0 and any(refusal in r for r in refusals), refusals


def test_the_service_is_not_deployed_before_its_database_roles_exist(tmp_path):
    steps = [s for s in STEPS if s not in ("database-roles", "dns")]
    result, refusals, _ = walk(tmp_path, steps)
    assert result.returncode != 0
    assert any("password authentication failed for database roles" in r for r in refusals), refusals


def test_an_account_that_has_githubs_oidc_provider_keeps_it(tmp_path):
    provider = "arn:aws:iam::111122223333:oidc-provider/token.actions.githubusercontent.com"
    seeded = {"roles": {}, "oidc": [provider], "ecr": [], "exports": {}, "stacks": {}, "owned": {provider: "someone-else"},
              "subnets": [], "subnet_groups": [], "security_groups": [], "log_groups": {}, "certificates": [], "cluster": None,
              "pod_identity": {}, "irsa": {}, "sm": {}, "namespaces": [], "crds": {}, "addons": [], "k8s": {}, "db": {},
              "db_roles": {}, "revision": {}, "albs": {}, "dns": {}, "hosted_zone": None}
    result, refusals, _ = walk(tmp_path / "a", ["pipeline-stack"], state=seeded)
    assert result.returncode != 0 and any("EntityAlreadyExists" in r for r in refusals), refusals
    result, refusals, state = walk(tmp_path / "b", ["pipeline-stack"], state=seeded, GITHUB_OIDC_PROVIDER_ARN=provider)
    assert result.returncode == 0 and not refusals, refusals
    assert "petstore-ci-deploy-production" in state["roles"]


def test_install_addons_refuses_to_guess_the_vpc(tmp_path):
    (tmp_path / "aws").write_text("#!/usr/bin/env bash\necho 'An error occurred (AccessDenied)' >&2; exit 254\n")
    (tmp_path / "helm").write_text(f"#!/usr/bin/env bash\necho \"helm $*\" >> {tmp_path}/calls\n")
    for f in ("aws", "helm"):
        (tmp_path / f).chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}"}
    result = subprocess.run([str(K8S / "cluster" / "install-addons")], env=env, capture_output=True, text=True)
    assert result.returncode == 1 and "cannot read the VPC" in result.stderr
    assert not (tmp_path / "calls").exists(), "no add-on is installed with a made-up VPC"
