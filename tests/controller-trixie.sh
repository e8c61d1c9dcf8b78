#!/usr/bin/env bash
# kvmprep on the newest ansible-core it allows, with Debian 13 as the controller: in a podman
# container of the lab's trixie image (systemd as PID 1, privileged for /dev/kvm, as molecule's
# hosts are), Python 3.13 from Debian, a venv with `pip install ".[test]"`, which must resolve
# to ansible-core 2.21.x. Then, in that container:
#   1. the unit tests (pytest -q tests/unit);
#   2. `kvmprep apply` against the container itself (ansible_connection=local, a kvm_hosts host
#      with the default lab's settings), `kvmprep check` (exit 0), and a second `kvmprep apply`
#      that must find the host converged: exit 0 and the summary's headline "1 host: 1 ok"
#      (a host with a changed task is counted "changed"), its CHANGED column 0.
# Needs: root, podman (lab/containers.conf), debootstrap for the image, Debian's archive and
# PyPI. The container is removed on exit, pass or fail. Only one lab run at a time on a
# machine: callers outside CI wrap this in `flock /tmp/kvmprep-lab.lock`.
# Usage: tests/controller-trixie.sh [--keep-going]   (--keep-going: run the lab part after
# failing unit tests too, and fail at the end)
set -euo pipefail
cd "$(dirname "$0")/.."
project=$PWD
export CONTAINERS_CONF=${CONTAINERS_CONF:-$project/lab/containers.conf}
cache=${KVMPREP_LAB_CACHE:-/var/cache/kvmprep-lab}
keep_going=false
[ "${1:-}" = "--keep-going" ] && keep_going=true

image=localhost/kvmprep-lab:trixie
name=kvmprep-ctl13-$$
host=kvmprep-ctl13
# ansible-core's series a Debian 13 controller must get from pip (the top of pyproject's range).
want_core=2.21

step() { printf '\n==> [trixie controller] %s\n' "$*"; }
started=$SECONDS

cleanup() { podman rm -f -t 5 "$name" >/dev/null 2>&1 || true; }
trap cleanup EXIT

step "lab image"
lab/build-images trixie

# apt's and pip's downloads survive the container (the CI machine reaches only Debian's archive
# and PyPI; a second run installs from the cache).
mkdir -p "$cache/controller/trixie" "$cache/controller/pip"

# A machine behind a TLS-intercepting proxy trusts the proxy's CA as a local certificate
# (/usr/local/share/ca-certificates): the container trusts the same ones, pip through Debian's
# bundle (PIP_CERT below).
local_cas=()
if compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
  local_cas=(-v /usr/local/share/ca-certificates:/usr/local/share/ca-certificates:ro)
fi

step "container $name"
podman run -d --name "$name" --hostname "$host" \
  --privileged --systemd=always --ulimit nofile=1024:1024 --ulimit nproc=4096:4096 \
  -v "$project:/src:ro" "${local_cas[@]}" \
  -v "$cache/controller/trixie:/var/cache/apt/archives" \
  -v "$cache/controller/pip:/root/.cache/pip" \
  "$image" /sbin/init >/dev/null

in_ctl() {
  podman exec -e DEBIAN_FRONTEND=noninteractive -e PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    -e PIP_DISABLE_PIP_VERSION_CHECK=1 "$name" bash -euo pipefail -c "$1"
}

# Until systemd's bus is up, systemctl cannot even ask; "degraded" is a booted system too (a
# unit a container cannot run failed).
state=
for _ in $(seq 120); do
  state=$(podman exec "$name" systemctl is-system-running 2>/dev/null || true)
  case $state in running | degraded) break ;; esac
  sleep 1
done
case $state in
  running | degraded) ;;
  *) echo "the container's systemd did not boot in 120 s: ${state:-no answer}" >&2; exit 1 ;;
esac

