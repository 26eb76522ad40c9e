#!/usr/bin/env bash
# Regenerate petstore.json, the service's seccomp allowlist, from what the
# host really calls: every end-to-end test binary (on SQLite, then on a
# throwaway PostgreSQL with its TLS and fault tests) runs under `strace -ff`,
# the traces of the processes that exec'd `petstore` are kept, and their
# syscall names are merged with runc-init.txt (what runc itself calls after
# it installs the filter, before exec'ing the service) and extra.txt (what
# production does that the tests cannot provoke here).
#
#   k8s/seccomp/derive.sh [--image IMAGE]   # needs strace; root for PostgreSQL
#   k8s/seccomp/derive.sh --runc-init       # re-trace runc-init.txt only; root, strace, gcc
#
# With --image, the image's own binary (static, musl: it makes other calls
# than a glibc build, e.g. clone instead of clone3) is traced too, and the
# profile allows the union. scripts/container-test runs the image under it.
#
# --runc-init traces the runtime part: runc's init between loading the
# container's filter and exec'ing the program runs UNDER that filter, so
# the profile must allow it. It runs a one-binary container N times under
# each runc below with an allow-all filter (so runc takes its normal path,
# not a fallback), with `strace -f --pidns-translation`, and keeps the calls
# of the runc:[2:INIT] thread group after its seccomp(SECCOMP_SET_MODE_FILTER)
# and up to its execve of the program:
#   - runc 1.3.5, what EKS 1.35's AL2023 nodes run: $PETSTORE_RUNC, else
#     ../shared/tools/runc beside the repository (required);
#   - runc 1.1.5, Debian 12's `runc` (if installed), so the profile also
#     starts the container on these machines.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
command -v strace >/dev/null || { echo "derive.sh needs strace: apt-get install -y strace" >&2; exit 2; }

if [ "${1:-}" = "--runc-init" ]; then
  runs=${RUNC_TRACE_RUNS:-10}
  runc135=${PETSTORE_RUNC:-$root/../shared/tools/runc}
  [ -x "$runc135" ] || { echo "derive.sh: no runc 1.3.5 at $runc135 (set PETSTORE_RUNC)" >&2; exit 2; }
  "$runc135" --version | grep -q '^runc version 1\.3\.5' || { echo "derive.sh: $runc135 is not runc 1.3.5" >&2; exit 2; }
  runtimes=("$runc135")
  debian=$(command -v runc || true)
  [ -n "$debian" ] && "$debian" --version | grep -q '^runc version 1\.1\.' && runtimes+=("$debian")
  command -v gcc >/dev/null || { echo "derive.sh --runc-init needs gcc (a static one-binary rootfs)" >&2; exit 2; }
  work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/bundle/rootfs"
  printf 'int main(void) { return 0; }\n' > "$work/true.c"
  gcc -static -O2 -o "$work/bundle/rootfs/true" "$work/true.c"
  "$runc135" spec --bundle "$work/bundle"
  # The process as production runs it: UID 65532, no capabilities,
  # no-new-privileges (so the filter loads right before exec), read-only root.
  python3 - "$work/bundle/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["process"].update(terminal=False, args=["/true"], user={"uid": 65532, "gid": 65532}, noNewPrivileges=True,
                    rlimits=[{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}])
c["process"]["capabilities"] = {k: [] for k in c["process"]["capabilities"]}
c["root"]["readonly"] = True
c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64"],
                         "syscalls": [{"names": ["reboot"], "action": "SCMP_ACT_ERRNO"}]}
json.dump(c, open(sys.argv[1], "w"))
PY
  versions=()
  for r in "${!runtimes[@]}"; do
    rt=${runtimes[$r]}
    versions+=("runc $("$rt" --version | sed -n 's/^runc version //p')")
    for i in $(seq 1 "$runs"); do
      strace -f -ttt -qq --pidns-translation -o "$work/trace.$r.$i" \
        "$rt" --root "$work/state" run --bundle "$work/bundle" "derive-$i" >/dev/null ||
        { echo "derive.sh: $rt could not run the container" >&2; exit 1; }
    done
  done
  python3 - "${RUNC_INIT_OUT:-$here/runc-init.txt}" "$runs" "${versions[@]}" -- "$work"/trace.* <<'PY'
