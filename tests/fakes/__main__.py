"""Run a fake push service in its own process (the delivery benchmark and demos use it).

    .venv/bin/python -m tests.fakes fcm --port 8790 --service-account /tmp/sa.json

Writes the service-account JSON that points at this fake (set NUDGE_FCM_BASE_URL to the printed
URL and NUDGE_FCM_CREDENTIALS_FILE to the file), then serves HTTP/1.1 with uvicorn until stopped.
``GET /_fake/receipts`` lists (notification_id, received_at) for every message received.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import uvicorn

from tests.fakes.fcm import FakeFcm


def main() -> None:
    parser = argparse.ArgumentParser(description="Run a fake push service")
    parser.add_argument("service", choices=["fcm"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--service-account", type=Path, required=True)
    args = parser.parse_args()
    fake = FakeFcm(record=False, base_url=f"http://127.0.0.1:{args.port}")
    args.service_account.write_text(json.dumps(fake.service_account()))
    print(f"fake FCM at {fake.base_url}; service account in {args.service_account}", flush=True)
    uvicorn.run(
        fake.app,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


if __name__ == "__main__":
    main()
