"""Two password changes of one account at once, from two console sessions."""

from __future__ import annotations

import asyncio

import httpx

from roost.db.engine import Database
from roost.http.auth import CSRF_COOKIE, SESSION_COOKIE
from tests.identity.conftest import password_user

PASSWORD = "plum-velvet-orbit-93!"


async def _sign_in(client: httpx.AsyncClient, login: str, password: str = PASSWORD,
                   ) -> dict[str, str] | None:
    csrf = "k" * 43
    answer = await client.post("/console/session", headers={"X-CSRF-Token": csrf},
                               cookies={CSRF_COOKIE: csrf},
                               json={"login": login, "password": password})
    if answer.status_code != 200:
        return None
    return {SESSION_COOKIE: answer.cookies[SESSION_COOKIE], CSRF_COOKIE: answer.cookies[CSRF_COOKIE]}


async def test_of_two_concurrent_password_changes_a_200_means_that_password_works(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """Of two changes sent at once from two console sessions, the one that runs second
    was made by a session the first just ended: it is refused, and a 200 means that
    password is in effect.  Both answered 200 (each "ending" the other session), the later
    hash overwrote the earlier, and the first caller's new password did not sign in."""
    for round_ in range(3):
        name = f"racer{round_}"
        await password_user(database, name, password=PASSWORD)
        one = await _sign_in(client, name)
        two = await _sign_in(client, name)
        assert one is not None and two is not None
        news = (f"quartz-lantern-fable-{round_}1?", f"other-maple-ridge-{round_}8#")

        async def change(c: dict[str, str], new: str) -> httpx.Response:
            return await client.post("/api/v1/auth/password", cookies=c,
                                     headers={"X-CSRF-Token": c[CSRF_COOKIE]},
                                     json={"current_password": PASSWORD, "new_password": new})

        answers = await asyncio.wait_for(asyncio.gather(change(one, news[0]),
                                                        change(two, news[1])), 30)
        codes = [a.status_code for a in answers]
        assert 500 not in codes, [a.text for a in answers]
        for answer, new in zip(answers, news, strict=True):
            if answer.status_code == 200:
                works = await asyncio.wait_for(_sign_in(client, name, new), 30)
                assert works is not None, (round_, codes, "a 200 for a password not in effect")
