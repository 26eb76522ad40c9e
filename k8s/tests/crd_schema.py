"""Validate custom resources against the CRDs vendored under upstream/ (the
exact versions k8s/cluster/addons/addons.yaml pins), as the API server would
with kubectl's default strict field validation: the apiVersion must be a
served version, the scope must match (a cluster-scoped kind takes no
namespace), and the object must fit the version's OpenAPI schema, unknown
fields included."""

from pathlib import Path

import jsonschema
import yaml

UPSTREAM = Path(__file__).resolve().parent / "upstream"


def load_crds() -> dict[tuple[str, str], dict]:
    """(group, kind) -> CRD, from every vendored crd-*.yaml."""
    crds = {}
    for path in sorted(UPSTREAM.glob("*/crd-*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                crds[(doc["spec"]["group"], doc["spec"]["names"]["kind"])] = doc
    return crds


def to_json_schema(s: dict) -> dict:
    """A structural OpenAPI v3 schema as JSON Schema, unknown fields refused."""
    if not isinstance(s, dict):
        return s
    out = {k: v for k, v in s.items() if not k.startswith("x-kubernetes-") and k not in ("description", "example")}
    if s.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in s:
        out["properties"] = {k: to_json_schema(v) for k, v in s["properties"].items()}
        if "additionalProperties" not in s and not s.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if isinstance(s.get("additionalProperties"), dict):
        out["additionalProperties"] = to_json_schema(s["additionalProperties"])
    if "items" in s:
        out["items"] = to_json_schema(s["items"])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in s:
            out[key] = [to_json_schema(x) for x in s[key]]
    if "not" in s:
        out["not"] = to_json_schema(s["not"])
    return out


def problems(obj: dict, crds: dict) -> list[str]:
    """Why the API server would refuse `obj` (empty if it would not)."""
    group, _, version = obj["apiVersion"].rpartition("/")
    where = f"{obj['kind']} {obj['metadata'].get('name')}"
    crd = crds.get((group, obj["kind"]))
    if crd is None:
        return [f"{where}: no vendored CRD for {group} {obj['kind']}"]
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
    if version not in served:
        return [f"{where}: {obj['apiVersion']} is not served by the pinned CRD (served: {sorted(served)})"]
    namespaced = crd["spec"]["scope"] == "Namespaced"
    if namespaced != ("namespace" in obj["metadata"]):
        return [f"{where}: the kind is {crd['spec']['scope']}, the object {'has' if 'namespace' in obj['metadata'] else 'has no'} namespace"]
    schema = to_json_schema(served[version]["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}
    body = {k: v for k, v in obj.items()}
    validator = jsonschema.Draft7Validator(schema)
    return [f"{where}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]
