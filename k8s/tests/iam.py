"""A small model of IAM policy evaluation, enough for the policies in
k8s/cluster: an action on a resource is allowed when some Allow statement
matches both (IAM's case-insensitive action wildcards, case-sensitive
resource wildcards) and its StringEquals / StringLike conditions hold for
the request's context; nothing here uses Deny. A condition key the request
does not carry fails the statement, as in IAM."""

import fnmatch
import re


def _as_list(v):
    return v if isinstance(v, list) else [v]


def _match(pattern: str, value: str, case: bool) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, 0 if case else re.IGNORECASE) is not None


def _conditions_hold(condition: dict, context: dict) -> bool:
    for operator, pairs in (condition or {}).items():
        for key, wanted in pairs.items():
            if key not in context:
                return False
            have = context[key]
            if operator == "StringEquals":
                if have not in _as_list(wanted):
                    return False
            elif operator == "StringLike":
                if not any(fnmatch.fnmatchcase(have, w) for w in _as_list(wanted)):
                    return False
            else:
                raise ValueError(f"condition operator {operator} is not modelled")
    return True


def allows(policy: dict, action: str, resource: str, context: dict | None = None) -> bool:
    for st in policy["Statement"]:
        if st.get("Effect") != "Allow":
            continue
        if not any(_match(a, action, case=False) for a in _as_list(st["Action"])):
            continue
        if not any(_match(r, resource, case=True) for r in _as_list(st["Resource"])):
            continue
        if _conditions_hold(st.get("Condition"), context or {}):
            return True
    return False


def wildcard_grants(policy: dict) -> list[str]:
    """Statements that grant a whole service (`svc:*`) or act on every resource (`*`)."""
    out = []
    for st in policy["Statement"]:
        for a in _as_list(st["Action"]):
            if a == "*" or a.endswith(":*"):
                out.append(f"action {a}")
        for r in _as_list(st["Resource"]):
            if r == "*":
                out.append(f"resource * for {st['Action']}")
    return out
