"""Whether a model server (this project's or TF Serving) has a version of a model AVAILABLE.

TF Serving answers its REST model-status call with 200 while a version is still loading, so the
state in the answer is what tells "serving" from "starting"; `RunningProcess.wait_until` polls it.
"""

from __future__ import annotations

import httpx

from clothing_preproc.signature import COURSE_MODEL_NAME
from testing_support.ports import LOOPBACK


def model_available(rest_port: int, model: str = COURSE_MODEL_NAME, host: str = LOOPBACK) -> bool:
    """GET /v1/models/<model> on the REST port answers 200 with a version AVAILABLE."""
    try:
        r = httpx.get(f"http://{host}:{rest_port}/v1/models/{model}", timeout=2.0)
    except httpx.HTTPError:
        return False
    return r.status_code == 200 and '"AVAILABLE"' in r.text
