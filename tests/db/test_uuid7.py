from __future__ import annotations

import time

from roost.db.base import uuid7


def test_uuid7_is_version_7_and_time_ordered() -> None:
    ids = [uuid7() for _ in range(5000)]
    assert all(i.version == 7 and i.variant == "specified in RFC 4122" for i in ids)
    assert ids == sorted(ids), "ids from one process must be strictly increasing"
    assert len(set(ids)) == len(ids)
    ms = ids[-1].int >> 80
    assert abs(ms - time.time() * 1000) < 5000
