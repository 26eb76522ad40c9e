"""k8s/deploy, the one way an overlay is applied, run against stand-ins for
kubectl and aws that record what they are asked and fail where told: a
failed apply or rollout is undone, and only when the Deployment moved."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import K8S

STUB_KUBECTL = r"""#!/usr/bin/env bash
# Records every call; `kustomize` goes to the real kubectl.
echo "kubectl $*" >> "$STATE/calls"
case "$1" in
  kustomize) exec "$REAL_KUBECTL" "$@" ;;
esac
case "$*" in
  *"get deployment/petstore"*) cat "$STATE/revision" 2>/dev/null; exit 0 ;;
  apply*)
    cp "${@: -1}" "$STATE/applied.yaml"
    [ -f "$STATE/apply-moves" ] && echo $(( $(cat "$STATE/revision") + 1 )) > "$STATE/revision"
    exit "$(cat "$STATE/apply-exit")" ;;
  *"rollout status"*) exit "$(cat "$STATE/status-exit")" ;;
  *"rollout undo"*) exit 0 ;;
esac
"""
STUB_AWS = """#!/usr/bin/env bash
echo "aws $*" >> "$STATE/calls"
exit "$(cat "$STATE/image-exit")"
"""


def deploy(tmp_path: Path, *, revision="4", apply_exit=0, apply_moves=True, status_exit=0, image_exit=0, tag="0123456789ab"):
    state = tmp_path / "state"
    bin_dir = tmp_path / "bin"
    state.mkdir()
    bin_dir.mkdir()
    (bin_dir / "kubectl").write_text(STUB_KUBECTL)
    (bin_dir / "aws").write_text(STUB_AWS)
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    if revision is not None:
        (state / "revision").write_text(revision)
    if apply_moves:
        (state / "apply-moves").touch()
    (state / "apply-exit").write_text(str(apply_exit))
    (state / "status-exit").write_text(str(status_exit))
    (state / "image-exit").write_text(str(image_exit))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STATE": str(state), "REAL_KUBECTL": shutil.which("kubectl")}
    result = subprocess.run([str(K8S / "deploy"), "production", tag], env=env, capture_output=True, text=True)
    calls = (state / "calls").read_text().splitlines() if (state / "calls").exists() else []
    return result, calls, state


def undos(calls):
    return [c for c in calls if "rollout undo" in c]


def test_a_healthy_rollout_applies_the_pushed_image_and_undoes_nothing(tmp_path):
    result, calls, state = deploy(tmp_path)
    assert result.returncode == 0, result.stderr
    applied = (state / "applied.yaml").read_text()
    assert "petstore:0123456789ab" in applied and "set-by-k8s-deploy" not in applied
    assert not undos(calls)


def test_a_failed_apply_that_moved_the_deployment_is_undone_to_the_revision_before(tmp_path):
    result, calls, _ = deploy(tmp_path, apply_exit=1)
    assert result.returncode == 1
    assert undos(calls) == ["kubectl -n petstore-production rollout undo deployment/petstore --to-revision=4"]


def test_a_failed_apply_that_never_reached_the_deployment_undoes_nothing(tmp_path):
    # Undoing then would roll back the healthy version that is running.
    result, calls, _ = deploy(tmp_path, apply_exit=1, apply_moves=False)
    assert result.returncode == 1 and not undos(calls)
    assert "did not change" in result.stderr


def test_a_rollout_that_never_becomes_ready_is_undone(tmp_path):
    result, calls, _ = deploy(tmp_path, status_exit=1)
    assert result.returncode == 1
    assert undos(calls) == ["kubectl -n petstore-production rollout undo deployment/petstore --to-revision=4"]


@pytest.mark.parametrize("tag", ["main", "0.1.0", "latest", "0123456789AB"])
def test_a_tag_the_pipeline_never_pushes_is_refused_before_anything_is_applied(tmp_path, tag):
    result, calls, _ = deploy(tmp_path, tag=tag)
    assert result.returncode == 2 and not any(c.startswith("kubectl apply") for c in calls)


def test_an_image_missing_from_the_registry_is_refused_before_anything_is_applied(tmp_path):
    result, calls, _ = deploy(tmp_path, image_exit=254)
    assert result.returncode == 1 and "not in the registry" in result.stderr
    assert not any(c.startswith("kubectl apply") for c in calls)
