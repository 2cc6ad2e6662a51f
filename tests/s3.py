"""A loopback S3 server for the tests: moto's S3 in a process of its own, on 127.0.0.1.

The session fixture in ``conftest.py`` starts it and puts its address in ``COLBERT_STORE_TEST_S3``,
which worker processes inherit. Each test folder maps to a bucket of its own.

moto checks a conditional write (``If-None-Match: *``, how Lance commits a table version on S3) and
applies it in two steps, so two requests committing the same version at once can both succeed, the
second overwriting the first: S3 never allows that, and a concurrency test then loses a write that
was acknowledged. The server (``python -m tests.s3 PORT``) therefore applies one write at a time.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ENDPOINT_VARIABLE = "COLBERT_STORE_TEST_S3"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "aws_region": "us-east-1"}


def start_server(*, refuse_credentials: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    """Start moto's server on a free loopback port; its process and endpoint once it answers. With
    ``refuse_credentials`` it checks request signatures and knows no keys, so it refuses every request."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"} if refuse_credentials else None
    process = subprocess.Popen([sys.executable, "-m", "tests.s3", str(port)], cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1).close()
            return process, endpoint
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("the loopback S3 server (moto) did not start") from None
            time.sleep(0.2)


def storage_options(endpoint: str | None = None, **more: str) -> dict[str, str]:
    """LanceDB storage options for the test server (``more``: e.g. ``client_max_retries``)."""
    return {**CREDENTIALS, "aws_endpoint": endpoint or os.environ[ENDPOINT_VARIABLE], "allow_http": "true", **more}


def bucket_for(folder: Path) -> str:
    """The bucket of a test folder (created if missing): a valid bucket name derived from the path."""
    name = "t" + uuid.uuid5(uuid.NAMESPACE_URL, str(folder.resolve())).hex[:30]
    client = _client()
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=name)
    return name


def copy_bucket(source: Path, target: Path) -> None:
    """Copy every object of ``source``'s bucket into ``target``'s."""
    client, source_bucket, target_bucket = _client(), bucket_for(source), bucket_for(target)
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=source_bucket):
        for item in page.get("Contents", []):
            client.copy_object(Bucket=target_bucket, Key=item["Key"], CopySource={"Bucket": source_bucket, "Key": item["Key"]})


def _client() -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=os.environ[ENDPOINT_VARIABLE], aws_access_key_id="testing",
                        aws_secret_access_key="testing", region_name="us-east-1")


def serve(port: int) -> None:
    """moto's S3 on 127.0.0.1:``port`` until killed, each request that writes applied alone (module docstring)."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import run_simple

    app = DomainDispatcherApplication(create_backend_app)
    writing = threading.Lock()

    def one_write_at_a_time(environ: dict[str, Any], start_response: Any) -> Any:
        if environ["REQUEST_METHOD"] in ("GET", "HEAD"):
            return app(environ, start_response)
        with writing:
            return list(app(environ, start_response))

    run_simple("127.0.0.1", port, one_write_at_a_time, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    serve(int(sys.argv[1]))
