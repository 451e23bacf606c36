"""Short names for values: the hex SHA-256 of a value's canonical JSON, cut to a length.

Caches, sweeps and datasets name what they were made from this way (a compiled graph's
inputs, a study's search space, a dataset mix), so that the same inputs always give the
same name and any change gives another. Each caller keeps the length its stored names
already have: a new length would orphan every cache and study made before.
"""

from __future__ import annotations

import hashlib
import json


def json_digest(value: object, length: int) -> str:
    """``length`` hex digits of the SHA-256 of ``value`` as JSON with sorted keys (values
    JSON cannot hold, paths for example, as their ``str``).

    >>> json_digest({"b": 1, "a": [2]}, 12) == json_digest({"a": [2], "b": 1}, 12)
    True
    >>> len(json_digest(("x", 3), 24)), json_digest(1, 8) == json_digest(2, 8)
    (24, False)
    """
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]
