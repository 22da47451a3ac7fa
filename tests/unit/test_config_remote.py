"""Settings for a process run elsewhere: NATS URL secrets, JetStream domain, `up --without`."""

from __future__ import annotations

import pytest

from agentops import cli
from agentops.agents.loader import shipped_specs
from agentops.config import load_settings, mask_url
from agentops.processes import select_processes
from agentops.protocol import subjects as s
from agentops.protocol.errors import ConfigError

TYPES = tuple(shipped_specs())


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("nats://gateway:s3cret@hub:4222", "nats://gateway:***@hub:4222"),
        ("tls://tok3n@hub:4222", "tls://***@hub:4222"),
        ("u:s3cret@hub:4222", "u:***@hub:4222"),
        ("nats://a:s3cret@h1:1,nats://a:s3cret@h2:2", "nats://a:***@h1:1,nats://a:***@h2:2"),
        ("nats://hub:4222", "nats://hub:4222"),
    ],
)
def test_mask_url_hides_password_or_token(url: str, masked: str) -> None:
    """The password (or a lone token) in each URL's userinfo is replaced by ***."""
    assert mask_url(url) == masked


def test_nats_password_is_masked_in_repr_safe_dict_and_errors() -> None:
    """A password in NATS_URL never shows in repr(), safe_dict() or a config error."""
    settings = load_settings(environ={"NATS_URL": "nats://gateway:s3cret@127.0.0.1:4222"})
    assert settings.nats_url == "nats://gateway:s3cret@127.0.0.1:4222"  # used as given
    assert "s3cret" not in repr(settings)
    assert settings.safe_dict()["nats_url"] == "nats://gateway:***@127.0.0.1:4222"
    for bad in ("http://gateway:s3cret@hub:4222", "nats://gateway:s3cret@hub:port"):
        with pytest.raises(ConfigError) as info:
            load_settings(environ={"NATS_URL": bad})
        assert "NATS_URL" in info.value.message and "s3cret" not in info.value.message


def test_remote_jetstream_settings_are_read_validated_and_round_trip() -> None:
    """AGENTOPS_JETSTREAM_DOMAIN/DECLARE parse, are unset by default, and reach children."""
    assert (
        load_settings(environ={}).jetstream_domain,
        load_settings(environ={}).jetstream_declare,
    ) == (None, None)
    env = {"AGENTOPS_JETSTREAM_DOMAIN": "hub", "AGENTOPS_JETSTREAM_DECLARE": " False "}
    settings = load_settings(environ=env)
    assert (settings.jetstream_domain, settings.jetstream_declare) == ("hub", False)
    assert load_settings(environ=settings.child_env()) == settings
    with pytest.raises(ConfigError, match="AGENTOPS_JETSTREAM_DECLARE"):
        load_settings(environ={"AGENTOPS_JETSTREAM_DECLARE": "maybe"})
    with pytest.raises(ConfigError, match="AGENTOPS_JETSTREAM_DOMAIN"):
        load_settings(environ={"AGENTOPS_JETSTREAM_DOMAIN": "a.b"})


def test_select_processes_leaves_out_the_named_ones() -> None:
    """`--without llm-gateway` starts every other process, in the usual order."""
    selected = select_processes(TYPES, ["llm-gateway"])
    assert list(selected) == [p for p in s.all_processes(TYPES) if p != "llm-gateway"]
    assert list(select_processes(TYPES)) == list(s.all_processes(TYPES))
    with pytest.raises(ConfigError, match="known processes"):
        select_processes(TYPES, ["gpu"])
    with pytest.raises(ConfigError, match="no process"):
        select_processes(TYPES, s.all_processes(TYPES))


def test_up_without_unknown_process_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """`agentops up --without nope` is a usage error naming the known processes."""
    assert cli.main(["up", "--without", "llm-gateway,nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown process 'nope'") and "llm-gateway" in err


def test_each_process_replies_on_its_own_inbox_prefix() -> None:
    """Inbox prefixes differ per process and sit under _INBOX (what the gateway may read)."""
    assert s.inbox_prefix("llm-gateway") == "_INBOX.agentops-llm-gateway"
    assert len({s.inbox_prefix(p) for p in s.all_processes(TYPES)}) == len(s.all_processes(TYPES))


def test_up_refuses_not_declaring_on_its_own_embedded_server(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Embedded NATS with AGENTOPS_JETSTREAM_DECLARE=false would never get streams: exit 2."""
    monkeypatch.delenv("NATS_URL", raising=False)
    monkeypatch.setenv("AGENTOPS_JETSTREAM_DECLARE", "false")
    assert cli.main(["up"]) == 2
    assert "AGENTOPS_JETSTREAM_DECLARE=false" in capsys.readouterr().err
