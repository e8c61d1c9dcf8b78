"""The role's meta/argument_specs.yml is the single truth for its public variables: the defaults
file and the README's variable table must say the same thing."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
ROLE = ROOT / "roles" / "kvm_host"


def spec_options() -> dict[str, dict]:
    specs = yaml.safe_load((ROLE / "meta" / "argument_specs.yml").read_text())
    return specs["argument_specs"]["main"]["options"]


def readme_rows() -> dict[str, tuple[str, str, str]]:
    """README table rows between the role-variables markers: name -> (type, default, text)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("<!-- role-variables:start -->")[1].split("<!-- role-variables:end -->")[0]
    rows = {}
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`kvm_host_"):
            rows[cells[0].strip("`")] = (cells[1], cells[2], cells[3])
    return rows


def render_default(value) -> str:
    return (
        "`"
        + (yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip())
        + "`"
    )


def test_every_default_is_specified_and_equal():
    defaults = yaml.safe_load((ROLE / "defaults" / "main.yml").read_text())
    options = spec_options()
    assert set(defaults) == set(options)
    for name, option in options.items():
        assert option["default"] == defaults[name], name


def test_every_option_has_type_and_description_and_role_prefix():
    for name, option in spec_options().items():
        assert name.startswith("kvm_host_"), name
        assert option.get("type"), name
        assert option.get("description"), name


def test_readme_table_matches_argument_specs():
    rows = readme_rows()
    options = spec_options()
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


def test_role_secrets_are_marked_no_log():
    for name, option in spec_options().items():
        if name.endswith(("_password", "_key")):
            assert option.get("no_log") is True, name
