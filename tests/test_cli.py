"""timm_gated_ssl.cli: the library's errors as one line and exit status 2; bugs keep a traceback."""

from __future__ import annotations

import pytest
import torch

from timm_gated_ssl import cli
from timm_gated_ssl.cli import error_line, out_of_memory_line, run_main
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


_CPU_OOM = ("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
            "you tried to allocate 30000000000 bytes. Error code 12 (Cannot allocate memory)")


@pytest.mark.parametrize(
    ("error", "expected"),
    [(RuntimeError(_CPU_OOM), "error: out of CPU memory (an allocation of 27.9 GiB failed): lower --batch_size"),
     (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), "error: out of GPU memory: lower"),
     (MemoryError(), "error: out of CPU memory: lower --batch_size")],
)
def test_running_out_of_memory_is_one_line_naming_the_fix(
    error: BaseException, expected: str, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    monkeypatch.delenv("TIMM_GATED_SSL_TRACEBACK", raising=False)
    with pytest.raises(SystemExit) as exit_info:
        run_main(_raise(error))
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1
    assert err.startswith(expected) and "--image_size" in err


def test_other_runtime_errors_keep_their_traceback() -> None:
    assert out_of_memory_line(RuntimeError("mat1 and mat2 shapes cannot be multiplied")) is None
    with pytest.raises(RuntimeError, match="shapes"):
        run_main(_raise(RuntimeError("mat1 and mat2 shapes cannot be multiplied")))


def test_bf16_on_a_cpu_without_bf16_kernels_warns_once_with_the_fix(monkeypatch) -> None:
    monkeypatch.setattr(cli, "cpu_has_fast_bf16", lambda: False)
    warning = cli.slow_bf16_warning("bf16", "cpu")
    assert warning is not None and warning.startswith("warning: ") and "\n" not in warning
    assert warning.endswith("pass --mixed_precision no")
    assert cli.slow_bf16_warning("no", "cpu") is None and cli.slow_bf16_warning(None, "cpu") is None
    assert cli.slow_bf16_warning("bf16", "cuda") is None  # GPUs have their own bf16 units
    monkeypatch.setattr(cli, "cpu_has_fast_bf16", lambda: True)
    assert cli.slow_bf16_warning("bf16", "cpu") is None


def test_cpu_bf16_probe_answers_from_torch() -> None:
    assert cli.cpu_has_fast_bf16() is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def test_traceback_on_request_covers_out_of_memory(monkeypatch) -> None:
    monkeypatch.setenv("TIMM_GATED_SSL_TRACEBACK", "1")
    with pytest.raises(MemoryError):
        run_main(_raise(MemoryError()))


def test_warn_slow_bf16_prints_once_on_the_main_process(monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    from types import SimpleNamespace

    monkeypatch.setattr(cli, "cpu_has_fast_bf16", lambda: False)
    for is_main in (True, False):
        cli.warn_slow_bf16(SimpleNamespace(mixed_precision="bf16", device=torch.device("cpu"), is_main_process=is_main))
    err = capsys.readouterr().err
    assert err.count("warning: bf16 autocast") == 1 and err.endswith("--mixed_precision no\n")
