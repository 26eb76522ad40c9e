"""Does it fit? Every node group at its maximum size, with the VPC CNI's
settings, must hold its DaemonSets, the add-ons, and every environment at
its HPA maximum plus a rollout's surge, by requests (what the scheduler
counts). Pods are placed largest first, each on the node with the most
memory left that still fits it (the default scheduler's LeastAllocated
scoring spreads the same way); the headroom left is printed (pytest -s).

Node figures are AWS's for t3.small and EKS's AL2023 kubelet reservations;
the kubelet's reported memory capacity is an assumption a first real
deployment checks (docs/deploy.md, smoke test).
"""

import math

from conftest import addons, chart_values, cluster_config, load_all, K8S, one

T3_SMALL = {"cpu_m": 2000, "memory_mib": 1930, "enis": 3, "ips_per_eni": 4}
EVICTION_MIB = 100


def node_allocatable(max_pods: int) -> tuple[int, int]:
    # EKS kube-reserved: CPU 6% of the first core + 1% of the second; memory 255 MiB + 11 MiB per pod.
    cpu = T3_SMALL["cpu_m"] - (60 + 10)
    memory = T3_SMALL["memory_mib"] - (255 + 11 * max_pods) - EVICTION_MIB
    return cpu, memory


def ip_limited_pods(prefix_delegation: bool) -> int:
    slots = T3_SMALL["enis"] * (T3_SMALL["ips_per_eni"] - 1)
    # EKS caps max pods at 110 on instances with fewer than 30 vCPUs.
    return min(110, slots * 16 + 2) if prefix_delegation else slots + 2


def cpu_m(q) -> int:
    q = str(q or 0)
    return int(q[:-1]) if q.endswith("m") else int(float(q) * 1000)


def mib(q) -> int:
    q = str(q or 0)
    for unit, f in (("Gi", 1024), ("Mi", 1), ("Ki", 1 / 1024)):
        if q.endswith(unit):
            return math.ceil(float(q[: -len(unit)]) * f)
    return math.ceil(int(q) / 2**20)


def requests(resources: dict) -> tuple[int, int]:
    r = (resources or {}).get("requests") or {}
    return cpu_m(r.get("cpu")), mib(r.get("memory"))


def dig(values: dict, path):
    if isinstance(path, int):
        return path
    for key in path.split("."):
        values = values[key]
    return values


def addon_pod_requests(values: dict, paths) -> tuple[int, int]:
    """A pod's requests: one resources path, or a list, one per container."""
    each = [requests(dig(values, p)) for p in (paths if isinstance(paths, list) else [paths])]
    return sum(c for c, _ in each), sum(m for _, m in each)


def pod_requests(pod: dict) -> tuple[int, int]:
    main = [requests(c.get("resources")) for c in pod["containers"]]
    init = [requests(c.get("resources")) for c in pod.get("initContainers", [])]
    cpu = max([sum(c for c, _ in main)] + [c for c, _ in init])
    mem = max([sum(m for _, m in main)] + [m for _, m in init])
    return cpu, mem


def group_of(pod: dict) -> str:
    # Only pods that select the production group (and tolerate its taint) run there.
    return "production" if pod.get("nodeSelector", {}).get("petstore.io/environment") == "production" else "nonproduction"


def workloads(rendered) -> dict[str, list[tuple[str, int, int]]]:
    """Pods (name, cpu m, memory MiB) per node group, at every maximum."""
    groups = {"production": [], "nonproduction": []}
    # EKS's own add-ons: CoreDNS (2 replicas) on untainted nodes.
    groups["nonproduction"] += [("coredns", 100, 70)] * 2
    for addon in addons():
        values = chart_values(addon)
        for w in addon["pods"]:
            if w["kind"] == "DaemonSet":
                continue
            cpu, mem = addon_pod_requests(values, w["resources"])
            assert cpu and mem, f"{addon['name']}/{w['name']} has no requests: the scheduler would pack it blind"
            groups["nonproduction"] += [(f"{addon['name']}/{w['name']}", cpu, mem)] * int(dig(values, w["replicas"]))
    for env, objs in rendered.items():
        dep = one(objs, "Deployment", "petstore")
        hpa = [o for o in objs if o["kind"] == "HorizontalPodAutoscaler"]
        replicas = hpa[0]["spec"]["maxReplicas"] if hpa else dep["spec"]["replicas"]
        surge = math.ceil(replicas * int(dep["spec"]["strategy"]["rollingUpdate"]["maxSurge"].rstrip("%")) / 100)
        pod = dep["spec"]["template"]["spec"]
        groups[group_of(pod)] += [(f"petstore-{env}", *pod_requests(pod))] * (replicas + surge)
        for cj in (o for o in objs if o["kind"] == "CronJob"):
            pod = cj["spec"]["jobTemplate"]["spec"]["template"]["spec"]
            groups[group_of(pod)].append((f"{env}/{cj['metadata']['name']}", *pod_requests(pod)))
    placeholder = next(d for d in load_all(K8S / "cluster" / "overprovisioning.yaml") if d["kind"] == "Deployment")
    groups["production"] += [("overprovisioning", *pod_requests(placeholder["spec"]["template"]["spec"]))] * placeholder["spec"]["replicas"]
    return groups