step "system packages (Debian 13)"
# What run-all.sh installs for the unit tests: rsync and ssh-keygen (remotes copy, SSH trust),
# chromium (the HTML report), gnupg; python3-venv for the venv.
in_ctl 'apt-get update -qq
  apt-get install -y -qq --no-install-recommends \
    python3-venv rsync openssh-client chromium gnupg ca-certificates >/dev/null
  update-ca-certificates >/dev/null 2>&1
  python3 --version'

step "python packages (pip install .[test])"
# The source is copied: the tests write caches next to it, /src stays read-only. Not the venvs
# of this machine (.venv-collection: tests/collection-venv.sh, for the lab).
in_ctl 'mkdir /root/kvmprep
  tar -C /src --exclude=.git --exclude=.venv --exclude=.venv-collection --exclude=.ansible \
    --exclude=__pycache__ --exclude=.pytest_cache \
    -cf - . | tar -C /root/kvmprep -xf -
  python3 -m venv /root/venv
  /root/venv/bin/python -m pip install -q --upgrade pip
  /root/venv/bin/python -m pip install -q "/root/kvmprep[test]"'
core=$(in_ctl '/root/venv/bin/python -c "import importlib.metadata as m; print(m.version(\"ansible-core\"))"')
echo "ansible-core $core on $(in_ctl '/root/venv/bin/python -V')"
case $core in
  "$want_core".*) ;;
  *) echo "pip gave ansible-core $core on Debian 13, not $want_core.x" >&2; exit 1 ;;
esac

failed=()
step "unit tests"
# pytest exits 5 when it collects nothing: for this suite that is a failure, not a pass.
rc=0
in_ctl 'cd /root/kvmprep && PATH=/root/venv/bin:$PATH pytest -q -p no:cacheprovider tests/unit' \
  || rc=$?
if [ "$rc" -ne 0 ]; then
  failed+=("unit tests (pytest exit $rc)")
  $keep_going || { echo "unit tests failed on ansible-core $core (exit $rc)" >&2; exit 1; }
fi

step "inventory: the container itself as a kvm_hosts host"
# The default lab's settings (molecule/default/molecule.yml). The SASL password is a lab-only
# secret of a container this script creates and removes; it is written to a 0600 file, never
# put on a command line.
in_ctl "install -d -m 0700 /root/inventory/group_vars
  printf '[kvm_hosts]\n$host ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n' \
    >/root/inventory/hosts.ini
  umask 077
  printf 'kvm_host_libvirt_sasl_password: kvmprep-lab-only\n' >/root/inventory/group_vars/kvm_hosts.yml"

run_kvmprep() { in_ctl "cd /root && NO_COLOR=1 /root/venv/bin/kvmprep $* 2>&1"; }

step "kvmprep apply"
run_kvmprep apply -i /root/inventory || { echo "kvmprep apply failed" >&2; exit 1; }

step "kvmprep check"
rc=0; run_kvmprep check -i /root/inventory || rc=$?
[ "$rc" -eq 0 ] || failed+=("kvmprep check after apply (exit $rc)")

step "kvmprep apply again (must change nothing)"
rc=0; out=$(run_kvmprep apply -i /root/inventory) || rc=$?
printf '%s\n' "$out"
changed_column=$(printf '%s\n' "$out" | awk -v h="$host" '$1 == "HOST" { for (i = 1; i <= NF; i++) if ($i == "CHANGED") c = i } $1 == h && c { print $c }')
if [ "$rc" -ne 0 ]; then
  failed+=("second kvmprep apply (exit $rc)")
elif ! printf '%s\n' "$out" | grep -qx '1 host: 1 ok' || [ "$changed_column" != 0 ]; then
  failed+=("second kvmprep apply changed the host (CHANGED: ${changed_column:-not found})")
fi

echo
echo "trixie controller, ansible-core $core: $((SECONDS - started)) s"
if [ ${#failed[@]} -gt 0 ]; then
  printf 'FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "passed: unit tests, apply, check, converged re-apply"
