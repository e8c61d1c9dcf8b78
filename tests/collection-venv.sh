#!/usr/bin/env bash
# The venv an Ansible user runs kvmprep.kvm from, without kvmprep's CLI (issue 18): ansible-core
# and pyone at the versions the test venv has, and nothing of kvmprep (the lab test installs the
# built collection for it and runs ansible-playbook kvmprep.kvm.check / .apply by FQCN from it).
# Made once and reused while the versions match (the pins are kept in it); it needs PyPI, so
# tests/run-all.sh makes it before the lab, never a test. Prints the venv's path.
#   tests/collection-venv.sh [PYTHON]          PYTHON: the test venv's (default: .venv/bin/python)
#   tests/collection-venv.sh --pins [PYTHON]   only print the pins
# KVMPREP_COLLECTION_VENV: where (default: .venv-collection in the checkout, where the lab
# test looks when the variable is unset).
set -euo pipefail
project=$(cd "$(dirname "$0")/.." && pwd)
pins_only=false
if [ "${1:-}" = --pins ]; then pins_only=true; shift; fi
python=${1:-${KVMPREP_VENV:-$project/.venv}/bin/python}
dir=${KVMPREP_COLLECTION_VENV:-$project/.venv-collection}

pins=$("$python" -c 'from importlib.metadata import version
print(" ".join(f"{name}=={version(name)}" for name in ("ansible-core", "pyone")))')
if $pins_only; then
  echo "$pins"
  exit 0
fi

stamp=$dir/kvmprep-pins
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$pins" ]; then
  echo "$dir"
  exit 0
fi
echo "collection venv: $pins into $dir" >&2
rm -rf "$dir"
# The test venv's interpreter makes it: the same Python (a venv made from a venv takes the
# base interpreter, not the test venv's packages).
"$python" -m venv "$dir"
"$dir/bin/python" -m pip install -q --disable-pip-version-check $pins >&2
# Written last: a venv whose install failed or was interrupted is made again next time.
echo "$pins" >"$stamp"
echo "$dir"
