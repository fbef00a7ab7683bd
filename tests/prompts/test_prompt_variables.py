"""Variable defaults as publishing stores them and rendering uses them."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from roost.config import Settings
from roost.prompts.schemas import MAX_TEXT
from tests.prompts.conftest import User, publish


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    """The default request limit (10 MiB), as a server has it: room for long defaults."""
    return Settings(data_dir=tmp_path / "data", log_json=True)


async def test_a_string_default_longer_than_a_text_is_refused(
        client: httpx.AsyncClient, user: User) -> None:
    """A string default longer than a prompt's text may be is a 422 naming its field at
    publish (one of 2,000,000 characters was stored and could never render)."""
    _, headers = user
    for length in (MAX_TEXT + 1, 2_000_000):
        resp = await client.post("/api/v1/prompts", headers=headers, json={
            "prompt_key": "huge.default", "prompt_text": "{{a}}",
            "variables": [{"name": "a", "required": False, "default": "x" * length}]})
        assert resp.status_code == 422, resp.text[:500]
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert "default" in resp.text and "x" * 100 not in resp.text  # named, not echoed
    v = await publish(client, headers, "huge.default", "{{a}}", variables=[
        {"name": "a", "required": False, "default": "x" * MAX_TEXT}])
    resp = await client.post(f"/api/v1/prompts/{v['id']}/render", headers=headers, json={})
    assert resp.status_code == 200, resp.text[:500]
    assert len(resp.json()["text"]) == MAX_TEXT


async def test_a_number_default_renders_as_the_same_value_supplied(
        client: httpx.AsyncClient, user: User) -> None:
    """A number default renders as the same number supplied as a value does (the database
    gave 1.5e300 back as a 301-digit integer, and -0.0 as 0.0); whole numbers stay whole."""
    _, headers = user
    v = await publish(client, headers, "flt.k", "{{a}}|{{b}}|{{c}}|{{d}}|{{e}}|{{z}}", variables=[
        {"name": "a", "type": "number", "default": 1.5e300},
        {"name": "b", "type": "number", "default": 0.1},
        {"name": "c", "type": "number", "default": 3},
        {"name": "d", "type": "number", "default": 1e16},
        {"name": "e", "type": "integer", "default": 10**20},
        {"name": "z", "type": "number", "default": -0.0}])
    by_default = await client.post(f"/api/v1/prompts/{v['id']}/render", headers=headers,
                                   json={})
    supplied = await client.post(f"/api/v1/prompts/{v['id']}/render", headers=headers, json={
        "values": {"a": 1.5e300, "b": 0.1, "c": 3, "d": 1e16, "e": 10**20, "z": -0.0}})
    assert by_default.status_code == supplied.status_code == 200, by_default.text
    assert by_default.json()["text"] == supplied.json()["text"] == (
        "1.5e+300|0.1|3|1e+16|100000000000000000000|0.0")


async def test_a_placeholder_with_an_invisible_character_inside_is_refused(
        client: httpx.AsyncClient, user: User) -> None:
    """`{{<zero-width space>who}}` looks like `{{who}}` but is no placeholder: publishing
    it is a 422 naming the variable (it rendered its braces literally whatever the
    values); `{{ who }}` with spaces and braces around other text are still fine."""
    _, headers = user
    for text in ("Hello {{\u200bwho}}", "Hello {{who\u2060}}", "Hi {{ w\ufeffho }}"):
        resp = await client.post("/api/v1/prompts", headers=headers, json={
            "prompt_key": "zw.k", "prompt_text": text, "variables": [{"name": "who"}]})
        assert resp.status_code == 422 and resp.json()["variable"] == "who", resp.text
    v = await publish(client, headers, "zw.k", "Hello {{ who }}: {{not a placeholder}} {{}}",
                      variables=[{"name": "who"}])
    rendered = await client.post(f"/api/v1/prompts/{v['id']}/render", headers=headers,
                                 json={"values": {"who": "Ann"}})
    assert rendered.json()["text"] == "Hello Ann: {{not a placeholder}} {{}}", rendered.text


async def test_a_version_its_own_defaults_render_too_long_is_refused(
        client: httpx.AsyncClient, user: User) -> None:
    """A version whose defaults alone render past the limit failed every use (a
    chat.system one: every chat reply) for as long as it was labelled: publishing it is a
    422; at the limit it is published and renders."""
    _, headers = user
    too_long = await client.post("/api/v1/prompts", headers=headers, json={
        "prompt_key": "chat.system", "prompt_text": "{{a}}" * 10_000,
        "variables": [{"name": "a", "default": "x" * 101}]})
    assert too_long.status_code == 422, too_long.text[:500]
    assert too_long.json()["type"].endswith("rendered-prompt-too-long")
    v = await publish(client, headers, "chat.system", "{{a}}" * 10_000,
                      variables=[{"name": "a", "default": "x" * 100}])
    resp = await client.post(f"/api/v1/prompts/{v['id']}/render", headers=headers, json={})
    assert resp.status_code == 200 and len(resp.json()["text"]) == 1_000_000


async def test_padded_placeholder_with_invisible_character_is_refused(
        client: httpx.AsyncClient, user: User) -> None:
    """A placeholder with an invisible character inside is a 422 naming the variable also
    when generous spaces pad it inside its braces, as `{{ who }}` may be (past 100
    characters between the braces it was published, and rendered as literal braces)."""
    _, headers = user
    text = "Hello {{" + " " * 60 + "who\u200b" + " " * 60 + "}}"
    resp = await client.post("/api/v1/prompts", headers=headers, json={
        "prompt_key": "zw.pad", "prompt_text": text, "variables": [{"name": "who"}]})
    assert resp.status_code == 422, resp.text
    assert resp.json().get("variable") == "who", resp.text


def test_chat_setting_with_invisible_character_in_placeholder_is_refused(
        tmp_path: Path) -> None:
    """ROOST_CHAT_SYSTEM_PROMPT with `{{<zero-width space>date}}` is refused when the
    settings are read, so no server runs with it (start-up only logged its refusal to
    publish it, and chat sent the setting's text, braces and all, to the model)."""
    with pytest.raises(ValidationError, match="invisible character"):
        Settings(data_dir=tmp_path / "data", chat_system_prompt="Today is {{\u200bdate}}.")
