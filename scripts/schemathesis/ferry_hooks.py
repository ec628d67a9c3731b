"""Schemathesis hooks for Ferry's API check (scripts/api-check).

`POST /worker/lease` and `POST /worker/source/wait` are long polls: with nothing to answer they
wait up to `wait_ms` (at most 60 s), as documented. Generated waits would make the run take
hours, so they are capped here at 200 ms; the long polls themselves are tested end to end in the
Rust suite.
"""

import schemathesis

MAX_WAIT_MS = 200
LONG_POLLS = ("/worker/lease", "/worker/source/wait")


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.path in LONG_POLLS and isinstance(case.body, dict):
        wait = case.body.get("wait_ms")
        if isinstance(wait, int) and not isinstance(wait, bool) and wait > MAX_WAIT_MS:
            case.body["wait_ms"] = MAX_WAIT_MS
