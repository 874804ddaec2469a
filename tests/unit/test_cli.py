"""The ``hub`` command line, run in-process through ``main(argv)``."""

from __future__ import annotations

import hashlib
import io
import sys
import types
from pathlib import Path

import pytest

import hub
from hub.cli import main
from hub.config import ConfigError, ServeConfig
from hub.store import Store


@pytest.fixture
def data(tmp_path: Path) -> str:
    return str(tmp_path / "data")


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------- users


def test_user_add_list_remove(capsys: pytest.CaptureFixture[str], data: str) -> None:
    code, out, err = run(
        capsys, "user", "add", "alice", "--password", "s3cret", "--display-name", "Alice L",
        "--data-dir", data,
    )  # fmt: skip
    assert (code, out, err) == (0, "added user alice@hub\n", "")
    assert run(capsys, "user", "add", "bob", "--password", "pw", "--data-dir", data)[0] == 0

    code, out, err = run(capsys, "user", "list", "--data-dir", data)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split() == ["USER", "DISPLAY", "NAME", "CONTACTS", "CREATED"]
    assert lines[1].startswith("alice") and "Alice L" in lines[1]
    assert lines[2].startswith("bob ")
    assert lines[-1] == "2 user(s), realm hub"
    with Store.open(data) as store:
        user = store.get_user("alice")
        assert user is not None
        assert user.ha1_md5 not in out and user.ha1_sha256 not in out and "s3cret" not in out

    code, out, err = run(capsys, "user", "remove", "alice", "--data-dir", data)
    assert (code, out, err) == (0, "removed user alice\n", "")
    code, out, _ = run(capsys, "user", "list", "--data-dir", data)
    assert "alice" not in out and "bob" in out


def test_data_dir_before_or_after_the_subcommand(
    capsys: pytest.CaptureFixture[str], data: str
) -> None:
    assert run(capsys, "--data-dir", data, "user", "add", "alice", "--password", "pw")[0] == 0
    assert "alice" in run(capsys, "user", "list", "--data-dir", data)[1]
    assert "alice" in run(capsys, "--data-dir", data, "user", "list")[1]
    assert "alice" in run(capsys, "user", "--data-dir", data, "list")[1]


def test_default_data_dir_is_dot_data(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert run(capsys, "user", "add", "alice", "--password", "pw")[0] == 0
    assert (tmp_path / "data" / "hub.sqlite3").is_file()


def test_empty_user_list(capsys: pytest.CaptureFixture[str], data: str) -> None:
    assert run(capsys, "user", "list", "--data-dir", data) == (0, "no users (realm hub)\n", "")


def test_password_from_stdin(
    capsys: pytest.CaptureFixture[str], data: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("from stdin\n"))
    assert run(capsys, "user", "add", "alice", "--password", "-", "--data-dir", data)[0] == 0
    with Store.open(data) as store:
        user = store.get_user("alice")
    assert user is not None
    assert user.ha1_md5 == hashlib.md5(b"alice:hub:from stdin").hexdigest()


def test_user_errors(capsys: pytest.CaptureFixture[str], data: str) -> None:
    code, out, err = run(capsys, "user", "add", "bad name", "--password", "pw", "--data-dir", data)
    assert (code, out) == (2, "")
    assert err == (
        "hub: error: invalid user name 'bad name': use 1-64 characters from A-Z a-z 0-9 . _ ~ -\n"
    )
    run(capsys, "user", "add", "alice", "--password", "pw", "--data-dir", data)
    code, out, err = run(capsys, "user", "add", "alice", "--password", "x", "--data-dir", data)
    assert (code, out, err) == (1, "", "hub: error: user 'alice' already exists\n")
    code, out, err = run(capsys, "user", "remove", "carol", "--data-dir", data)
    assert (code, out, err) == (1, "", "hub: error: no user 'carol'\n")


def test_usage_errors_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        [],
        ["user"],
        ["user", "add", "alice"],
        ["trunk", "add", "t"],
        ["trunk", "add", "t", "--host", "h", "--transport", "sctp"],
        ["trunk", "add", "t", "--host", "h", "--port", "0"],
        ["bogus"],
    ):
        code, out, err = run(capsys, *argv)
        assert code == 2, argv
        assert out == ""
        assert err.count("\n") == 1 and "error:" in err, (argv, err)


