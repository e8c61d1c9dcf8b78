"""Stands in for get-pip.py, the script ansible-test downloads from ci-files.testing.ansible.com
to put pip into the empty virtual environments it makes for each sanity test (that host is out
of reach here; PyPI is not). tests/sanity.sh saves it where ansible-test's own error message says
a manually fetched bootstrap goes, beside the wheel of the pip version ansible-test asks for.

Like get-pip.py it runs that pip, from its wheel, to install the packages it is given (pip==X)
into the interpreter that runs it; get-pip's own options (--no-setuptools, --no-wheel) only say
not to add those two packages, which this script never adds.
"""

import runpy
import sys
from pathlib import Path

here = Path(__file__).resolve().parent
wheels = sorted(here.glob("pip-*.whl"))
if not wheels:
    sys.exit(f"no pip wheel beside {__file__}")
sys.path.insert(0, str(wheels[-1]))
options = [arg for arg in sys.argv[1:] if arg not in ("--no-setuptools", "--no-wheel")]
sys.argv = ["pip", "install", "--find-links", str(here), *options]
runpy.run_module("pip", run_name="__main__", alter_sys=True)
