"""Validate custom resources against the CRDs vendored under upstream/ (the
exact versions k8s/cluster/addons/addons.yaml pins), as the API server would
with kubectl's default strict field validation: the apiVersion must be a
served version, the scope must match (a cluster-scoped kind takes no
namespace), the object must fit the version's OpenAPI schema, unknown
fields included, and every CEL rule of the schema (x-kubernetes-validations)
must hold where the object has a value. As the API server does, a rule
that reads oldSelf (a transition rule) is checked only on an update, when
the object it replaces is given."""

from pathlib import Path

import celpy
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


def problems(obj: dict, crds: dict, old: dict | None = None) -> list[str]:
    """Why the API server would refuse `obj` (on create, or on an update of
    `old`): empty if it would not."""
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
    openapi = served[version]["schema"]["openAPIV3Schema"]
    schema = to_json_schema(openapi)
    schema["properties"]["metadata"] = {"type": "object"}
    body = {k: v for k, v in obj.items()}
    validator = jsonschema.Draft7Validator(schema)
    found = [f"{where}: {'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(body)]
    if found:
        return found
    return [f"{where}: {p}" for p in cel_problems(openapi, body, old)]


CEL = celpy.Environment()


def cel_problems(schema: dict, value, old=None, path: str = "") -> list[str]:
    """The x-kubernetes-validations rules of `schema` and of every nested
    schema, each evaluated with `self` bound to the value at its node (and
    `oldSelf` to the old object's value there, for transition rules)."""
    out = []
    if not isinstance(schema, dict) or value is None:
        return out
    for rule in schema.get("x-kubernetes-validations", []):
        transition = "oldSelf" in rule["rule"]
        if transition and old is None:
            continue
        activation = {"self": celpy.json_to_cel(value)}
        if transition:
            activation["oldSelf"] = celpy.json_to_cel(old)
        result = CEL.program(CEL.compile(rule["rule"])).evaluate(activation)
        if result is not True and not (isinstance(result, celpy.celtypes.BoolType) and bool(result)):
            out.append(f"{path or '/'}: {rule.get('message', rule['rule'])}")
    if isinstance(value, dict):
        for k, v in value.items():
            sub = (schema.get("properties") or {}).get(k)
            if sub is None and isinstance(schema.get("additionalProperties"), dict):
                sub = schema["additionalProperties"]
            if sub is not None:
                out += cel_problems(sub, v, old.get(k) if isinstance(old, dict) else None, f"{path}/{k}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            # Lists are matched by index here: the API server correlates
            # oldSelf only for map-type lists; none of ours are updated.
            out += cel_problems(schema["items"], v, None, f"{path}/{i}")
    return out