def test_help_and_version_exit_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "serve" in out and "trunk" in out
    code, out, _ = run(capsys, "trunk", "add", "--help")
    assert code == 0
    assert "stripped by default" in " ".join(out.split())
    assert "--keep-prefix" in out
    code, out, _ = run(capsys, "--version")
    assert code == 0 and out == f"hub {hub.__version__}\n"


# ------------------------------------------------------------------------ trunks


def test_trunk_add_list_remove(capsys: pytest.CaptureFixture[str], data: str) -> None:
    code, out, err = run(
        capsys, "trunk", "add", "pstn", "--host", "sip.example.com", "--prefix", "9",
        "--inbound-from", "192.0.2.1", "--data-dir", data,
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert out == (
        "added trunk pstn: numbers starting 9 (stripped) -> sip.example.com:5060/udp;"
        " accepts calls from 192.0.2.1\n"
    )
    code, out, err = run(
        capsys, "trunk", "add", "pbx", "--host", "2001:db8::1", "--port", "5080",
        "--prefix", "7", "--keep-prefix", "--transport", "tcp",
        "--inbound-from", "[2001:db8::1]:5080", "--data-dir", data,
    )  # fmt: skip
    assert code == 0 and "(kept)" in out
    with Store.open(data) as store:
        pbx = store.get_trunk("pbx")
        assert pbx is not None
        assert (pbx.port, pbx.prefix, pbx.strip_prefix, pbx.transport) == (5080, "7", False, "tcp")
        assert pbx.inbound_from == "[2001:db8::1]:5080"

    code, out, err = run(capsys, "trunk", "list", "--data-dir", data)
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "TRUNK  TARGET                TRANSPORT  PREFIX  PREFIX MODE  INBOUND FROM",
        "pbx    [2001:db8::1]:5080    tcp        7       keep         [2001:db8::1]:5080",
        "pstn   sip.example.com:5060  udp        9       strip        192.0.2.1",
    ]
    assert run(capsys, "trunk", "remove", "pbx", "--data-dir", data) == (
        0,
        "removed trunk pbx\n",
        "",
    )
    assert "pbx" not in run(capsys, "trunk", "list", "--data-dir", data)[1]


def test_trunk_default_route_and_empty_list(capsys: pytest.CaptureFixture[str], data: str) -> None:
    assert run(capsys, "trunk", "list", "--data-dir", data) == (0, "no trunks\n", "")
    code, out, _ = run(capsys, "trunk", "add", "any", "--host", "192.0.2.1", "--data-dir", data)
    assert code == 0 and "any number -> 192.0.2.1:5060/udp" in out
    assert "(any)" in run(capsys, "trunk", "list", "--data-dir", data)[1]


def test_trunk_same_prefix_warns(capsys: pytest.CaptureFixture[str], data: str) -> None:
    run(capsys, "trunk", "add", "b", "--host", "192.0.2.2", "--prefix", "9", "--data-dir", data)
    code, _, err = run(
        capsys, "trunk", "add", "a", "--host", "192.0.2.1", "--prefix", "9", "--data-dir", data
    )
    assert code == 0
    assert err == "hub: warning: prefix 9 is also routed by b; a wins (first by name)\n"


def test_trunk_errors(capsys: pytest.CaptureFixture[str], data: str) -> None:
    code, _, err = run(
        capsys, "trunk", "add", "t", "--host", "h", "--prefix", "9x", "--data-dir", data
    )
    assert (code, err) == (2, "hub: error: invalid prefix '9x': must be 0-16 digits\n")
    code, _, err = run(
        capsys,
        "trunk",
        "add",
        "t",
        "--host",
        "h",
        "--inbound-from",
        "h.example",
        "--data-dir",
        data,
    )
    assert code == 2 and "must be an IP address" in err
    code, _, err = run(capsys, "trunk", "remove", "nope", "--data-dir", data)
    assert (code, err) == (1, "hub: error: no trunk 'nope'\n")


