"""Each role's meta/argument_specs.yml is the single truth for its public variables: the defaults
file and the README's variable table must say the same thing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
#: role -> the README marker around its variable table.
ROLES = {"kvm_host": "role-variables", "one_frontend": "one-frontend-variables"}

pytestmark = pytest.mark.parametrize("role", list(ROLES))


def spec_options(role: str) -> dict[str, dict]:
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())
    return specs["argument_specs"]["main"]["options"]


def readme_rows(role: str) -> dict[str, tuple[str, str, str]]:
    """README table rows between the role's markers: name -> (type, default, text)."""
    text = (ROOT / "README.md").read_text()
    marker = ROLES[role]
    section = text.split(f"<!-- {marker}:start -->")[1].split(f"<!-- {marker}:end -->")[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith(f"`{role}_"):
            rows[cells[0].strip("`")] = (cells[1], cells[2], cells[3])
    return rows


def render_default(value) -> str:
    return (
        "`"
        + (yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip())
        + "`"
    )


def test_every_default_is_specified_and_equal(role):
    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text())
    options = spec_options(role)
    assert set(defaults) == set(options)
    for name, option in options.items():
        assert option["default"] == defaults[name], name


def test_every_option_has_type_and_description_and_role_prefix(role):
    for name, option in spec_options(role).items():
        assert name.startswith(f"{role}_"), name
        assert option.get("type"), name
        assert option.get("description"), name


def test_readme_table_matches_argument_specs(role):
    rows = readme_rows(role)
    options = spec_options(role)
    assert list(rows) == list(options), "README rows must follow argument_specs.yml order"
    for name, option in options.items():
        type_cell, default_cell, text_cell = rows[name]
        expected_type = option["type"]
        if "choices" in option:
            expected_type += ": " + ", ".join(option["choices"])
        assert type_cell == expected_type, name
        assert default_cell == render_default(option["default"]), name
        description = option["description"]
        if isinstance(description, list):
            description = " ".join(description)
        assert re.sub(r"\s+", " ", text_cell) == re.sub(r"\s+", " ", description), name


#: The variables that hold a secret, by name: a new one is added here (and marked no_log).
SECRETS = {
    "kvm_host": {
        "kvm_host_one_repo_password",
        "kvm_host_libvirt_sasl_password",
        "kvm_host_libvirt_tls_server_key",
        "kvm_host_libvirt_tls_client_key",
    },
    "one_frontend": {"one_frontend_auth"},
}


def test_role_secrets_are_marked_no_log(role):
    options = spec_options(role)
    named = {n for n in options if n.endswith(("_password", "_key")) or n == f"{role}_auth"}
    assert named == SECRETS[role]
    assert {n for n, option in options.items() if option.get("no_log") is True} == SECRETS[role]
