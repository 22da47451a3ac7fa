"""An operator's own NATS: nkey seed, user/password in the URL, creds file, (mutual) TLS."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from agentops import credentials
from agentops.bus.auth import nats_auth
from agentops.bus.connection import connect
from agentops.config import load_settings
from agentops.natsserver import find_binary, free_port
from agentops.protocol.errors import ConfigError
from tests.e2e.hybrid_nats import make_certificates
from tests.helpers import eventually_sync

pytestmark = pytest.mark.integration


def client_certificate(certs: Path) -> tuple[Path, Path]:
    """A client certificate signed by the test CA (for mutual TLS)."""
    (certs / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for cmd in (
        "req -newkey rsa:2048 -nodes -subj /CN=agentops-edge -keyout client-key.pem -out client.csr",
        "x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30"
        " -extfile client.ext -out client-cert.pem",
    ):
        subprocess.run(["openssl", *cmd.split()], cwd=certs, check=True, capture_output=True)
    return certs / "client-cert.pem", certs / "client-key.pem"


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path, str]]:
    """A nats-server requiring TLS with client certificates and one nkey user; (port, certs,
    the user's seed)."""
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl for certificates")
    certs = make_certificates(tmp_path / "certs")
    client_certificate(certs)
    seed = credentials.new_seed()
    public = credentials.public_key(seed, "test seed")
    port = free_port()
    conf = tmp_path / "tls.conf"
    conf.write_text(f"""
listen: 127.0.0.1:{port}
tls {{
  cert_file: "{certs / "hub-cert.pem"}"
  key_file: "{certs / "hub-key.pem"}"
  ca_file: "{certs / "ca.pem"}"
  verify: true
}}
authorization {{ users: [ {{ nkey: {public} }}, {{ user: plain, password: pw123 }} ] }}
""")
    log = tmp_path / "nats.log"
    proc = subprocess.Popen(
        [find_binary(), "-c", str(conf)], stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    eventually_sync(lambda: "Server is ready" in log.read_text(), timeout=20, what="TLS server")
    yield port, certs, seed.decode()
    proc.terminate()
    proc.wait(10)


async def test_nkey_seed_with_mutual_tls_connects_and_names_no_secret(
    tls_server: tuple[int, Path, str], tmp_path: Path
) -> None:
    """NATS_NKEY_SEED (value or file) with NATS_CA, NATS_CERT and NATS_KEY reach a mTLS server."""
    port, certs, seed = tls_server
    seed_file = tmp_path / "edge.nk"
    seed_file.write_text(seed)
    for given in (seed, str(seed_file)):
        settings = load_settings(
            environ={
                "NATS_URL": f"tls://localhost:{port}",
                "NATS_NKEY_SEED": given,
                "NATS_CA": str(certs / "ca.pem"),
                "NATS_CERT": str(certs / "client-cert.pem"),
                "NATS_KEY": str(certs / "client-key.pem"),
            }
        )
        auth = nats_auth(settings, "edge")
        assert seed not in repr(settings) and seed not in str(settings.safe_dict())
        assert seed not in auth.describe() and "over TLS" in auth.describe()
        nc = await connect(settings.effective_nats_url, "edge", auth, allow_reconnect=False)
        try:
            assert nc.is_connected and nc._server_info.get("tls_required")
        finally:
            await nc.close()


async def test_password_in_the_url_works_and_is_masked(tls_server: tuple[int, Path, str]) -> None:
    """A user and password in NATS_URL authenticate; the description never shows them."""
    port, certs, _ = tls_server
    settings = load_settings(
        environ={
            "NATS_URL": f"tls://plain:pw123@localhost:{port}",
            "NATS_CA": str(certs / "ca.pem"),
            "NATS_CERT": str(certs / "client-cert.pem"),
            "NATS_KEY": str(certs / "client-key.pem"),
        }
    )
    auth = nats_auth(settings, "orchestrator")
    assert auth.source == "url" and "pw123" not in repr(settings)
    nc = await connect(settings.effective_nats_url, "orchestrator", auth, allow_reconnect=False)
    assert nc.is_connected
    await nc.close()


def test_creds_file_and_missing_files_are_configuration_errors(tmp_path: Path) -> None:
    """NATS_CREDS becomes nats-py's creds file; a missing file or half a client cert is refused."""
    creds = tmp_path / "user.creds"
    creds.write_text("-----BEGIN NATS USER JWT-----\n...\n")
    auth = nats_auth(load_settings(environ={"NATS_CREDS": str(creds)}), "edge")
    assert auth.options["user_credentials"] == str(creds) and auth.source == "NATS_CREDS"
    with pytest.raises(ConfigError, match="NATS_CREDS"):
        load_settings(environ={"NATS_CREDS": str(tmp_path / "missing.creds")})
    with pytest.raises(ConfigError, match="NATS_CERT and NATS_KEY"):
        nats_auth(load_settings(environ={"NATS_CERT": str(creds)}), "edge")


def test_a_data_dir_credential_is_used_only_without_operator_credentials(tmp_path: Path) -> None:
    """The process's own seed in the data dir applies unless NATS_URL or NATS_* give one."""
    credentials.ensure(tmp_path, ["edge"])
    own = nats_auth(load_settings(environ={"AGENTOPS_DATA_DIR": str(tmp_path)}), "edge")
    assert own.own and own.options["nkeys_seed"].endswith("edge.nk")
    url = {"AGENTOPS_DATA_DIR": str(tmp_path), "NATS_URL": "nats://u:p@127.0.0.1:4222"}
    assert not nats_auth(load_settings(environ=url), "edge").own
    assert (
        nats_auth(load_settings(environ={"AGENTOPS_DATA_DIR": str(tmp_path)}), "x").source == "none"
    )
