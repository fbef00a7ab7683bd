"""The provider registry: extra headers differing only in case are refused; an edit that
changes nothing is no edit (a model sync overlapping it is not a 409)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.llm.test_provider_registry import KEY, Headers, _create, test_settings  # noqa: F401
from tests.support.openai_stub import Models, StubServer

PROVIDERS = "/api/v1/llm/providers"


async def test_extra_headers_differing_only_in_case_are_a_422(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
) -> None:
    """Two `extra_headers` whose names differ only in case (one HTTP header) are a 422:
    stored, the masked config sent back overwrote the first one's secret with the
    second's."""
    created = await _create(client, admin_headers, name="twin-headers", type="openai",
                            base_url=stub.base_url,
                            config={"extra_headers": {"X-Token-A": "first-secret-1",
                                                      "x-token-a": "second-secret-2"}})
    assert created.status_code == 422, created.text
    assert "x-token-a" in created.text, created.text


@pytest.mark.parametrize("body", [{}, {"api_key": None}], ids=["empty", "no-key-again"])
async def test_an_empty_patch_overlapping_a_model_sync_does_not_make_it_a_409(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    body: dict[str, object],
) -> None:
    """A `PATCH {}` (a console "save" with nothing changed), or `api_key: null` for a
    provider without a key, is no edit: a sync overlapping it stands (every PATCH set
    updated_at: "the provider changed during the sync", 409)."""
    pid = (await _create(client, admin_headers, name="empty-patch", type="openai",
                         base_url=stub.base_url, model="m")).json()["id"]
    stub.script(Models(ids=("a", "b"), delay_ms=1500))
    sync = asyncio.create_task(client.post(f"{PROVIDERS}/{pid}/sync-models",
                                           headers=admin_headers))
    for _ in range(300):  # until the stub has the sync's request
        if any(seen.path.endswith("/models") for seen in stub.requests()):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the sync never reached the stub")
    nothing = await asyncio.wait_for(
        client.patch(f"{PROVIDERS}/{pid}", json=body, headers=admin_headers), 30)
    assert nothing.status_code == 200, nothing.text
    answer = await asyncio.wait_for(sync, 30)
    assert answer.status_code == 200, answer.text
    assert set(answer.json()["models"]) == {"a", "b", "m"}, answer.text


async def test_the_same_api_key_again_is_no_edit(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
) -> None:
    """A configuration tool re-applying a provider's settings sends its api_key again: no
    edit (updated_at unchanged, no audit record, no pool rebuild)."""
    created = (await _create(client, admin_headers, name="keyed", type="openai",
                             base_url=stub.base_url, model="m", api_key=KEY)).json()
    again = await client.patch(f"{PROVIDERS}/{created['id']}", json={"api_key": KEY},
                               headers=admin_headers)
    assert again.status_code == 200, again.text
    assert again.json()["updated_at"] == created["updated_at"], again.text
    other = await client.patch(f"{PROVIDERS}/{created['id']}", json={"api_key": KEY + "-2"},
                               headers=admin_headers)
    assert other.json()["updated_at"] != created["updated_at"], other.text


async def test_disabling_a_model_the_provider_does_not_list_is_a_422_naming_it(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
) -> None:
    """A model to disable named by a mistyped id (here the NFD spelling of the NFC id the
    provider lists) is a 422 naming it, not a 200 that leaves the model routed."""
    pid = (await _create(client, admin_headers, name="cafe", type="openai",
                         base_url=stub.base_url, model="caf\u00e9")).json()["id"]
    patched = await client.patch(f"{PROVIDERS}/{pid}", json={"disabled_models": ["cafe\u0301"]},
                                 headers=admin_headers)
    assert patched.status_code == 422, patched.text
    assert patched.json()["models"] == ["cafe\u0301"], patched.text
    listed = await client.patch(f"{PROVIDERS}/{pid}", json={"disabled_models": ["caf\u00e9"]},
                                headers=admin_headers)
    assert listed.status_code == 200, listed.text

