"""HTTPS on the listening side: a certificate made by openssl in the test, a client that verifies it."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path

import aiohttp
import pytest

from omproxy.cli import main
from omproxy.config.options import Config, Mode
from omproxy.errors import UsageError
from omproxy.serve.http import front
from omproxy.serve.runtime import build_runtime
from tests.support import BASE, FORM

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl (Debian package openssl) is "
                                "not installed; .ci/run installs it")


@pytest.fixture
def certificate(tmp_path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


async def test_an_https_client_that_verifies_the_certificate_is_served(certificate) -> None:
    cert, key = certificate
    config = Config(port=0, tls_cert=str(cert), tls_key=str(key))
    listener = await front.start(build_runtime(config, Mode.SIMULATE), config)
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        async with aiohttp.ClientSession() as http:
            async with http.post(f"https://127.0.0.1:{listener.port}{BASE}/customer-support",
                                 data=b"externalId=tls", headers=FORM, ssl=trust) as resp:
                assert resp.status == 200 and (await resp.json())["statusCode"] == 0
            with pytest.raises(aiohttp.ClientConnectorCertificateError):  # a client that does not trust it
                await http.post(f"https://127.0.0.1:{listener.port}{BASE}/customer-support",
                                ssl=ssl.create_default_context())
    finally:
        await listener.close()


def test_a_certificate_that_cannot_be_loaded_is_one_line_exit_2(tmp_path, certificate, capsys) -> None:
    cert, _ = certificate
    (tmp_path / "empty.yaml").write_text("{}\n")
    assert main(["simulate", "--config", str(tmp_path / "empty.yaml"), "--port", "0", "--tls-cert", str(cert),
                 "--tls-key", str(tmp_path / "missing.pem")]) == 2
    assert "cannot load the TLS certificate" in capsys.readouterr().err
    with pytest.raises(UsageError, match="needs both"):
        front.tls_context(Config(tls_cert=str(cert)))
