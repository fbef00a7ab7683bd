"""Settings and key files a first start may meet: each bad one refused when it is read
(naming the setting or the file), never used as it is or left to fail later."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from roost.config import Settings, default_data_dir, parse_listen
from roost.keyfiles import KeyConfigError, load_keys


def _keyed(data: Path) -> Settings:
    """Settings whose every key comes from the files of ``data``."""
    return Settings(data_dir=data, secret_key=None, message_keys=None, secrets_key=None,
                    admin_token=None)


@pytest.mark.parametrize("content", ["", "x", "rst_admin_short"])
def test_an_empty_or_truncated_admin_token_file_is_refused(tmp_path: Path, content: str) -> None:
    """The operator token has admin rights: a truncated file was used as it was."""
    data = tmp_path / "data"
    load_keys(_keyed(data))
    token_file = data / "keys" / "admin_token"
    token_file.write_text(content)
    with pytest.raises(KeyConfigError, match=f"{token_file} is too short: at least 32"):
        load_keys(_keyed(data))


def test_a_short_admin_token_variable_is_refused(tmp_path: Path) -> None:
    settings = _keyed(tmp_path / "data").model_copy(update={"admin_token": SecretStr("x" * 31)})
    with pytest.raises(KeyConfigError, match="ROOST_ADMIN_TOKEN is too short"):
        load_keys(settings)
    load_keys(settings.model_copy(update={"admin_token": SecretStr("x" * 32)}))


def test_a_key_file_that_is_not_text_is_refused_naming_it(tmp_path: Path) -> None:
    """Never a new key written over it: what the old one encrypted would be lost."""
    data = tmp_path / "data"
    load_keys(_keyed(data))
    key_file = data / "keys" / "message_keys"
    key_file.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(KeyConfigError, match=f"{key_file} is not a key"):
        load_keys(_keyed(data))
    assert key_file.read_bytes() == b"\xff\xfe\x00garbage"


def test_empty_path_settings_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """ROOST_DATA_DIR= was Path("."): the directory a command was started from."""
    monkeypatch.setenv("ROOST_DATA_DIR", "")
    monkeypatch.setenv("ROOST_TOOLS_WORKSPACE_DIR", " ")
    settings = Settings()
    assert settings.data_dir == default_data_dir()
    assert settings.tools_workspace_dir is None


def test_a_home_directory_that_cannot_be_found_is_a_validation_error() -> None:
    for field in ("data_dir", "tools_workspace_dir"):
        with pytest.raises(ValidationError, match=f"{field}\n.*cannot expand ~"):
            Settings.model_validate({field: "~nosuchuser_x/roost"})


@pytest.mark.parametrize("listen", ["127.0.0.1:99999", "127.0.0.1:0", "[::1]:65536"])
def test_an_smtp_listen_port_out_of_range_is_refused(listen: str) -> None:
    """99999 listened on 99999 % 65536 = 34463."""
    with pytest.raises(ValidationError, match=r"smtp_listen\n.*the port must be 1-65535"):
        Settings(smtp_listen=listen)
    with pytest.raises(ValueError, match="ROOST_SMTP_LISTEN: port 99999"):
        parse_listen("127.0.0.1:99999")
    assert Settings(smtp_listen="[::1]:65535").smtp_listen == "[::1]:65535"


@pytest.mark.parametrize("listen", ["...:2525", "a..b:2525", f"{'a' * 64}.example:2525",
                                    "127.0.0.1:\uff12\uff15\uff12\uff15",
                                    "127.0.0.1:\u0662\u0665\u0662\u0665"],
                         ids=["dots", "empty-label", "long-label", "fullwidth-port",
                              "arabic-indic-port"])
def test_an_smtp_listen_address_no_listener_can_use_is_refused(listen: str) -> None:
    """ROOST_SMTP_LISTEN's host is checked as ROOST_HOST is ("...", an empty label or one
    of 64 letters made `roost serve` end in a name lookup's traceback) and its port is
    ASCII digits (one in fullwidth digits was quietly listened on as 2525)."""
    with pytest.raises(ValidationError, match="smtp_listen"):
        Settings(smtp_listen=listen)
    assert Settings(smtp_listen="mail.example.org:2525").smtp_listen == "mail.example.org:2525"


@pytest.mark.parametrize("url", ["smtp://[bad", "http://relay.example.org", "smtp://h:99999",
                                 "smtp://u:s3cretpw@"])
def test_a_malformed_smtp_relay_url_is_a_validation_error(url: str) -> None:
    """Refused with the settings (`invalid configuration` at start), the value unsaid: it
    stopped `roost serve` only inside the app's start-up."""
    with pytest.raises(ValidationError, match=r"smtp_relay_url\n.*the SMTP relay URL must") as e:
        Settings(smtp_relay_url=url)
    assert "s3cretpw" not in str(e.value) and url not in str(e.value)
    relay = Settings(smtp_relay_url="smtps://u:p@relay.example.org").smtp_relay_url
    assert relay is not None and relay.get_secret_value() == "smtps://u:p@relay.example.org"
    assert Settings(smtp_relay_url="").smtp_relay_url is not None  # empty: sending is off


def test_an_empty_or_bracketed_host_is_the_address() -> None:
    """ROOST_HOST= is the default, as ROOST_DATA_DIR= is; [::1] is written as
    ROOST_SMTP_LISTEN writes an IPv6 address."""
    assert Settings(host="").host == Settings(host="  ").host == "127.0.0.1"
    assert Settings(host="[::1]").host == "::1"
    assert Settings(host="0.0.0.0").host == "0.0.0.0"  # noqa: S104


@pytest.mark.parametrize("host", ["127.0.0.1\u200b", "\uff11\uff12\uff17.0.0.1",
                                  "\uff4c\uff4f\uff43\uff41\uff4c\uff48\uff4f\uff53\uff54",
                                  "local host", "-lead.example"])
def test_a_bind_host_that_is_no_address_or_plain_name_is_refused(host: str) -> None:
    """ROOST_HOST with a zero-width space, in fullwidth forms, or no host name at all: a
    validation error (exit 2 at start).  The name lookup bound 127.0.0.1 quietly while
    `roost serve` announced the URL as given, one no client can use."""
    with pytest.raises(ValidationError, match="not an IP address or a host name"):
        Settings(host=host)
    assert Settings(host="localhost").host == "localhost"
    assert Settings(host="fe80::1%eth0").host == "fe80::1%eth0"


def test_an_unknown_llm_fallback_kind_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match=r"unknown kinds \['bogus'\]; use any of"):
        Settings(llm_fallback_on="timeout, bogus")
    assert Settings(llm_fallback_on="").llm_fallback_on == ""
