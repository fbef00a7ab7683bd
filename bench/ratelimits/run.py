"""What a rate limit costs a request (docs/operations.md, "Rate limits and quotas").

    .venv/bin/python bench/ratelimits/run.py [--requests 1000]

In process: the app of ``roost.app.create_app`` (lifespan run) over httpx's ASGI
transport, on an embedded PostgreSQL in a temporary directory.  Three users, each with an
API key, send ``GET /api/v1/api-keys`` (an authenticated one-statement read) in turn, so
the three see the same machine load:

* **none**: no limit applies (the default): authentication's statement only;
* **user**: a per-user limit (1,000,000 a minute, never reached): plus one call of
  ``roost_rate_take`` on the limiter's pool;
* **user+key**: a per-user and a per-key limit: the same one call, two subjects.

Also timed alone: the limiter's call (``Limiter.take_request``) and a stream slot's
acquire + release (``Limiter.acquire_stream`` then ``StreamLease.release``).
Medians and p95 in milliseconds; results in bench/results/ratelimits.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "ratelimits.json"
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # tests.support


def _summary(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_ms": round(statistics.median(ordered) * 1000, 3),
            "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 3)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from sqlalchemy import update
    from tests.support.identity import make_user

    from roost.app import create_app
    from roost.config import Settings
    from roost.db.embedded import start_embedded
    from roost.db.engine import create_database, ensure_database_exists, to_async_url
    from roost.db.migrate import upgrade
    from roost.identity.models import ApiKey, User
    from roost.identity.ratelimits import Limiter, RequestLimits
    from roost.keyfiles import KeyMaterial
    from roost.principal import Principal

    keys = KeyMaterial(
        secret_key=secrets.token_urlsafe(48), message_keys=(Fernet.generate_key().decode(),),
        secrets_key=base64.b64decode(base64.b64encode(secrets.token_bytes(32))),
        admin_token="rst_admin_" + secrets.token_urlsafe(24))
    out: dict[str, Any] = {"requests": args.requests, "machine": platform.platform(),
                           "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="roost-bench-ratelimits-") as tmp_dir:
        tmp = Path(tmp_dir)
        server = start_embedded(tmp / "pg", delete_on_exit=True)
        try:
            ensure_database_exists(server, "bench_ratelimits")
            settings = Settings(data_dir=tmp / "data", log_json=True, llm_local_model=False,
                                log_level="warning")
            database = create_database(
                settings, url=to_async_url(server.libpq_url("bench_ratelimits")))
            await upgrade(database.engine)
            app = create_app(settings, database=database, keys=keys, configure_logs=True)
            users: dict[str, dict[str, str]] = {}
            for name in ("none", "user", "user+key"):
                user_id, headers = await make_user(database, username=f"bench-{name}".replace("+", "-"))
                users[name] = headers
                async with database.transaction() as session:
                    if name != "none":
                        await session.execute(update(User).where(User.id == user_id)
                                              .values(rate_limit_rpm=1_000_000))
                    if name == "user+key":
                        await session.execute(update(ApiKey).where(ApiKey.user_id == user_id)
                                              .values(rate_limit_rpm=1_000_000))
            samples: dict[str, list[float]] = {name: [] for name in users}
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50001))
            async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=transport, base_url="http://roost.test"
            ) as client:
                for _ in range(50):  # warm: pools, prepared statements, types
                    for headers in users.values():
                        assert (await client.get("/api/v1/api-keys", headers=headers)
                                ).status_code == 200
                for _ in range(args.requests):
                    for name, headers in users.items():
                        start = time.perf_counter()
                        answer = await client.get("/api/v1/api-keys", headers=headers)
                        samples[name].append(time.perf_counter() - start)
                        assert answer.status_code == 200, answer.text
            out["request"] = {name: _summary(s) for name, s in samples.items()}
            base = out["request"]["none"]["median_ms"]
            for name in ("user", "user+key"):
                out["request"][name]["added_median_ms"] = round(
                    out["request"][name]["median_ms"] - base, 3)

            limiter = Limiter(database.url, settings)
            principal = Principal(user_id=uuid.uuid4(), is_admin=False, kind="api_key",
                                  api_key_id=uuid.uuid4())
            limits = RequestLimits.build(principal, settings, user_rpm=1_000_000,
                                         user_streams=1_000, key_rpm=1_000_000, key_streams=1_000)
            assert limits is not None
            take: list[float] = []
            stream: list[float] = []
            for _ in range(50):
                await limiter.take_request(limits)
            for _ in range(args.requests):
                start = time.perf_counter()
                await limiter.take_request(limits)
                take.append(time.perf_counter() - start)
                start = time.perf_counter()
                lease = await limiter.acquire_stream(limits)
                assert lease is not None
                await lease.release()
                stream.append(time.perf_counter() - start)
            await limiter.dispose()
            out["load_average_1m"] = round(os.getloadavg()[0], 2)  # others' work skews all
            out["limiter_take_request"] = _summary(take)
            out["stream_acquire_release"] = _summary(stream)
            await database.dispose()
        finally:
            server.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    result = asyncio.run(run(parser.parse_args()))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