# ------------------------------------------------------------------------- serve


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> list[ServeConfig]:
    """Stand in for hub.server (whatever state the real one is in) and record calls."""
    calls: list[ServeConfig] = []

    def run_server(config: ServeConfig) -> int:
        calls.append(config)
        return 0

    module = types.ModuleType("hub.server")
    module.run = run_server  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hub.server", module)
    monkeypatch.setattr(hub, "server", module, raising=False)
    return calls


def test_serve_defaults(capsys: pytest.CaptureFixture[str], fake_server: list[ServeConfig]) -> None:
    assert run(capsys, "serve") == (0, "", "")
    assert fake_server == [ServeConfig()]
    config = fake_server[0]
    assert (config.data_dir, config.bind) == (Path("data"), "0.0.0.0")
    assert (config.sip_port, config.http_port, config.tls_port) == (5060, 8080, None)
    assert (config.rtp_ports, config.log_level, config.media_address) == (
        (20000, 29999),
        "info",
        None,
    )


def test_serve_all_options(
    capsys: pytest.CaptureFixture[str], fake_server: list[ServeConfig], tmp_path: Path
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_text("x")
    key.write_text("x")
    code, _, err = run(
        capsys, "--data-dir", str(tmp_path / "d"), "serve", "--bind", "127.0.0.1",
        "--sip-port", "5070", "--http-port", "0", "--tls-port", "5071",
        "--tls-cert", str(cert), "--tls-key", str(key), "--media-address", "192.0.2.7",
        "--rtp-ports", "30000-30099", "--log-level", "debug",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert fake_server == [
        ServeConfig(
            data_dir=tmp_path / "d",
            bind="127.0.0.1",
            sip_port=5070,
            http_port=0,
            tls_port=5071,
            tls_cert=cert,
            tls_key=key,
            media_address="192.0.2.7",
            rtp_ports=(30000, 30099),
            log_level="debug",
        )
    ]


def test_serve_tls_port_defaults_when_cert_given(
    capsys: pytest.CaptureFixture[str], fake_server: list[ServeConfig], tmp_path: Path
) -> None:
    (tmp_path / "c").write_text("x")
    code, _, _ = run(
        capsys, "serve", "--tls-cert", str(tmp_path / "c"), "--tls-key", str(tmp_path / "c")
    )
    assert code == 0 and fake_server[0].tls_port == 5061


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--tls-port", "5061"], "TLS needs all of"),
        (["--tls-cert", "/nonexistent/cert.pem", "--tls-key", "/x"], "no such file"),
        (["--rtp-ports", "3000"], "expected LOW-HIGH"),
        (["--rtp-ports", "30000-20000"], "RTP port range"),
        (["--sip-port", "70000"], "out of range"),
        (["--sip-port", "8080"], "must differ"),
        (["--media-address", "media.example"], "not an IP address"),
        (["--log-level", "loud"], "invalid choice"),
    ],
)
def test_serve_bad_options_exit_2(
    capsys: pytest.CaptureFixture[str],
    fake_server: list[ServeConfig],
    argv: list[str],
    message: str,
) -> None:
    code, out, err = run(capsys, "serve", *argv)
    assert (code, out) == (2, "")
    assert message in err and err.count("\n") == 1
    assert fake_server == []


def test_serve_returns_the_server_exit_code(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    module = types.ModuleType("hub.server")
    module.run = lambda config: 3  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "hub.server", module)
    monkeypatch.setattr(hub, "server", module, raising=False)
    assert run(capsys, "serve")[0] == 3


def test_serve_config_validation() -> None:
    with pytest.raises(ConfigError, match="TLS"):
        ServeConfig(tls_cert=Path("c"))
    with pytest.raises(ConfigError, match="empty"):
        ServeConfig(bind="")
    assert ServeConfig(sip_port=0, http_port=0).tls_enabled is False