import re, sys
out, runs = sys.argv[1], sys.argv[2]
sep = sys.argv.index("--")
versions, traces = sys.argv[3:sep], sys.argv[sep + 1:]
line = re.compile(r"^(\d+) +([\d.]+) (.*)$")
names = set()
for path in traces:
    rows = [(int(m[1]), float(m[2]), m[3]) for m in map(line.match, open(path, errors="replace")) if m]
    # runc's init names itself runc:[2:INIT] (libcontainer/nsenter/nsexec.c);
    # its Go runtime's threads are the CLONE_THREAD clones of that group.
    leader = next(t for t, _, r in rows if r.startswith('prctl(PR_SET_NAME, "runc:[2:INIT]"'))
    group, pending = {leader}, set()
    for t, _, r in rows:
        if t not in group:
            continue
        if re.match(r"clone3?\(", r) and "CLONE_THREAD" in r:
            if "<unfinished" in r:
                pending.add(t)
                continue
        elif not (r.startswith("<... clone") and t in pending):
            continue
        pending.discard(t)
        m = re.search(r"\) = (\d+)(?: /\* (\d+) in strace)?", r)
        if m:
            group.add(int(m[2] or m[1]))
    mine = [(ts, r) for t, ts, r in rows if t in group]
    # The filter: seccomp(2) in 1.3 (patched BPF), prctl(PR_SET_SECCOMP) in 1.1.
    loaded = max(ts for ts, r in mine if "{len=" in r and (r.startswith("seccomp(SECCOMP_SET_MODE_FILTER")
                                                          or r.startswith("prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER")))
    execd = min(ts for ts, r in mine if r.startswith('execve("/true"'))
    for ts, r in mine:
        m = re.match(r"([a-z0-9_]+)\(", r)
        if m and loaded < ts <= execd:
            names.add(m[1])
# runc's init is a Go program: besides what a trace happens to catch, its
# runtime may make these in any thread at any moment (scheduler, sysmon,
# async preemption by signal, GC), so they are always allowed.
names |= {"futex", "nanosleep", "sched_yield", "epoll_pwait", "epoll_ctl", "getpid", "gettid", "tgkill",
          "rt_sigreturn", "rt_sigprocmask", "mmap", "munmap", "madvise"}
with open(out, "w") as fh:
    fh.write("# What runc's init process calls after it has installed the seccomp filter\n"
             "# and before it execs the service (these run under the service's profile).\n"
             "# derive.sh merges this list with the host's own calls. Generated by\n"
             "# `k8s/seccomp/derive.sh --runc-init`: do not edit.\n")
    fh.write(f"# traced under: {', '.join(versions)}; {runs} runs each\n")
    fh.writelines(f"{n}\n" for n in sorted(names))
print(f"{len(names)} calls after the filter -> {out}", file=sys.stderr)
PY
  exit 0
fi

