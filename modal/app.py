"""szdet on Modal: the project's one image on an A100-80GB, the cache and runs on a Volume.

    modal run modal/app.py --action populate-cache       # S3 -> volume, verified, counts checked (CPU)
    modal run modal/app.py --action build-cache          # raw EDF in S3 -> cache, sharded (CPU)
    modal run modal/app.py --action test-mamba           # CUDA kernels vs the reference, on the A100
    modal run --detach modal/app.py --action train --config configs/modal/train.yaml [--resume true]
    modal run modal/app.py --action evaluate [--run-name <run>] [--checkpoint /results/runs/...]

Image: ``SZDET_IMAGE=<registry tag>`` runs a pushed image (``SZDET_REGISTRY_SECRET`` names a Modal
secret holding REGISTRY_USERNAME/REGISTRY_PASSWORD for a private registry); without it Modal builds
the repo's Dockerfile. The local configs/ folder is shipped into every container, so a config edit
needs no rebuild. Volume ``szdet-results`` at /results, where the config's paths.cache_dir and
paths.runs_dir must lie; build-cache mounts the EDF bucket at its paths.data_root. Secrets ``aws``
(S3) and ``wandb``.

This module imports with only ``modal`` installed: szdet runs inside the containers, as the
``szdet`` command. A cheap CPU preflight loads the config and checks what the action needs before
any GPU is attached; bad input ends in one line and a non-zero exit. The paths are the config's
alone: the containers' szdet commands read them with --config, and the preflight's plan hands this
side the few it needs (where to mount the bucket, which folders to check and print).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import modal

REPO = Path(__file__).resolve().parent.parent
# The restart policy is szdet's own, standard library only: from the checkout here, from the
# installed package in the containers.
sys.path.append(str(REPO / "src"))
from szdet.cloud import restart  # noqa: E402

WORKDIR = "/opt/szdet"  # the image's project folder (Dockerfile WORKDIR); configs/ lives there
RESULTS = "/results"
DEFAULT_CONFIG = "configs/modal/train.yaml"
GPU = "A100-80GB"  # plain "A100" is the 40 GB card
DAY_S = 24 * 3600  # Modal's limit per attempt
TRAIN_MARGIN_S = 45 * 60  # the last checkpoint, a volume commit and the re-spawn fit in this
MAX_SEGMENTS = 20  # 24 h segments of one training run: a runaway chain stops after ~20 days
COMMIT_POLL_S = 30
RESUME_WORDS = ("auto", "true", "false")  # as szdet.state.resume.resolve_resume reads them
Action = Literal["populate-cache", "build-cache", "test-mamba", "train", "evaluate"]


def image_tag(environ: dict[str, str]) -> str | None:
    return environ.get("SZDET_IMAGE") or None


def source_commit() -> str:
    """The checkout's commit, for the image's revision label ("unknown" outside git)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def build_image() -> modal.Image:
    tag = image_tag(dict(os.environ))
    if tag:
        secret_name = os.environ.get("SZDET_REGISTRY_SECRET")
        secret = modal.Secret.from_name(secret_name) if secret_name else None
        image = modal.Image.from_registry(tag, secret=secret)
    else:
        image = modal.Image.from_dockerfile(
            REPO / "Dockerfile", context_dir=REPO, build_args={"COMMIT": source_commit()}
        )
    # Modal starts its own process in the container: the image's entrypoint is for `docker run`.
    return image.entrypoint([]).add_local_dir(REPO / "configs", f"{WORKDIR}/configs")


