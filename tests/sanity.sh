#!/usr/bin/env bash
# ansible-test sanity on the collection kvmprep.kvm (the repository root): its modules,
# module_utils, action, filter and inventory plugins, meta/runtime.yml. ansible-test runs inside
# an ansible_collections/<namespace>/<name> directory and tests every file there, so it runs on
# the collection as `ansible-galaxy collection build` makes it (galaxy.yml's build_ignore leaves
# out kvmprep/, tests/, molecule/, ...: the CLI's Python is not collection content), unpacked
# into a throw-away tree. The files are the repository's as they are: reported paths
# (plugins/modules/X.py) and line numbers are the real files'.
#
# ansible-test installs each test's pinned requirements (pylint, pycodestyle, voluptuous,
# yamllint, antsibull-docs-parser, ...) from PyPI into virtual environments of its own, cached
# under $KVMPREP_SANITY_HOME/.ansible/test (default ~/.cache/kvmprep-sanity): the project's venv
# gets nothing. Those environments start empty and ansible-test fetches pip's bootstrap script from
# ci-files.testing.ansible.com; where that host is out of reach, tests/sanity/get-pip.py and a pip
# wheel from PyPI take its place (see that file).
#
# Usage: tests/sanity.sh [ansible-test sanity options, e.g. --test pylint]; exits non-zero on any
# failure. KVMPREP_VENV: the venv with ansible-core (default ./.venv).
set -euo pipefail
cd "$(dirname "$0")/.."
project=$PWD
venv=${KVMPREP_VENV:-$project/.venv}
python=$venv/bin/python
namespace=kvmprep
name=kvm

# A home of its own: ansible-test's cached environments and the stand-in bootstrap stay out of
# ~/.ansible/test, which a real ansible-test run on this machine may use.
export HOME=${KVMPREP_SANITY_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/kvmprep-sanity}
mkdir -p "$HOME"

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tree=$tmp/ansible_collections/$namespace/$name
mkdir -p "$tree"
"$venv/bin/ansible-galaxy" collection build --output-path "$tmp" "$project" >/dev/null
tar -xzf "$tmp/$namespace-$name-"*.tar.gz -C "$tree"
mkdir -p "$tree/tests/sanity"

core=$("$python" -c 'from ansible.release import __version__ as v; print(".".join(v.split(".")[:2]))')
py=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# What is ignored, and why (ansible-test fails on an entry that no longer matches anything).
ignores=$tree/tests/sanity/ignore-$core.txt
for module in "$tree"/plugins/modules/*.py "$tree"/plugins/inventory/*.py; do
  # validate-modules wants ansible-core's GPLv3 header in every module and every plugin it checks
  # the documentation of (inventory plugins among them); kvmprep is Apache-2.0.
  dir=${module%/*}
  echo "plugins/${dir##*/}/${module##*/} validate-modules:missing-gplv3-license # kvmprep is Apache-2.0, not GPLv3"
done >"$ignores"
# What only some ansible-core releases find: tests/sanity/ignore-X.Y.txt, each entry with its reason.
if [ -f "$project/tests/sanity/ignore-$core.txt" ]; then
  grep -Ev '^(#|$)' "$project/tests/sanity/ignore-$core.txt" >>"$ignores"
fi

cd "$tree"
run() { "$venv/bin/ansible-test" sanity --python "$py" "$@"; }

# Create (or reuse) ansible-test's environments first, so a missing bootstrap can be supplied.
log=$tmp/prime.log
if ! run --prime-venvs >"$log" 2>&1; then
  bootstrap=$(sed -n 's/^The bootstrap script can be manually downloaded and saved to: //p' "$log")
  if [ -z "$bootstrap" ]; then
    cat "$log" >&2
    exit 1
  fi
  # get_pip_24_2.py: the pip release ansible-test bootstraps.
  pip_version=$(basename "$bootstrap" .py | sed 's/^get_pip_//; s/_/./g')
  mkdir -p "$(dirname "$bootstrap")"
  "$python" -m pip download -q --no-deps --only-binary=:all: "pip==$pip_version" -d "$(dirname "$bootstrap")"
  cp "$project/tests/sanity/get-pip.py" "$bootstrap"
  if ! run --prime-venvs >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
  fi
fi

rc=0
run "$@" 2>&1 || rc=$?
exit "$rc"
