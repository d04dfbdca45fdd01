"""`szdet check-kernels` on a CPU (the prepared GPU script's dry run: tests/device/)."""

from szdet.cli import main
from szdet.kernel_proof import check

# Timings are not under test, parity is: 3-s windows time 48 steps, not 960.
SHORT_WINDOWS = ["--set", "windows.length_s=3"]


def test_cpu_check_names_the_pure_path_and_passes(capsys):
    assert main(["check-kernels", *SHORT_WINDOWS]) == 0
    out = capsys.readouterr().out
    assert "pure PyTorch chunked SSD (device is cpu)" in out
    assert out.count("-> OK") == 2  # node and edge sizes
    assert "(19 x 48 steps)" in out  # timed at the configured window's length
    assert "all checks passed" in out


def test_require_cuda_kernels_fails_without_them(capsys):
    assert main(["check-kernels", "--require-cuda-kernels", *SHORT_WINDOWS]) == 1
    assert "--require-cuda-kernels" in capsys.readouterr().out


def test_a_difference_beyond_tolerance_fails(monkeypatch, capsys):
    monkeypatch.setattr(check, "PURE_VS_NAIVE_TOL", 0.0)  # float32 rounding now exceeds it
    assert main(["check-kernels", *SHORT_WINDOWS]) == 1
    assert "FAIL" in capsys.readouterr().out
