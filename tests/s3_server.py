"""A local S3 endpoint (moto's server) for tests: 127.0.0.1 only, a free port.

Usage::

    with S3Server() as s3:
        s3.create_bucket("data")
        env = s3.env()          # AWS_ENDPOINT_URL + fake credentials + region
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

FAKE_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    # Keep every AWS client away from real config files and instance metadata.
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}


class S3Server:
    """moto's ``ThreadedMotoServer`` on 127.0.0.1 with a free port."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.endpoint = ""

    def start(self) -> S3Server:
        self._server.start()
        host, port = self._server.get_host_and_port()
        self.endpoint = f"http://{host}:{port}"
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self) -> dict[str, str]:
        """Environment variables that point AWS clients (boto3, pyarrow, aws) here."""
        return {**FAKE_ENV, "AWS_ENDPOINT_URL": self.endpoint}

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def reset(self) -> None:
        """Forget every bucket (moto's reset API)."""
        import urllib.request

        request = urllib.request.Request(self.endpoint + "/moto-api/reset", method="POST")
        with urllib.request.urlopen(request, timeout=10):
            pass

    def upload_dir(self, local: Path, bucket: str, prefix: str) -> list[str]:
        """Upload every file under ``local`` to ``s3://bucket/prefix/<relative path>``."""
        client = self.client()
        keys = []
        for path in sorted(p for p in Path(local).rglob("*") if p.is_file()):
            key = f"{prefix.strip('/')}/{path.relative_to(local).as_posix()}"
            client.upload_file(str(path), bucket, key)
            keys.append(key)
        return keys