def daemonsets() -> list[tuple[str, int, int]]:
    # EKS add-ons: aws-node (VPC CNI) and kube-proxy requests as EKS installs them.
    ds = [("aws-node", 25, 0), ("kube-proxy", 100, 0), ("eks-pod-identity-agent", 0, 0)]
    for addon in addons():
        values = chart_values(addon)
        for w in addon["pods"]:
            if w["kind"] == "DaemonSet":
                ds.append((f"{addon['name']}/{w['name']}", *addon_pod_requests(values, w["resources"])))
    return ds


def pack(pods, nodes: int, max_pods: int, ds) -> tuple[list, list]:
    cpu, mem = node_allocatable(max_pods)
    free = [[cpu - sum(c for _, c, _ in ds), mem - sum(m for _, _, m in ds), max_pods - len(ds)] for _ in range(nodes)]
    unplaced = []
    for name, c, m in sorted(pods, key=lambda p: (p[2], p[1]), reverse=True):
        fits = [node for node in free if node[0] >= c and node[1] >= m and node[2] >= 1]
        if not fits:
            unplaced.append(name)
            continue
        node = max(fits, key=lambda n: n[1])
        node[0] -= c
        node[1] -= m
        node[2] -= 1
    return free, unplaced


def test_every_node_group_holds_its_pods_at_every_maximum(rendered):
    cfg = cluster_config()
    cni = next(a for a in cfg["addons"] if a["name"] == "vpc-cni")
    prefix = '"ENABLE_PREFIX_DELEGATION": "true"' in cni["configurationValues"]
    groups = {g["name"]: g for g in cfg["managedNodeGroups"]}
    ds = daemonsets()
    for name, pods in workloads(rendered).items():
        g = groups[name]
        assert g["instanceType"] == "t3.small"
        max_pods = g["maxPodsPerNode"]
        assert max_pods <= ip_limited_pods(prefix), f"{name}: {max_pods} pods per node, but the CNI gives {ip_limited_pods(prefix)} addresses"
        free, unplaced = pack(pods, g["maxSize"], max_pods, ds)
        cpu, mem = node_allocatable(max_pods)
        print(f"\n{name}: {g['maxSize']} x t3.small, allocatable {cpu}m / {mem} MiB / {max_pods} pods each;"
              f" {len(ds)} DaemonSet pods per node + {len(pods)} pods;"
              f" headroom {sum(n[0] for n in free)}m CPU, {sum(n[1] for n in free)} MiB,"
              f" {sum(n[2] for n in free)} pod slots; unplaced: {unplaced or 'none'}")
        assert not unplaced, f"{name} node group cannot hold {unplaced}"


def test_one_node_group_could_not_hold_everything(rendered):
    # Why there are two groups: the requirement's single group of at most 5
    # t3.small cannot hold production, staging, development and the add-ons.
    pods = [p for ps in workloads(rendered).values() for p in ps]
    _, unplaced = pack(pods, 5, 20, daemonsets())
    print(f"\none group of 5: {len(unplaced)} pods unplaced")
    assert unplaced


def test_without_prefix_delegation_a_node_holds_11_pods():
    assert ip_limited_pods(False) == 11 and ip_limited_pods(True) == 110


def test_the_placeholder_holds_20_percent_of_a_production_node(rendered):
    # The 80% scale-up threshold (k8s/cluster/addons/cluster-autoscaler.yaml).
    group = next(g for g in cluster_config()["managedNodeGroups"] if g["name"] == "production")
    cpu, mem = node_allocatable(group["maxPodsPerNode"])
    placeholder = next(d for d in load_all(K8S / "cluster" / "overprovisioning.yaml") if d["kind"] == "Deployment")
    spec = placeholder["spec"]["template"]["spec"]
    c, m = pod_requests(spec)
    assert (c, m) == (round(0.2 * cpu), round(0.2 * mem)), f"20% of {cpu}m / {mem} MiB, not {c}m / {m} MiB"
    assert spec["nodeSelector"] == group["labels"]
    assert any(t["key"] == group["taints"][0]["key"] for t in spec["tolerations"])
