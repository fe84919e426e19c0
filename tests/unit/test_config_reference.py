"""docs/configuration.md is generated from the settings models and says something of every key."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from gateway.cli import config_reference as reference
from gateway.settings import Settings, apply_env

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def every_setting_path(model: type[BaseModel] = Settings, prefix: str = "") -> set[str]:
    """Walk the models on our own (nested sections and lists of tables alike), so the
    generator's walk is checked rather than trusted."""
    paths: set[str] = set()
    for key, info in model.model_fields.items():
        dotted = f"{prefix}.{key}" if prefix else key
        inner, _ = reference.model_of(info.annotation)
        paths |= every_setting_path(inner, dotted) if inner else {dotted}
    return paths


def documented() -> dict[str, reference.Setting]:
    return {s.path: s for section in reference.sections() for s in section.settings}


def test_the_page_on_disk_is_the_generated_one() -> None:
    assert PAGE.read_text(encoding="utf-8") == reference.render(), (
        f"docs/configuration.md is stale: run `{reference.GENERATOR}`")


def test_every_setting_is_documented_with_a_description() -> None:
    settings = documented()
    assert set(settings) == every_setting_path()
    assert {"shutdown_delay_s", "operators.deadline_s", "webhooks.secret"} <= set(settings)
    missing = sorted(path for path, s in settings.items() if not s.description)
    assert missing == [], f"settings without a description: {missing}"


def test_every_section_has_its_text() -> None:
    paths = [section.path for section in reference.sections()]
    assert {"", "security", "operators", "webhooks"} <= set(paths)
    assert [p for p in paths if not reference.SECTION_TEXTS.get(p)] == []


def test_no_description_or_check_names_a_setting_that_is_gone() -> None:
    paths = every_setting_path()
    assert sorted(set(reference.DESCRIPTIONS) - paths) == []
    assert sorted(set(reference.CHECKS) - paths) == []
    sections = {section.path for section in reference.sections()}
    assert sorted(set(reference.SECTION_TEXTS) - sections) == []


def test_an_undescribed_key_in_a_list_of_tables_is_found() -> None:
    class Leaf(BaseModel):
        described: int = Field(1, description="said")
        silent: int = 2

    class Root(BaseModel):
        leaves: list[Leaf] = Field(default_factory=list)

    found = {s.path: s.description for section in reference.sections(Root, "")
             for s in section.settings}
    assert found == {"leaves.described": "Said.", "leaves.silent": None}
    assert [(s.path, s.is_list) for s in reference.sections(Root, "")] == [
        ("", False), ("leaves", True)]


def test_types_defaults_and_bounds_come_from_the_models() -> None:
    settings = documented()
    delay = settings["shutdown_delay_s"]
    assert (delay.type, delay.default, delay.constraint) == ("number", "`0.0`", "≥ 0; ≤ 300")
    provisional = settings["operators.provisional"]
    assert provisional.type == 'one of `"none"`, `"cached_rights"`, `"card"`'
    assert provisional.default == '`"card"`'
    assert settings["operators.name"].default == "required"
    assert settings["operators.name"].constraint.startswith("matches `^[a-z0-9-]+$`")
    assert settings["security.data_key"].type == "secret string"
    assert settings["api_docs"].default == "unset"
    assert settings["pro_sante_connect.scopes"].default == '`["openid", "scope_all"]`'


def test_every_documented_environment_variable_is_honoured() -> None:
    for section in reference.sections():
        for setting in section.settings:
            name = reference.env_name(section, setting.key)
            if name is None:
                continue
            base = {"operators": [{}]} if section.path == "operators" else {}
            merged = apply_env(base, {name: "probe"})
            value: object = merged
            for part in section.path.split(".") if section.path else []:
                value = value[part][0] if part == "operators" else value[part]  # type: ignore[index]
            assert value[setting.key] == "probe", name  # type: ignore[index]


def test_a_list_of_tables_without_per_key_variables_takes_json() -> None:
    webhooks = next(s for s in reference.sections() if s.path == "webhooks")
    assert reference.env_name(webhooks, "url") is None
    assert "`GATEWAY_WEBHOOKS`" in reference.env_line(webhooks)
    assert apply_env({}, {"GATEWAY_WEBHOOKS": '[{"url": "https://x"}]'}) == {
        "webhooks": [{"url": "https://x"}]}
