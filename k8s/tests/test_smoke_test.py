"""k8s/smoke-test, the first real deployment's checks, run against stand-ins
for kubectl, curl and getent that answer like a healthy environment unless
told otherwise: each check must FAIL when what it checks is not so (a probe
pod that never ran, a probe that got through, a scrape target that is down,
a seccomp profile not installed), not only pass when it is."""

import os
import subprocess
from pathlib import Path

import pytest

from conftest import K8S

KUBECTL = r"""#!/usr/bin/env bash
s=$STATE
case "$*" in
  *"get nodes -o custom-columns"*) echo "NODE GROUP CPU MEMORY PODS OS" ;;
  *"get nodes -o jsonpath"*) echo "1500000Ki" ;;
  *"get seccompprofile"*) cat "$s/profile" ;;
  *"get configmap petstore-database"*) printf 'petstore.abc.eu-west-1.rds.amazonaws.com' ;;
  *"get ingress petstore -o jsonpath={.spec.rules[0].host}"*) printf 'petstore.staging.example.com' ;;
  *"get ingress petstore -o jsonpath={.status"*) printf 'k8s-alb.eu-west-1.elb.amazonaws.com' ;;
  *" run smoke-np-"*) cat "$s/probe"; exit "$(cat "$s/probe-exit")" ;;
  *"port-forward"*) sleep 30 ;;
  *) exit 0 ;;
esac
"""
CURL = r"""#!/usr/bin/env bash
case "$*" in
  *"/api/v1/targets"*) cat "$STATE/targets" ;;
  *"-X POST"*) echo '{"id": 7}' ;;
  *"%{http_code}"*) echo 301 ;;
  *) exit 0 ;;
esac
"""
GETENT = "#!/usr/bin/env bash\necho '10.0.0.10 alb'\n"
UP = '{"data": {"activeTargets": [{"labels": {"namespace": "petstore-staging", "job": "petstore-metrics"}, "health": "up"}]}}'


def smoke(tmp_path: Path, *, probe="PROBE blocked", probe_exit=0, targets=UP, profile="Installed"):
    state, bin_dir = tmp_path / "state", tmp_path / "bin"
    state.mkdir()
    bin_dir.mkdir()
    for name, text in [("kubectl", KUBECTL), ("curl", CURL), ("getent", GETENT)]:
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    (state / "probe").write_text(probe + "\n")
    (state / "probe-exit").write_text(str(probe_exit))
    (state / "targets").write_text(targets)
    (state / "profile").write_text(profile)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STATE": str(state)}
    return subprocess.run([str(K8S / "smoke-test"), "staging"], env=env, capture_output=True, text=True, timeout=120)


def test_a_healthy_environment_passes(tmp_path):
    result = smoke(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "smoke test of staging passed" in result.stdout


@pytest.mark.parametrize("probe, probe_exit", [
    ('Error from server (BadRequest): pod smoke-np is waiting to start: image can\'t be pulled', 1),
    ("pod default/smoke-np was unschedulable", 1),
    ("PROBE unresolved", 0),
    ("PROBE reached", 0),
])
def test_isolation_fails_unless_the_probe_ran_and_timed_out(tmp_path, probe, probe_exit):
    result = smoke(tmp_path, probe=probe, probe_exit=probe_exit)
    assert result.returncode == 1 and "FAIL  a pod elsewhere reaching the service" in result.stderr, result.stdout + result.stderr


def test_a_scrape_target_that_is_down_fails(tmp_path):
    result = smoke(tmp_path, targets=UP.replace('"up"', '"down"'))
    assert result.returncode == 1 and "0 of 1 up" in result.stderr


def test_no_scrape_target_at_all_fails(tmp_path):
    result = smoke(tmp_path, targets='{"data": {"activeTargets": []}}')
    assert result.returncode == 1 and "0 of 0 up" in result.stderr


@pytest.mark.parametrize("status", ["Error", "Pending", ""])
def test_a_seccomp_profile_not_installed_fails(tmp_path, status):
    result = smoke(tmp_path, profile=status)
    assert result.returncode == 1 and "not Installed" in result.stderr
