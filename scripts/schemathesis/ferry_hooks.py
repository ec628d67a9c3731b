"""Schemathesis hooks for Ferry's API check (scripts/api-check).

`POST /worker/lease` is a long poll: with no work ready it waits up to `wait_ms` (at most half of
`lease_ms`, at most 60 s), as documented. Generated waits would make the run take hours, so they
are capped here at 200 ms; the long poll itself is tested end to end in the Rust suite.
"""

import schemathesis

MAX_WAIT_MS = 200


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.path == "/worker/lease" and isinstance(case.body, dict):
        wait = case.body.get("wait_ms")
        if isinstance(wait, int) and not isinstance(wait, bool) and wait > MAX_WAIT_MS:
            case.body["wait_ms"] = MAX_WAIT_MS