./scripts/build-components >/dev/null
mapfile -t binaries < <(cargo test --release -p petstore-host --no-run --message-format=json 2>/dev/null |
  python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["kind"] == ["test"] and m.get("executable"):
        print(m["executable"])')

traces=$(mktemp -d)
read -r pg_dir _ <<< "$(scripts/pg-instance create --tls)"
trap 'rm -rf "$traces"; scripts/pg-instance destroy "$pg_dir"' EXIT
hosts=(local)
if [ "${1:-}" = "--image" ]; then
  mkdir -p "$traces/image"
  podman ${PODMAN_ARGS:-} create --name petstore-derive "$2" >/dev/null
  podman ${PODMAN_ARGS:-} cp petstore-derive:/app/petstore "$traces/image/petstore"
  podman ${PODMAN_ARGS:-} rm petstore-derive >/dev/null
  hosts+=("$traces/image/petstore")
fi
for host in "${hosts[@]}"; do
  for postgres in "" "$(scripts/pg-instance url "$pg_dir")"; do
    for bin in "${binaries[@]}"; do
      env=(env -u PETSTORE_TEST_BINARY -u PETSTORE_TEST_POSTGRES)
      [ "$host" = local ] || env+=("PETSTORE_TEST_BINARY=$host")
      args=(--test-threads=2 --skip rehearse)
      # The ignored tests are PostgreSQL's own: they need a server to run.
      [ -z "$postgres" ] || { env+=("PETSTORE_TEST_POSTGRES=$postgres"); args+=(--include-ignored); }
      "${env[@]}" strace -f -ff -qq -o "$traces/t" "$bin" "${args[@]}" >"$traces/log" 2>&1 || {
        grep -E -A20 '^(failures:|---- )' "$traces/log" | head -60 >&2
        echo "tests failed under strace: $bin ($host, ${postgres:-sqlite})" >&2
        exit 1
      }
    done
  done
done

python3 - "$traces" "$here/runc-init.txt $here/extra.txt" "$here/petstore.json" "$root/k8s/cluster/seccomp/seccompprofiles.yaml" <<'PY'
import json, os, re, sys
traces, runc_file, out, spo_out = sys.argv[1:]
call = re.compile(r'^([a-z0-9_]+)\(')
exec_host = re.compile(r'^execve\("[^"]*/petstore",.*\)\s+=\s+0$')
clone = re.compile(r'^(?:clone3?|fork|vfork)\(.*\)\s+=\s+(\d+)$')
by_pid = {}
for f in os.listdir(traces):
    if not f.startswith("t."):
        continue
    with open(os.path.join(traces, f), errors="replace") as fh:
        by_pid[int(f.rsplit(".", 1)[1])] = fh.read().splitlines()
# The host's calls: a process's trace from its successful execve of
# petstore on, and every thread or child it clones after that.
queue = [(pid, i) for pid, lines in by_pid.items() for i, l in enumerate(lines) if exec_host.match(l)]
seen, names = set(), set()
while queue:
    pid, start = queue.pop()
    if pid in seen:
        continue
    seen.add(pid)
    for line in by_pid.get(pid, [])[start:]:
        # strace names a number it does not know "syscall_0x…": not a call.
        if (m := call.match(line)) and not m.group(1).startswith("syscall_"):
            names.add(m.group(1))
        if m := clone.match(line):
            queue.append((int(m.group(1)), 0))
if not names:
    sys.exit("no petstore process found in the traces")
runc = {l.strip() for f in runc_file.split() for l in open(f) if l.strip() and not l.startswith("#")}
allowed = sorted(names | runc)
profile = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 1,
    "archMap": [{"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]}],
    "syscalls": [{"names": allowed, "action": "SCMP_ACT_ALLOW"}],
}
with open(out, "w") as fh:
    json.dump(profile, fh, indent=2)
    fh.write("\n")
# The same list as Security Profiles Operator resources, one per environment
# that uses it: SeccompProfile is cluster-scoped (SPO v0.9+), so each
# environment gets its own object and staging can take a new profile first.
with open(spo_out, "w") as fh:
    fh.write("# Generated by k8s/seccomp/derive.sh from k8s/seccomp/petstore.json: do not edit.\n")
    fh.write("# The operator writes each to /var/lib/kubelet/seccomp/operator/<name>.json on every node.\n")
    for env in ["staging", "production"]:
        fh.write("---\napiVersion: security-profiles-operator.x-k8s.io/v1\nkind: SeccompProfile\n")
        fh.write(f"metadata:\n  name: petstore-{env}\n  labels:\n    Environment: {env}\n")
        fh.write("    Application: pet-store\n    Owner: team-petstore\n    Cost-Center: cc-petstore-001\n")
        fh.write("spec:\n  defaultAction: SCMP_ACT_ERRNO\n")
        fh.write("  architectures:\n    - SCMP_ARCH_X86_64\n  syscalls:\n    - action: SCMP_ACT_ALLOW\n      names:\n")
        fh.writelines(f"        - {name}\n" for name in allowed)
print(f"{len(names)} syscalls seen from {len(seen)} host processes and threads; "
      f"{len(allowed)} allowed with runc's and the extras -> {out}", file=sys.stderr)
PY
