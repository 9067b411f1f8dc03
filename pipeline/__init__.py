"""Prefect front end over the stage functions in `stages/` (no ML code lives here).

Importing this package points Prefect at a home inside the project and turns off anything
that would reach the network (analytics), unless the caller already chose otherwise: with
`PREFECT_API_URL` unset a flow runs against a temporary local server (ephemeral mode); set
it to use a real Prefect server.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[1]

for _name, _value in {
    "PREFECT_HOME": str(PROJECT_ROOT / ".prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # The temporary server needs more than the default 20 s on a busy 2-core machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}.items():
    os.environ.setdefault(_name, _value)
