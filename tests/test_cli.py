"""timm_gated_ssl.cli: the library's errors as one line and exit status 2; bugs keep a traceback."""

from __future__ import annotations

import pytest

from timm_gated_ssl.cli import error_line, run_main
from timm_gated_ssl.errors import ConfigError


def _raise(error: BaseException):
    def main() -> int:
        raise error

    return main


@pytest.mark.parametrize(
    "error",
    [ConfigError("bad\nvalue"), ValueError("v"), FileNotFoundError(2, "No such file", "x.yaml"),
     PermissionError("denied")],
)
def test_handled_errors_are_one_line(error: BaseException, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.delenv("TIMM_GATED_SSL_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        run_main(_raise(error))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err


def test_bugs_keep_their_traceback() -> None:
    with pytest.raises(TypeError):
        run_main(_raise(TypeError("a bug")))


def test_traceback_on_request(monkeypatch) -> None:
    monkeypatch.setenv("TIMM_GATED_SSL_TRACEBACK", "1")
    with pytest.raises(ConfigError):
        run_main(_raise(ConfigError("x")))


def test_error_line() -> None:
    assert error_line(ConfigError("a\n  b")) == "error: a b"
    assert error_line(KeyError("k")) == "error: k"
    assert error_line(RuntimeError()) == "error: RuntimeError"
