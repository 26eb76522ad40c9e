"""What the benchmark commands share: building the two targets, starting one
on a fresh SQLite database, seeding it, loading it with wrk, and reading its
RSS and CPU time from /proc.

Which build of the service is measured:
- the local release build (default);
- PETSTORE_BENCH_BINARY=PATH: another binary, e.g. the image's static musl
  one (`podman cp` it out of the image), with PETSTORE_BENCH_COMPONENTS=DIR
  when it needs other components than build/components;
- PETSTORE_BENCH_IMAGE=IMAGE: the container image itself, run by podman
  confined as production runs it (read-only, UID 65532, no capabilities,
  no-new-privileges, the service's seccomp profile) on the host's network
  (the reference pays no NAT hop either). PETSTORE_BENCH_PODMAN holds
  podman's global arguments (e.g. scripts/container-test's --root/--runroot).
"""

import http.client
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
# PETSTORE_BENCH_BINARY: measure another build of the service, e.g. the
# image's static musl binary.
WASM = Path(os.environ.get("PETSTORE_BENCH_BINARY", TARGET / "release" / "petstore"))
# The native reference: the same public API in plain axum + sqlx, kept
# outside this repository (../shared/native-reference, read-only in CI), so
# it is built into a target folder of its own.
REFERENCE_SRC = Path(os.environ.get("PETSTORE_REFERENCE_DIR", ROOT.parent / "shared" / "native-reference"))
REFERENCE_TARGET = TARGET / "native-reference"
REFERENCE = REFERENCE_TARGET / "release" / "petstore-axum"
IMAGE = os.environ.get("PETSTORE_BENCH_IMAGE")
PODMAN = ["podman", *os.environ.get("PETSTORE_BENCH_PODMAN", "").split()]
# runc, as scripts/container-test uses (crun does not work on these machines).
PODMAN_ENV = {**os.environ, "CONTAINERS_CONF": os.environ.get("CONTAINERS_CONF", str(ROOT / "container" / "containers.conf"))}
# PETSTORE_BENCH_COMPONENTS: the components another build of the service
# loads (e.g. a build from before a change of the WIT).
COMPONENTS = Path(os.environ.get("PETSTORE_BENCH_COMPONENTS", ROOT / "build" / "components"))
PETS = 1000
# (label, wrk script in bench/wrk)
SCENARIOS = [("GET /api/v1/pets/{id}", "get_by_id"), ("GET /api/v1/pets?limit=20", "list"),
             ("POST /api/v1/pets", "create")]


def add_route(routes: Path, prefix: str, file: str, name: str, tables: tuple[str, ...] = ()) -> None:
    """Route `prefix` to component `file` (named `name`) in the routes.toml
    at `routes`, with the database `tables` it may use."""
    text = routes.read_text().replace("[routes]\n", f'[routes]\n"{prefix}" = "{file}"\n', 1)
    if tables:
        listed = ", ".join(f'"{t}"' for t in tables)
        text = text.replace("[tables]\n", f"[tables]\n{name} = [{listed}]\n", 1)
    routes.write_text(text)


def need_wrk(command: str) -> None:
    if not shutil.which("wrk"):
        raise SystemExit(f"{command} needs wrk: apt-get install -y wrk")


