"""Settings: environment with BRIDGE_ prefix and __ nesting, TOML file, required values."""

from __future__ import annotations

import pytest

from bridge.config import load_settings
from bridge.domain.errors import ConfigError


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    import os

    for k in list(os.environ):
        if k.startswith("BRIDGE_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)


def test_defaults():
    s = load_settings()
    assert s.dimse.ae_title == "SECONDOPINION"
    assert (s.dimse.host, s.dimse.port) == ("127.0.0.1", 11112)
    assert (s.http.host, s.http.port) == ("127.0.0.1", 8080)
    assert s.study_stable_seconds == 30
    assert str(s.data_dir) == "var"
    assert s.effective_database_url.startswith("sqlite:///")
    with pytest.raises(ConfigError) as err:
        s.require_pipeline()
    assert "BRIDGE_DEID__SECRET" in str(err.value)
    assert "BRIDGE_READING__DICOMWEB_URL" in str(err.value)


def test_environment_nesting(monkeypatch):
    monkeypatch.setenv("BRIDGE_DIMSE__PORT", "11200")
    monkeypatch.setenv("BRIDGE_DIMSE__AE_TITLE", "SO_TEST")
    monkeypatch.setenv("BRIDGE_READING__DICOMWEB_URL", "https://archive.example/dicom-web/")
    monkeypatch.setenv("BRIDGE_DEID__SECRET", "s" * 20)
    monkeypatch.setenv(
        "BRIDGE_DIMSE__ROUTES", '[{"ae_title": "SO_NEURO", "subspecialty": "neuro"}]'
    )
    s = load_settings()
    assert s.dimse.port == 11200 and s.dimse.ae_title == "SO_TEST"
    assert s.reading.dicomweb_url == "https://archive.example/dicom-web"
    assert s.dimse.route_for("SO_NEURO").subspecialty == "neuro"
    s.require_pipeline()
    assert "s" * 20 not in s.model_dump_json()  # secrets masked


def test_toml_file_and_env_precedence(tmp_path, monkeypatch):
    cfg = tmp_path / "bridge.toml"
    cfg.write_text("study_stable_seconds = 5\n[dimse]\nport = 11300\n[http]\nport = 9090\n")
    monkeypatch.setenv("BRIDGE_HTTP__PORT", "9191")
    s = load_settings(cfg)
    assert s.study_stable_seconds == 5 and s.dimse.port == 11300
    assert s.http.port == 9191  # environment wins over the file


def test_invalid_values_are_reported():
    bad = __import__("os").environ
    bad["BRIDGE_DIMSE__AE_TITLE"] = "THIS AE TITLE IS FAR TOO LONG"
    try:
        with pytest.raises(ConfigError) as err:
            load_settings()
        assert "ae_title" in str(err.value)
    finally:
        del bad["BRIDGE_DIMSE__AE_TITLE"]
    with pytest.raises(ConfigError):
        load_settings(__import__("pathlib").Path("/nonexistent.toml"))


def test_example_config_documents_every_setting():
    from pathlib import Path

    from bridge.config import Settings

    example = (Path(__file__).parents[2] / "config" / "bridge.example.toml").read_text()
    missing = []

    def visit(model: object, prefix: str) -> None:
        for name in type(model).model_fields:  # type: ignore[attr-defined]
            sub = getattr(model, name)
            if hasattr(sub, "model_fields"):
                if f"\n[{prefix}{name}]" not in example:
                    missing.append(f"[{prefix}{name}]")
                visit(sub, f"{prefix}{name}.")
            elif f"\n{name} =" not in example and f"\n# {name} =" not in example:
                missing.append(f"{prefix}{name}")

    visit(Settings(), "")
    assert missing == []


def test_dotenv_file_is_read(tmp_path):
    (tmp_path / ".env").write_text(
        "BRIDGE_DIMSE__PORT=11400\nBRIDGE_API_TOKEN=from-dotenv-0123456789\n"
    )
    s = load_settings()
    assert s.dimse.port == 11400
    assert s.api_token.get_secret_value() == "from-dotenv-0123456789"


def test_a_short_api_token_is_refused_with_its_name(monkeypatch):
    """Issue #15, 12: no minimum length for BRIDGE_API_TOKEN before."""
    from pydantic import ValidationError

    from bridge.config import Settings

    with pytest.raises(ValidationError, match="BRIDGE_API_TOKEN must be at least 16"):
        Settings(api_token="short")


def test_dicomweb_session_auth():
    from bridge.config import ReadingSettings
    from bridge.peers.http import dicomweb_session

    bearer = dicomweb_session(ReadingSettings(token="tok-123"))
    assert bearer.headers["Authorization"] == "Bearer tok-123"
    assert bearer.verify is True
    basic = dicomweb_session(ReadingSettings(username="u", password="p", verify_tls="/etc/ca.pem"))
    assert basic.auth == ("u", "p") and "Authorization" not in basic.headers
    assert basic.verify == "/etc/ca.pem"


def test_an_invalid_secret_is_named_but_never_echoed(monkeypatch):
    from bridge.domain.errors import ConfigError

    monkeypatch.setenv("BRIDGE_API_TOKEN", "shortsecret")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "api_token" in str(err.value) and "16 characters" in str(err.value)
    assert "shortsecret" not in str(err.value)


def test_loading_a_config_file_leaves_the_environment_alone(tmp_path):
    import os

    toml = tmp_path / "bridge.toml"
    toml.write_text('[dimse]\nae_title = "FROM_FILE"\n')
    before = dict(os.environ)
    assert load_settings(toml).dimse.ae_title == "FROM_FILE"
    assert dict(os.environ) == before
    # ... and a later load without the file does not read it
    assert load_settings().dimse.ae_title == "SECONDOPINION"