app = modal.App("szdet")
image = build_image()
results = modal.Volume.from_name("szdet-results", create_if_missing=True)
aws = modal.Secret.from_name("aws", required_keys=["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
wandb = modal.Secret.from_name("wandb", required_keys=["WANDB_API_KEY"])
VOLUMES: dict[str | os.PathLike, modal.Volume | modal.CloudBucketMount] = {RESULTS: results}


# --- inside the containers ---------------------------------------------------------------------


def run_szdet(args: list[str], on_tick: Callable[[], None] | None = None) -> tuple[int, str]:
    """Run ``szdet ARGS`` in the project folder, its stderr echoed live; returns the exit code and
    the last stderr line (szdet's one-line error, when it fails). ``on_tick`` runs every
    COMMIT_POLL_S seconds while it works (training commits new checkpoints there); SIGTERM
    (preemption) is passed on, so training can checkpoint before the container goes. Other
    volume writes are committed when the command ends, and by Modal in the background."""
    proc = subprocess.Popen(["szdet", *args], cwd=WORKDIR, stderr=subprocess.PIPE, text=True)
    last_line = [""]

    def echo() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            sys.stderr.write(line)
            if line.strip():
                last_line[0] = line.strip()

    reader = threading.Thread(target=echo, daemon=True)
    reader.start()
    with contextlib.suppress(ValueError):  # off the main thread the platform's handling applies
        for signum in (signal.SIGTERM, signal.SIGINT):  # either may announce a preemption
            signal.signal(signum, lambda received, frame: proc.send_signal(received))
    while True:
        try:
            code = proc.wait(timeout=COMMIT_POLL_S)
            break
        except subprocess.TimeoutExpired:
            if on_tick:
                on_tick()
    reader.join(timeout=10)
    return code, last_line[0]


def outcome(step: str, code: int, last_line: str, **extra: Any) -> dict[str, Any]:
    return {
        "exit": code,
        "error": f"{step}: {last_line or f'exit code {code}'}" if code else None,
        **extra,
    }


@app.function(image=image, volumes=VOLUMES, cpu=2, memory=4096, timeout=600)
def preflight(
    action: str, config: str, resume: str, checkpoint: str, split: str, overrides: list[str]
) -> dict[str, Any]:
    """szdet.cloud.plan in the image, beside the config and the volume: checked before any GPU."""
    os.chdir(WORKDIR)
    from szdet.cloud.plan import plan_action
    from szdet.errors import UserError

    try:
        return plan_action(action, config, resume, checkpoint, split, overrides)
    except UserError as e:
        return {"error": str(e)}


@app.function(
    image=image, volumes=VOLUMES, secrets=[aws], cpu=8, memory=16 * 1024, timeout=6 * 3600
)
def populate_cache(plan: dict[str, Any]) -> dict[str, Any]:
    """S3 -> volume through `szdet cache pull` (resumable: a re-run skips complete files), then
    `szdet cache verify` with the expected recording counts; the volume is committed either way."""
    pull = [
        "cache",
        "pull",
        plan["cache_url"],
        plan["cache_dir"],
        "--workers",
        str(plan["workers"]),
    ]
    if plan["endpoint_url"]:
        pull += ["--endpoint-url", plan["endpoint_url"]]
    code, last = run_szdet(pull)
    results.commit()
    if code:
        return outcome("cache pull", code, last)
    return verify(plan)


def verify(plan: dict[str, Any]) -> dict[str, Any]:
    args = ["cache", "verify", plan["cache_dir"]] + (
        ["--expect", plan["expect"]] if plan["expect"] else []
    )
    return outcome("cache verify", *run_szdet(args))


@app.function(image=image, volumes=VOLUMES, secrets=[aws], cpu=8, memory=32 * 1024, timeout=6 * 3600,
              retries=modal.Retries(max_retries=2, initial_delay=30.0))  # fmt: skip
def build_shard(
    config: str, split: str, shard: int, shards: int, overrides: list[str]
) -> dict[str, Any]:
    """One shard of `szdet cache build` from the EDF bucket, which main() mounts read-only at the
    config's paths.data_root; it writes the config's paths.cache_dir."""
    args = ["cache", "build", "--config", config, "--split", split,
            "--shard", f"{shard}/{shards}", "--workers", "8"]  # fmt: skip
    args += [arg for override in overrides for arg in ("--set", override)]
    code, last = run_szdet(args)
    results.commit()
    return outcome(f"cache build {split} shard {shard}/{shards}", code, last)


@app.function(image=image, volumes=VOLUMES, cpu=8, memory=16 * 1024, timeout=4 * 3600)
def merge_and_verify(plan: dict[str, Any]) -> dict[str, Any]:
    results.reload()  # the shards' commits
    for split in plan["splits"]:
        code, last = run_szdet(["cache", "merge", plan["cache_dir"], "--split", split])
        if code:
            return outcome(f"cache merge {split}", code, last)
    checked = verify(plan)
    results.commit()
    return checked


@app.function(image=image, gpu=GPU, timeout=1800)
def test_mamba() -> dict[str, Any]:
    return outcome("check-kernels", *run_szdet(["check-kernels", "--require-cuda-kernels"]))


def resume_for_this_attempt(resume: str) -> str:
    """A retry of this call (crash, preemption) continues from its own checkpoints, whatever the
    first attempt was asked: a marker in the volume tells the attempts apart."""
    marker = Path(RESULTS, ".modal-calls", str(modal.current_function_call_id()))
    if marker.exists():
        return "auto"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    results.commit()
    return resume


def checkpoint_watcher(checkpoints: Path) -> Callable[[], None]:
    """A tick that commits the volume whenever a checkpoint appeared or changed."""
    seen: list[set[tuple[str, int]]] = [set()]

    def tick() -> None:
        now = (
            {(p.name, p.stat().st_mtime_ns) for p in checkpoints.glob("*.pt")}
            if checkpoints.is_dir()
            else set()
        )
        if now != seen[0]:
            results.commit()
            seen[0] = now

    return tick


@app.function(image=image, gpu=GPU, cpu=24, memory=96 * 1024, timeout=DAY_S, volumes=VOLUMES,
              secrets=[wandb, aws],
              retries=modal.Retries(max_retries=restart.MAX_CRASH_RESTARTS, initial_delay=60.0,
                                    backoff_coefficient=2.0))  # fmt: skip
def train(
    config: str, resume: str, run_dir: str, overrides: list[str], segment: int = 0
) -> dict[str, Any]:
    """`szdet train` for at most one 24 h segment: it stops itself with a checkpoint before the
    limit (exit 75), and this function then spawns the next segment with --resume true."""
    resume = resume_for_this_attempt(resume)
    args = ["train", "--config", config, "--resume", resume,
            "--set", f"train.time_limit_s={DAY_S - TRAIN_MARGIN_S}"]  # fmt: skip
    args += [arg for override in overrides for arg in ("--set", override)]
    code, last = run_szdet(args, on_tick=checkpoint_watcher(Path(run_dir) / "checkpoints"))
    results.commit()
    if restart.outcome(code) == "resume" and segment + 1 < MAX_SEGMENTS:
        following = train.spawn(config, "true", run_dir, overrides, segment + 1)
        return {"exit": code, "error": None, "segment": segment, "next": following.object_id}
    if restart.outcome(code) == "crash":
        raise RuntimeError(f"szdet train crashed (exit {code}): {last}")  # Modal retries, resuming
    return outcome("train", code, last, segment=segment, next=None)


@app.function(image=image, gpu=GPU, cpu=8, memory=64 * 1024, timeout=4 * 3600, volumes=VOLUMES)
def evaluate(config: str, split: str, checkpoint: str, overrides: list[str]) -> dict[str, Any]:
    """`szdet evaluate --config`: the run's best.pt (or ``checkpoint``) on the config's cache,
    into the run's eval-<split>/."""
    args = ["evaluate", "--config", config, "--split", split]
    args += ["--checkpoint", checkpoint] if checkpoint else []
    args += [arg for override in overrides for arg in ("--set", override)]
    code, last = run_szdet(args)
    results.commit()
    return outcome("evaluate", code, last)


# --- on the user's machine ---------------------------------------------------------------------


def container_config(config: str, cwd: Path | None = None) -> str:
    """The config's path inside the containers (configs/ is shipped there), or SystemExit."""
    path = Path(config)
    candidates = [path] if path.is_absolute() else [(cwd or Path.cwd()) / path, REPO / path]
    found = next((p.resolve() for p in candidates if p.is_file()), None)
    if found is None:
        raise SystemExit(f"error: {config}: config file not found")
    if not found.is_relative_to(REPO / "configs"):
        raise SystemExit(
            f"error: {config}: configs must live under {REPO / 'configs'} (shipped from there)"
        )
    return found.relative_to(REPO).as_posix()


def check_resume(resume: str) -> str:
    if resume in RESUME_WORDS or resume.startswith(f"{RESULTS}/"):
        return resume
    raise SystemExit(
        f"error: --resume {resume!r}: expected auto, true, false or a checkpoint under {RESULTS}/"
    )


def check_on_volume(config: str, plan: dict[str, Any]) -> None:
    """What the containers write must lie on the volume: anywhere else it goes with them."""
    for key, field in (("cache_dir", "paths.cache_dir"), ("run_dir", "paths.runs_dir")):
        if not Path(plan[key]).is_relative_to(RESULTS):
            raise SystemExit(
                f"error: {config}: {field} puts {plan[key]} off the volume mounted at {RESULTS}"
            )


def finish(result: dict[str, Any]) -> None:
    if result.get("error"):
        raise SystemExit(f"error: {result['error']}")


def follow_training(call: modal.FunctionCall) -> dict[str, Any]:
    """Wait for a training run through all its 24 h segments."""
    result = call.get()
    while result.get("next"):
        print(
            f"train: segment {result['segment']} reached the 24 h limit; continuing as {result['next']}"
        )
        result = modal.FunctionCall.from_id(result["next"]).get()
    return result


def run_name_overrides(action: str, config: str, run_name: str, resume: str) -> list[str]:
    """``--run-name`` as a config override. Training a smoke config with --resume auto gets a
    fresh timestamped name, so repeating the smoke test trains again instead of finding its last
    run finished (as SkyPilot's smoke task does with its task id)."""
    fresh_smoke = action == "train" and Path(config).stem == "smoke" and resume == "auto"
    if not run_name and fresh_smoke:
        run_name = time.strftime("smoke-%Y%m%d-%H%M%S", time.gmtime())
    return [f"paths.run_name={run_name}"] if run_name else []


@app.local_entrypoint()
def main(action: Action, config: str = DEFAULT_CONFIG, resume: str = "auto", checkpoint: str = "",
         split: str = "dev", run_name: str = "") -> None:  # fmt: skip
    if action == "test-mamba":
        finish(test_mamba.remote())
        return
    config = container_config(config)
    resume = check_resume(resume)
    overrides = run_name_overrides(action, config, run_name, resume)
    plan = preflight.remote(action, config, resume, checkpoint, split, overrides)
    finish(plan)
    check_on_volume(config, plan)
    if action == "populate-cache":
        finish(populate_cache.remote(plan))
    elif action == "build-cache":
        bucket = modal.CloudBucketMount(plan["bucket"], key_prefix=plan["key_prefix"], secret=aws,
                                        read_only=True, bucket_endpoint_url=plan["endpoint_url"])  # fmt: skip
        shard_fn = build_shard.with_options(volumes={RESULTS: results, plan["data_root"]: bucket})
        jobs = [
            (config, s, i, plan["shards"], overrides)
            for s in plan["splits"]
            for i in range(plan["shards"])
        ]
        for result in shard_fn.starmap(jobs):
            finish(result)
        finish(merge_and_verify.remote(plan))
    elif action == "train":
        call = train.spawn(config, resume, plan["run_dir"], overrides)
        print(f"train: {config} -> {plan['run_dir']} (volume szdet-results), call {call.object_id}")
        finish(follow_training(call))
    elif action == "evaluate":
        finish(evaluate.remote(config, split, checkpoint, overrides))
        print(f"evaluate: metrics and plots in {plan['out']} (volume szdet-results)")
