#!/usr/bin/env bash
# Installs everything the tests need on a Debian 12 machine (as root) and runs the whole suite:
# lint, unit tests, then the molecule lab (podman containers running systemd, libvirt and KVM).
# Containers, the lab network and the venv's processes are cleaned up on exit, pass or fail.
set -euo pipefail
cd "$(dirname "$0")/.."
project=$PWD
venv=${KVMPREP_VENV:-$project/.venv}
export CONTAINERS_CONF=$project/lab/containers.conf
export KVMPREP_LAB_CACHE=${KVMPREP_LAB_CACHE:-/var/cache/kvmprep-lab}

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
# netavark sets up the lab's bridge networks with iptables, which a minimal machine lacks; the
# unit tests run real rsync and ssh-keygen (the remotes copy, the SSH trust).
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  podman runc netavark aardvark-dns iptables conmon debootstrap ca-certificates python3-venv chromium gnupg \
  rsync openssh-client \
  >/dev/null

step "python packages (venv $venv)"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "$project[test]"
export PATH=$venv/bin:$PATH

step "the collection's own venv: ansible-core and pyone, no kvmprep"
# The lab (molecule/frontend) installs the built collection for it and runs kvmprep.kvm.check and
# .apply by FQCN from it, as an Ansible user without the CLI does. Needs PyPI, so made here; kept
# in .venv-collection and reused while the test venv's ansible-core and pyone stay the same.
KVMPREP_COLLECTION_VENV=$(tests/collection-venv.sh "$venv/bin/python")
export KVMPREP_COLLECTION_VENV

step "the checkout as the collection kvmprep.kvm"
# The venv holds a wheel (its own copy of the collection); ansible-lint and molecule take the
# checkout's, through the link kvmprep makes from a source checkout (kvmprep/content.py,
# collections_dir). A copy some earlier prerun installed there is replaced by the link.
link=.ansible/collections/ansible_collections/kvmprep/kvm
[ -L "$link" ] || rm -rf "$link"
mkdir -p "${link%/*}"
ln -sfn "$project" "$link"

step "lint"
ruff check kvmprep tests plugins hatch_build.py molecule bench bench/run
ruff format --check kvmprep tests plugins hatch_build.py molecule bench bench/run
# The Ansible content (roles/, playbooks/, inventory/), production profile: .ansible-lint
# (offline: the checkout's collection through the link above).
ANSIBLE_COLLECTIONS_PATH=$project/.ansible/collections ansible-lint
# ansible-test sanity on the collection (its built artifact unpacked in a temporary tree;
# ansible-test's own environments are cached under ~/.cache/kvmprep-sanity).
tests/sanity.sh

step "unit tests"
# pytest exits 5 when it collects nothing: for this suite that is a failure, not a pass.
rc=0; pytest -q tests/unit || rc=$?
if [ "$rc" -eq 5 ]; then echo "no unit tests were collected" >&2; exit 1; fi
[ "$rc" -eq 0 ] || exit "$rc"

step "Debian 13 controller: ansible-core 2.21.x, unit tests, apply/check/re-apply on itself"
# The top of pyproject's ansible-core range; the steps above prove its bottom (2.19 on Debian 12).
# Removes its container itself.
tests/controller-trixie.sh

step "benchmark, quick (1 host, 2 repetitions; timings are printed, not asserted)"
# Fails only when a timed command fails; removes its containers and network itself.
python bench/run --quick

step "lab images"
lab/build-images bookworm trixie
# The real OpenNebula front-end of molecule/frontend, built from source (cached like the others).
lab/build-one-image
scenarios=(default frontend)
for scenario in "${scenarios[@]}"; do
  mkdir -p "$KVMPREP_LAB_CACHE/$scenario/bookworm" "$KVMPREP_LAB_CACHE/$scenario/trixie"
done
mkdir -p "$KVMPREP_LAB_CACHE/frontend/one"

cleanup() {
  for scenario in "${scenarios[@]}"; do
    molecule destroy -s "$scenario" >/dev/null 2>&1 || true
  done
  podman network rm -f kvmprep-lab kvmprep-lab-fe >/dev/null 2>&1 || true
}
trap cleanup EXIT

# default: socket-activated libvirtd, TCP listener with SASL, fault injection. frontend: a real
# OpenNebula front-end (oned built from source) and hosts running libvirtd as a classic daemon
# (--listen) with the TLS listener; VMs created and live-migrated through OpenNebula. Both:
# Debian 12 + Debian 13 hosts, a KVM domain run by oneadmin
# live-migrating between them.
for scenario in "${scenarios[@]}"; do
  step "molecule scenario $scenario"
  molecule test -s "$scenario"
done
