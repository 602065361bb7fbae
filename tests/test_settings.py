"""`Settings`: one typed, frozen object per invocation, resolved from the flags, then the
environment (LLMOBS_TOKEN, LLMOBS_DB), then the defaults; the files it names loaded, and the bind
and TLS checks run there, once, for the commands that listen."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from llmobs_tui.cli import build_parser, main
from llmobs_tui.config import DEMO_CONFIG
from llmobs_tui.settings import Settings, SettingsError, default_db_path

TOKEN = "0123456789abcdef0123"


@pytest.fixture(autouse=True)
def _clean(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no ./llmobs.toml unless a test writes one
    monkeypatch.delenv("LLMOBS_TOKEN", raising=False)
    monkeypatch.delenv("LLMOBS_DB", raising=False)


def settings(*argv: str, **environ: str) -> Settings:
    return Settings.from_args(build_parser().parse_args(list(argv)), environ=environ)


def test_the_store_path_flag_then_environment_then_default(tmp_path):
    assert settings("serve").db_path == default_db_path()
    assert settings("serve", LLMOBS_DB="~/env.db").db_path == Path("~/env.db").expanduser()
    assert settings("serve", "--db", str(tmp_path / "flag.db"), LLMOBS_DB="env.db").db_path == tmp_path / "flag.db"
    assert settings("--db", "top.db", "report", LLMOBS_DB="env.db").db_path == Path("top.db")
    for command in ("report", "check", "export", "reprice"):
        argv = [command, "0" * 32] if command == "export" else [command]
        assert settings(*argv, LLMOBS_DB="env.db").db_path == Path("env.db"), command
    assert settings(LLMOBS_DB="env.db").db_path == Path("env.db")  # the TUI


def test_the_token_flag_then_environment():
    assert settings("serve").token is None
    assert settings("serve", LLMOBS_TOKEN="").token is None
    assert settings("serve", LLMOBS_TOKEN=TOKEN).token == TOKEN
    assert settings("serve", "--token", "x" * 20, LLMOBS_TOKEN=TOKEN).token == "x" * 20
    assert settings("--token", "y" * 20, "serve", LLMOBS_TOKEN=TOKEN).token == "y" * 20
    assert settings("attach", "h:1", LLMOBS_TOKEN=TOKEN).token == TOKEN
    assert settings("attach", "h:1", "--token", "remote", LLMOBS_TOKEN=TOKEN).token == "remote"


def test_the_demo_keeps_its_own_store_and_takes_free_ports(tmp_path):
    for argv in (("demo",), ("--demo",)):
        s = settings(*argv, LLMOBS_DB="real.db")
        assert s.demo and s.command == "demo"
        assert s.db_path == default_db_path().with_name("demo.db")  # never the real store
        assert (s.grpc_port, s.http_port) == (0, 0)
        assert s.rules.path == DEMO_CONFIG  # the demo's rules, matched to its made-up features
        assert s.config.path is None
    s = settings("demo", "--db", str(tmp_path / "d.db"))
    assert s.db_path == tmp_path / "d.db" and (s.grpc_port, s.http_port) == (4317, 4318)
    assert settings("demo", "--grpc-port", "5000").grpc_port == 5000
    config = tmp_path / "mine.toml"
    config.write_text("")
    s = settings("demo", "--config", str(config))
    assert s.rules.path == config and s.config.path == config
    t = settings()
    assert t.command == "tui" and not t.demo and (t.grpc_port, t.http_port) == (4317, 4318)


def test_attach_keeps_a_cache_store_per_target():
    s = settings("attach", "pod.example:7000", LLMOBS_DB="real.db")
    assert s.db_path == default_db_path().with_name("attach-pod-example-7000.db")
    assert s.window_s == 3600 and s.attach_target == "pod.example:7000"
    assert settings("report").window_s == 86400


def test_bind_and_tls_are_checked_once_for_the_commands_that_listen(tmp_path):
    from tests.test_tls import self_signed

    for argv in (("--host", "0.0.0.0", "serve"), ("serve", "--host", "0.0.0.0", "--token", "short"),
                 ("--host", "0.0.0.0"), ("demo", "--host", "::")):
        with pytest.raises(SettingsError, match="would accept telemetry from other machines"):
            settings(*argv)
    assert settings("serve", "--host", "0.0.0.0", LLMOBS_TOKEN=TOKEN).host == "0.0.0.0"
    assert settings("--host", "0.0.0.0", "report").host == "0.0.0.0"  # report listens on nothing
    with pytest.raises(SettingsError, match="--tls-cert and --tls-key go together"):
        settings("serve", "--tls-cert", "c.pem")
    cert, key = self_signed(tmp_path)
    s = settings("serve", "--tls-cert", str(cert), "--tls-key", str(key))
    assert s.tls is not None and s.tls.cert_path == str(cert)
    assert s.backend_config().tls is s.tls  # the backend gets the loaded pair, not paths to check again


def test_files_are_loaded_only_by_the_commands_that_read_them(tmp_path, capsys):
    Path("llmobs.toml").write_text("[nope]\n")
    for argv in (("serve",), ("report",), ("check",), ()):
        with pytest.raises(SettingsError, match="unknown section"):
            settings(*argv)
    assert settings("prices").prices is not None  # prices, export and init read no config
    assert settings("export", "0" * 32).config.path is None
    assert main(["init", "fresh.toml"]) == 0
    assert main(["check"]) == 3  # check cannot evaluate: its own exit code
    assert "unknown section [nope]" in capsys.readouterr().err
    Path("llmobs.toml").unlink()
    assert settings("report").prices is None and settings("report").config.path is None


def test_the_pipeline_and_backend_settings_come_from_the_flags(tmp_path):
    s = settings("serve", "--db", str(tmp_path / "p.db"), "--no-redact", "--no-content", "--decoders", "2",
                 "--max-attr-size", "2MB", "--retention", "2d", "--max-db-size", "8MB", "--query-port", "0",
                 "--forward", "http://upstream:4318", "--stats-every", "5s")
    pipeline = s.pipeline_config()
    assert (pipeline.db_path, pipeline.redact, pipeline.keep_content, pipeline.decoders) == (
        str(tmp_path / "p.db"), False, False, 2)
    assert (pipeline.max_attr_bytes, pipeline.retention_s, pipeline.max_db_bytes) == (2 * 10**6, 2 * 86400, 8 * 10**6)
    backend = s.backend_config()
    assert (backend.query_port, backend.forward, s.stats_every_s) == (0, "http://upstream:4318", 5.0)


def test_settings_are_frozen():
    s = settings("serve")
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.db_path = Path("elsewhere.db")  # type: ignore[misc]
