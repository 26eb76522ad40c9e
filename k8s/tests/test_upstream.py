"""The add-ons as pinned code: our values only set what the pinned chart
has, each add-on that calls AWS has an identity, the cluster file fits
eksctl's schema, and the service's objects are picked up by the add-ons as
configured (Prometheus' selector, Fluent Bit's output, metrics-server)."""

import json

import jsonschema
import pytest
import yaml

from conftest import K8S, UPSTREAM, addons, chart_values, cluster_config, merge, one

# Sub-charts whose defaults live in their own chart, not in the parent's values.
SUBCHARTS = {"kube-prometheus-stack": {"kube-state-metrics", "prometheus-node-exporter", "grafana"}}
# Maps the chart passes through as they are (command-line flags): any key goes.
FREEFORM = {"cluster-autoscaler": {"extraArgs"}}


def unknown_keys(ours, defaults, path="", freeform=frozenset()):
    """Keys we set that the chart's values do not have (a typo, or an option
    the pinned version does not know: the chart would silently ignore it)."""
    out = []
    for key, value in ours.items():
        where = f"{path}{key}"
        if key not in defaults:
            out.append(where)
        elif isinstance(value, dict) and isinstance(defaults[key], dict) and defaults[key] and where not in freeform:
            out += unknown_keys(value, defaults[key], where + ".", freeform)
    return out


@pytest.mark.parametrize("addon", addons(), ids=lambda a: a["name"])
def test_our_values_set_only_options_the_pinned_chart_has(addon):
    defaults = yaml.safe_load((UPSTREAM / addon["name"] / "values.yaml").read_text())
    ours = yaml.safe_load((K8S / "cluster" / "addons" / addon["values"]).read_text())
    # A sub-chart whose defaults are vendored is checked against them (and
    # what the parent passes it); the others are not checked.
    vendored = addon["upstream"].get("subcharts", {})
    for name in vendored:
        sub = yaml.safe_load((UPSTREAM / addon["name"] / f"{name}-values.yaml").read_text())
        defaults[name] = merge(sub, defaults.get(name) or {})
    skip = SUBCHARTS.get(addon["name"], set()) - set(vendored)
    bad = unknown_keys({k: v for k, v in ours.items() if k not in skip}, defaults, freeform=FREEFORM.get(addon["name"], set()))
    assert not bad, f"{addon['name']} {addon['chart']['version']} has no {bad}"
    source = (UPSTREAM / addon["name"] / "SOURCE").read_text()
    assert f"chart {addon['chart']['name']} {addon['chart']['version']}" in source, "run k8s/tests/upstream/refresh"


def test_every_add_on_that_calls_aws_has_an_identity():
    associations = {(p["namespace"], p["serviceAccountName"]) for p in cluster_config()["iam"]["podIdentityAssociations"]}
    for addon in addons():
        if "iam" in addon:
            assert (addon["namespace"], addon["iam"]) in associations, f"{addon['name']}: no Pod Identity association"
            values = chart_values(addon)
            name = values.get("serviceAccount", {}).get("name") or values.get("rbac", {}).get("serviceAccount", {}).get("name")
            assert name == addon["iam"], f"{addon['name']}: the chart's service account is {name}, the association names {addon['iam']}"
    # The agent that hands those identities out.
    assert "eks-pod-identity-agent" in {a["name"] for a in cluster_config()["addons"]}


def test_the_cluster_file_fits_eksctls_schema():
    schema = json.loads((UPSTREAM / "eksctl" / "schema.json").read_text())
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(cluster_config())]
    assert not errors, "\n".join(errors)


def test_the_schema_check_refuses_a_field_eksctl_does_not_have():
    schema = json.loads((UPSTREAM / "eksctl" / "schema.json").read_text())
    cfg = cluster_config()
    cfg["managedNodeGroups"][0]["amiFamily"] = "AmazonLinux3"
    cfg["managedNodeGroups"][1]["existingConfigMap"] = "x"
    assert len(list(jsonschema.Draft7Validator(schema).iter_errors(cfg))) >= 2


def test_the_hpa_has_metrics_server(rendered):
    assert [o for o in rendered["production"] if o["kind"] == "HorizontalPodAutoscaler"]
    assert "metrics-server" in {a["name"] for a in addons()}


def test_prometheus_selects_the_services_monitor_and_rules(rendered):
    stack = next(a for a in addons() if a["name"] == "kube-prometheus-stack")
    spec = chart_values(stack)["prometheus"]["prometheusSpec"]
    for env in ["staging", "production"]:
        for kind, key in [("ServiceMonitor", "serviceMonitor"), ("PrometheusRule", "rule")]:
            labels = one(rendered[env], kind)["metadata"].get("labels", {})
            selector = spec[f"{key}Selector"]
            if not selector and spec[f"{key}SelectorNilUsesHelmValues"]:
                # The chart's rule: an empty selector means `release: <release name>`.
                selector = {"matchLabels": {"release": stack["name"]}}
            for k, v in (selector or {}).get("matchLabels", {}).items():
                assert labels.get(k) == v, f"{env}: Prometheus selects {kind}s by {k}={v}; ours has {labels.get(k)}"
            assert spec[f"{key}NamespaceSelector"] == {}, "every namespace"
    assert stack["namespace"] == "monitoring", "the NetworkPolicies admit scrapes from namespace monitoring"


def test_fluent_bit_ships_every_namespace_to_cloudwatch_for_30_days():
    fb = next(a for a in addons() if a["name"] == "aws-for-fluent-bit")
    values = chart_values(fb)
    cw = values["cloudWatchLogs"]
    assert cw["enabled"] is True and cw["region"] == cluster_config()["metadata"]["region"]
    assert cw["logRetentionDays"] == 30
    assert cw["logGroupTemplate"] == "/aws/eks/petstore/$kubernetes['namespace_name']"
    # The fallback, when the template cannot be resolved: a group of its own
    # within the role's prefix, never the control plane's (EKS writes its
    # logs to /aws/eks/<cluster>/cluster).
    cluster = cluster_config()["metadata"]["name"]
    assert cw["logGroupName"] != f"/aws/eks/{cluster}/cluster" and cw["logGroupName"].startswith(f"/aws/eks/{cluster}/")
    assert values["filter"]["mergeLog"] == "On", "the service's JSON lines become fields"
    for other in ["cloudWatch", "firehose", "kinesis", "elasticsearch", "s3", "opensearch"]:
        assert not values.get(other, {}).get("enabled"), f"{other} ships logs elsewhere"
    assert any(t.get("key") == "petstore.io/environment" for t in values["tolerations"]), "also on production's nodes"
    policy = next(p for p in cluster_config()["iam"]["podIdentityAssociations"] if p["serviceAccountName"] == "aws-for-fluent-bit")
    actions = set(policy["permissionPolicy"]["Statement"][0]["Action"])
    assert {"logs:CreateLogStream", "logs:PutLogEvents", "logs:PutRetentionPolicy"} <= actions
