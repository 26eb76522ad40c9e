"""What the offline tests of k8s/ share: rendering each overlay and each
environment's platform objects, and small lookups. Run through k8s/tests/run."""

import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
UPSTREAM = K8S / "tests" / "upstream"
OVERLAYS = ["development", "staging", "production"]


def render(path: Path, loose: bool = False) -> list[dict]:
    """`kubectl kustomize PATH`; `loose` for the DBA step, whose SQL lives
    outside its folder (k8s/database-roles/base/kustomization.yaml)."""
    flags = ["--load-restrictor", "LoadRestrictionsNone"] if loose else []
    out = subprocess.run(["kubectl", "kustomize", *flags, str(path)], check=True, capture_output=True, text=True).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def load_all(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def one(objs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [o for o in objs if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def container(objs: list[dict]) -> dict:
    return one(objs, "Deployment", "petstore")["spec"]["template"]["spec"]["containers"][0]


def env_of(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c["env"]}


def cluster_config() -> dict:
    return load_all(K8S / "cluster" / "cluster.yaml")[0]


def addons() -> list[dict]:
    return yaml.safe_load((K8S / "cluster" / "addons" / "addons.yaml").read_text())["addons"]


def chart_values(addon: dict) -> dict:
    """The add-on's effective values: the pinned chart's defaults with ours merged in."""
    defaults = yaml.safe_load((UPSTREAM / addon["name"] / "values.yaml").read_text()) or {}
    ours = yaml.safe_load((K8S / "cluster" / "addons" / addon["values"]).read_text()) or {}
    return merge(defaults, ours)


def merge(base, over):
    if isinstance(base, dict) and isinstance(over, dict):
        return {k: merge(base.get(k), v) if k in base else v for k, v in over.items()} | {k: v for k, v in base.items() if k not in over}
    return over


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """Each overlay: what the deploy pipeline applies."""
    return {env: render(K8S / "overlays" / env) for env in OVERLAYS}


@pytest.fixture(scope="session")
def platform() -> dict[str, list[dict]]:
    """Each environment's platform objects: what a cluster admin applies once."""
    return {env: render(K8S / "platform" / env) for env in OVERLAYS}


@pytest.fixture(scope="session")
def database_roles() -> dict[str, list[dict]]:
    """Each database's DBA step (k8s/database-roles): what a cluster admin applies once."""
    return {env: render(K8S / "database-roles" / env, loose=True) for env in ["staging", "production"]}


def pods_of(objs: list[dict]):
    """(kind, name, pod spec, pod metadata) of every workload among `objs`."""
    for o in objs:
        if o["kind"] in ("Deployment", "Job"):
            yield o["kind"], o["metadata"]["name"], o["spec"]["template"]["spec"], o["spec"]["template"].get("metadata", {})
        if o["kind"] == "CronJob":
            t = o["spec"]["jobTemplate"]["spec"]["template"]
            yield o["kind"], o["metadata"]["name"], t["spec"], t.get("metadata", {})


@pytest.fixture(scope="session")
def cluster_objects() -> list[dict]:
    """Cluster-wide objects applied by an admin: seccomp profiles, databases, the placeholder."""
    objs = load_all(K8S / "cluster" / "seccomp" / "seccompprofiles.yaml") + load_all(K8S / "cluster" / "overprovisioning.yaml")
    objs += render(K8S / "cluster" / "dashboards")
    for env in ["staging", "production"]:
        objs += load_all(K8S / "cluster" / "rds" / f"{env}.yaml")
    return objs