def build(native: bool = True) -> None:
    """The components and the service's release binary (and the native
    reference's, unless `native` is False)."""
    subprocess.run([str(ROOT / "scripts" / "build-components")], check=True)
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "petstore-host"], cwd=ROOT, check=True)
    if native:
        if not (REFERENCE_SRC / "Cargo.toml").exists():
            raise SystemExit(f"no native reference at {REFERENCE_SRC} (set PETSTORE_REFERENCE_DIR)")
        subprocess.run(["cargo", "build", "--release", "--quiet", "--manifest-path", str(REFERENCE_SRC / "Cargo.toml"),
                        "--target-dir", str(REFERENCE_TARGET)], check=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(target: str, workdir: Path, env: dict | None = None, binary: Path | None = None) -> tuple[subprocess.Popen, int]:
    """Start `wasm` (the service, compiling its components at start) or
    `native` (the native reference) on a fresh SQLite file in `workdir` (or
    the `DATABASE_URL` in `env`); wait until ready; seed. `binary` names
    another build of the service than WASM (`target` then names its files)."""
    database = f"sqlite://{workdir / (target + '.db')}"
    if binary is not None:
        extra = {"COMPONENTS_DIR": str(COMPONENTS), "DATABASE_URL": database}
    elif target == "wasm" and IMAGE:
        # The image's own precompiled components; its database in workdir.
        binary, extra = None, {"DATABASE_URL": f"sqlite:///data/{target}.db"}
    elif target == "wasm":
        binary, extra = WASM, {"COMPONENTS_DIR": str(COMPONENTS), "DATABASE_URL": database}
    else:
        binary, extra = REFERENCE, {"DATABASE_URL": database + "?mode=rwc"}
    port = free_port()
    full_env = {"PATH": os.environ["PATH"], "PORT": str(port), "ADMIN_PORT": str(free_port()),
                "METRICS_PORT": str(free_port()), "LOG_LEVEL": "info",
                "SHUTDOWN_GRACE_MS": "0", **extra, **(env or {})}
    if binary is None:
        proc = Container.run(IMAGE, workdir, {k: v for k, v in full_env.items() if k != "PATH"}, workdir / f"{target}.log")
    else:
        with open(workdir / f"{target}.log", "wb") as log:
            proc = subprocess.Popen([str(binary)], env=full_env, cwd=workdir, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/health/ready", timeout=1) as r:
                if r.status == 200:
                    break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"{target} did not become ready")
            time.sleep(0.05)
    seed(port)
    return proc, port


class Container:
    """The service's image under podman, confined as in production, with the
    part of subprocess.Popen's interface the benchmarks use (pid: the
    service's process on the host, for its CPU time and RSS)."""

    def __init__(self, name: str, log: Path):
        self.name, self.log = name, log
        self.pid = int(self._podman("inspect", "--format", "{{.State.Pid}}", name))

    @classmethod
    def run(cls, image: str, workdir: Path, env: dict, log: Path) -> "Container":
        name = f"petstore-bench-{os.getpid()}"
        workdir.chmod(0o777)  # the service runs as 65532 and writes its database here
        profile = ROOT / "k8s" / "seccomp" / "petstore.json"
        args = ["run", "-d", "--name", name, "--network", "host", "--read-only", "--user", "65532:65532",
                "--cap-drop=ALL", "--security-opt", "no-new-privileges", "--security-opt", f"seccomp={profile}",
                "--tmpfs", "/tmp:rw,size=64m,mode=1777", "-v", f"{workdir}:/data"]
        for k, v in env.items():
            args += ["-e", f"{k}={v}"]
        subprocess.run([*PODMAN, *args, image], check=True, capture_output=True, env=PODMAN_ENV)
        return cls(name, log)

    def _podman(self, *args: str) -> str:
        return subprocess.run([*PODMAN, *args], check=True, capture_output=True, text=True, env=PODMAN_ENV).stdout.strip()

    def poll(self):
        running = self._podman("inspect", "--format", "{{.State.Running}}", self.name)
        return None if running == "true" else int(self._podman("inspect", "--format", "{{.State.ExitCode}}", self.name))

    def terminate(self) -> None:
        subprocess.run([*PODMAN, "stop", "-t", "30", self.name], capture_output=True, env=PODMAN_ENV)
        logs = subprocess.run([*PODMAN, "logs", self.name], capture_output=True, text=True, env=PODMAN_ENV)
        self.log.write_text(logs.stdout + logs.stderr)
        subprocess.run([*PODMAN, "rm", "-f", self.name], capture_output=True, env=PODMAN_ENV)

    def wait(self, timeout: float | None = None) -> None:
        pass


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=30)


def seed(port: int) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(PETS):
        body = json.dumps({"name": f"pet-{i}", "species": ["dog", "cat", "bird"][i % 3], "tags": [f"t{i % 7}"]})
        conn.request("POST", "/api/v1/pets", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        if resp.status != 201:
            raise SystemExit(f"seeding failed: {resp.status}")


def wrk(port: int, script: str, duration: str, pid: int | None = None) -> dict:
    """One wrk -t2 -c64 run; with `pid`, also the CPU time that process
    spent per request (µs) during the run."""
    cpu_before = cpu_seconds(pid) if pid else 0.0
    out = subprocess.run(wrk_command(port, script, duration), env=wrk_env(), capture_output=True, text=True,
                         check=True).stdout
    r = wrk_summary(out)
    result = {"rps": r["requests"] / (r["duration_us"] / 1e6), "p50_ms": r["p50_us"] / 1000,
              "p99_ms": r["p99_us"] / 1000, "errors": r["errors"], "requests": r["requests"]}
    if pid:
        result["cpu_us_per_request"] = (cpu_seconds(pid) - cpu_before) * 1e6 / max(r["requests"], 1)
    return result


def wrk_command(port: int, script: str, duration: str) -> list[str]:
    return ["wrk", "-t2", "-c64", f"-d{duration}", "-s", str(ROOT / "bench" / "wrk" / f"{script}.lua"),
            f"http://127.0.0.1:{port}"]


def wrk_env() -> dict:
    return {**os.environ, "BENCH_DIR": str(ROOT / "bench"), "PETS": str(PETS)}


def wrk_summary(out: str) -> dict:
    """The JSON line bench/wrk/summary.lua prints when wrk is done."""
    return json.loads(out.strip().splitlines()[-1])


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def answers_by_status(workdir: Path, target: str) -> dict[int, int]:
    """Status counts of the API requests in the service's access log (the
    native baseline logs nothing). The harness's own readiness polls are left
    out: a 503 from /health/ready while the service starts is the answer
    they wait for, not a failed request."""
    counts: dict[int, int] = {}
    path = workdir / f"{target}.log"
    for line in path.read_text(errors="replace").splitlines() if path.exists() else []:
        if '"message":"request"' in line:
            entry = json.loads(line)
            if entry.get("path", "").startswith("/api/v1/health"):
                continue
            counts[entry.get("status", 0)] = counts.get(entry.get("status", 0), 0) + 1
    return counts
