#!/usr/bin/env bash
# ansible-test sanity on the roles' Python content: modules (roles/*/library), module_utils, action
# and filter plugins. ansible-test only runs inside a collection, and this repository is not one
# yet, so the files are copied into a throw-away collection tree, kvmprep.kvm:
#   roles/*/library/X.py        -> plugins/modules/X.py
#   roles/*/module_utils/X.py   -> plugins/module_utils/X.py
#   roles/*/action_plugins/X.py -> plugins/action/X.py
#   roles/*/filter_plugins/X.py -> plugins/filter/X.py
#   plugins/inventory/X.py      -> plugins/inventory/X.py (already where the collection has it)
# The copies are the files as they are, but for one edit a collection needs: a module's
# `from ansible.module_utils.<own module_utils> import` (what Ansible gives a role's module_utils)
# becomes `from ansible_collections.kvmprep.kvm.plugins.module_utils.<same> import`, on the same
# line, so that the import and validate-modules tests can import the modules at all. Reported
# paths are mapped back to the roles' files; line numbers are the real files'.
# (A try/except ImportError in the files themselves, falling back to the collection's path, works
# (tried on 2.19), but AnsiballZ then takes both imports as optional: every build looks the
# collection up in vain, 73 times for kvm_host_probe, about 0.1 s of its 0.6-0.9 s build, and a
# missing module_utils no longer fails the build. Hence the edit here, not in the roles.)
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
mkdir -p "$tree"/plugins/{modules,module_utils,action,filter,inventory} "$tree/meta" "$tree/tests/sanity"

# sed script mapping the tree's paths back to the repository's, for the report.
paths=$tmp/paths.sed
: >"$paths"
copy() {
  local dest=$1 file
  shift
  for file in "$@"; do
    if [ -e "$tree/plugins/$dest/${file##*/}" ]; then
      echo "two roles have a ${file##*/} in $dest: the collection tree can hold one" >&2
      exit 1
    fi
    cp "$file" "$tree/plugins/$dest/"
    printf 's|plugins/%s/%s|%s|g\n' "$dest" "${file##*/}" "$file" >>"$paths"
  done
}
copy modules roles/*/library/*.py
copy module_utils roles/*/module_utils/*.py
copy action roles/*/action_plugins/*.py
copy filter roles/*/filter_plugins/*.py
copy inventory plugins/inventory/*.py

own=$(cd "$tree/plugins/module_utils" && ls -- *.py | sed 's/\.py$//' | paste -sd'|')
sed -E -i "s/^( *)from ansible\.module_utils\.($own) import /\1from ansible_collections.$namespace.$name.plugins.module_utils.\2 import /" \
  "$tree"/plugins/modules/*.py "$tree"/plugins/module_utils/*.py
if grep -En "^ *(from|import) ansible\.module_utils(\.($own)\b| import)" "$tree"/plugins/modules/*.py "$tree"/plugins/module_utils/*.py; then
  echo "imports of the roles' module_utils above are not in the form this script rewrites" >&2
  exit 1
fi

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' pyproject.toml)
requires=$(sed -n 's/^ *"ansible-core\([^"]*\)",$/\1/p' pyproject.toml)
# galaxy.yml gives ansible-test the collection's version, which it compares version_added with.
printf 'namespace: %s\nname: %s\nversion: %s\n' "$namespace" "$name" "$version" >"$tree/galaxy.yml"
printf 'requires_ansible: "%s"\n' "$requires" >"$tree/meta/runtime.yml"

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
run "$@" 2>&1 | sed -f "$paths" || rc=$?
exit "$rc"
