"""The service's Grafana dashboard (k8s/cluster/dashboards): Grafana's sidecar,
as the pinned kube-prometheus-stack configures it, picks it up and finds its
datasource; and every query of every panel returns data from a real
Prometheus (Debian's package) scraping a real host under load."""

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import K8S, ROOT, addons, chart_values, render

DASHBOARD = json.loads((K8S / "cluster" / "dashboards" / "petstore.json").read_text())
NAMESPACE = "petstore-test"
# What Grafana puts in place of its variables; the rate window is a few
# scrapes of the test's 1 s interval.
VARIABLES = {"$namespace": NAMESPACE, "$__rate_interval": "10s"}


def grafana_values():
    stack = next(a for a in addons() if a["name"] == "kube-prometheus-stack")
    return chart_values(stack)["grafana"]


def queries():
    return [(panel["title"], target["expr"]) for panel in DASHBOARD["panels"] if panel["type"] != "row"
            for target in panel["targets"]]


def test_grafanas_sidecar_loads_the_dashboard_and_its_datasource_exists():
    grafana = grafana_values()
    assert grafana["enabled"] is True
    sidecar = grafana["sidecar"]["dashboards"]
    assert sidecar["enabled"] is True
    [config_map] = render(K8S / "cluster" / "dashboards")
    # The sidecar watches ConfigMaps with its label and value, in every
    # namespace (ALL) or its own (monitoring).
    assert config_map["metadata"]["labels"][sidecar["label"]] == sidecar["labelValue"]
    assert sidecar["searchNamespace"] in ("ALL", config_map["metadata"]["namespace"])
    assert json.loads(config_map["data"]["petstore.json"]) == DASHBOARD
    # Every panel and target names the datasource the chart provisions.
    datasources = grafana["sidecar"]["datasources"]
    assert datasources["enabled"] and datasources["defaultDatasourceEnabled"]
    for panel in DASHBOARD["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == datasources["uid"], panel["title"]
            assert panel["targets"], panel["title"]
            assert all(t["datasource"]["uid"] == datasources["uid"] for t in panel["targets"]), panel["title"]
    ids = [p["id"] for p in DASHBOARD["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, data=None, headers=None, method=None):
    request = urllib.request.Request(url, data=data, headers=headers or {}, method=method)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (urllib.error.URLError, ConnectionError):
        return 0, b""  # not listening yet, or gone


def eventually(what, check, within=60.0):
    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {within} s")
        time.sleep(0.2)


TOKEN = "dashboard-token-dashboard-token-dashboard"


@pytest.fixture(scope="module")
def host():
    """The release host on SQLite, built if needed, with the built components
    and a test component (`versioned`) that runs a canary the whole time."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "petstore-host"], cwd=ROOT, check=True)
    built = ROOT / "build" / "components"
    if not (built / "testing" / "version_b.wasm").exists():
        subprocess.run([str(ROOT / "scripts" / "build-components")], check=True)
    work = Path(tempfile.mkdtemp())
    components = work / "components"
    shutil.copytree(built, components)
    shutil.copy(built / "testing" / "version_a.wasm", components / "versioned.wasm")
    routes = (components / "routes.toml").read_text()
    (components / "routes.toml").write_text(routes.replace("[routes]\n", '[routes]\n"/api/v1/versioned" = "versioned.wasm"\n', 1))
    ports = {"PORT": free_port(), "ADMIN_PORT": free_port(), "METRICS_PORT": free_port()}
    env = {**os.environ, **{k: str(v) for k, v in ports.items()}, "DATABASE_URL": f"sqlite://{work}/petstore.db",
           "COMPONENTS_DIR": str(components), "LOG_LEVEL": "warn", "SHUTDOWN_GRACE_MS": "0",
           "ADMIN_TOKEN": TOKEN, "CANARY_MIN_REQUESTS": "100000000"}
    process = subprocess.Popen([str(target / "release" / "petstore")], env=env, stdout=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{ports['PORT']}"
    eventually("the host becoming ready", lambda: process.poll() is None and get(f"{base}/api/v1/health/ready")[0] == 200)
    status, body = get(f"http://127.0.0.1:{ports['ADMIN_PORT']}/admin/components/versioned?canary=50",
                       (built / "testing" / "version_b.wasm").read_bytes(), {"Authorization": f"Bearer {TOKEN}"}, "PUT")
    assert status == 200, body
    yield base, ports["METRICS_PORT"]
    process.terminate()
    process.wait(timeout=30)
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def prometheus(host):
    """Debian's Prometheus scraping the host's metrics port every second, with
    the labels the cluster's ServiceMonitor gives (job, namespace, pod)."""
    binary = shutil.which("prometheus")
    assert binary, "no prometheus on PATH: k8s/tests/run takes it out of Debian's package"
    _, metrics_port = host
    work = Path(tempfile.mkdtemp())
    config = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
              "scrape_configs": [{"job_name": "petstore-metrics", "static_configs": [
                  {"targets": [f"127.0.0.1:{metrics_port}"], "labels": {"namespace": NAMESPACE, "pod": "petstore-0"}}]}]}
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    process = subprocess.Popen([binary, f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
                                f"--web.listen-address=127.0.0.1:{port}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    eventually("Prometheus becoming ready", lambda: process.poll() is None and get(f"{base}/-/ready")[0] == 200)
    yield base
    process.terminate()
    process.wait(timeout=30)
    shutil.rmtree(work, ignore_errors=True)


@pytest.fixture(scope="module")
def load(host):
    """Clients making every kind of request until the module ends."""
    base, _ = host
    stop = threading.Event()
    failures = []
    json_type = {"content-type": "application/json"}

    def run():
        while not stop.is_set():
            status, body = get(f"{base}/api/v1/pets", json.dumps({"name": "Rex", "species": "dog"}).encode(), json_type)
            if status != 201:
                failures.append((status, body))
                return
            pet = json.loads(body)["id"]
            get(f"{base}/api/v1/pets/{pet}")
            get(f"{base}/api/v1/pets?limit=20")
            get(f"{base}/api/v1/pets/999999999")
            get(f"{base}/api/v1/orders", json.dumps({"pet_id": pet}).encode(), json_type)
            get(f"{base}/api/v1/store/inventory")
            get(f"{base}/api/v1/versioned")

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    yield failures
    stop.set()
    thread.join(timeout=10)


def query(prometheus, expr):
    status, body = get(f"{prometheus}/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
    answer = json.loads(body)
    assert status == 200 and answer["status"] == "success", f"{expr}: {answer}"
    return answer["data"]["result"]


def substituted(expr):
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"a variable the test does not fill in: {expr}"
    return expr


def test_every_panel_returns_data_from_a_host_under_load(prometheus, load):
    # Enough scrapes for a rate over the window.
    eventually("scrapes of the host", lambda: query(prometheus, 'count_over_time(up{job="petstore-metrics"}[1m]) >= 5'))
    # The environment variable lists the namespace.
    variable = DASHBOARD["templating"]["list"][0]["query"]["query"]
    metric = variable.removeprefix("label_values(").split(",")[0]
    status, body = get(f"{prometheus}/api/v1/label/namespace/values?" + urllib.parse.urlencode({"match[]": metric}))
    assert status == 200 and NAMESPACE in json.loads(body)["data"]
    empty = [(title, expr) for title, expr in queries() if not query(prometheus, substituted(expr))]
    assert not empty, "panels without data:\n" + "\n".join(f"  {title}: {expr}" for title, expr in empty)
    assert not load, f"the load stopped: {load}"
    print(f"{len(queries())} queries of {len(DASHBOARD['panels'])} panels and rows returned data")
