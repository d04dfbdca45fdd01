"""The one typed config: every setting of a run lives here, loaded from YAML.

A YAML file may start with ``extends: other.yaml`` (relative to itself) and override any field of
the file it extends; ``--set section.field=value`` overrides come last. Unknown fields and keys
repeated in a file (szdet/config_yaml.py) are refused, and every error names the file the value
came from, the field, the bad value and what is allowed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

# The model's input montages (data.montage); their conversions live in szdet/data/montage.py.
Montage = Literal["referential", "average", "bipolar"]
MONTAGES: tuple[Montage, ...] = get_args(Montage)

# The model's 19 referential inputs, in this order (old 10-20 names: T3 T4 T5 T6).
CHANNELS_19 = (
    "FP1", "F3", "C3", "P3", "F7", "T3", "T5", "O1", "FZ", "CZ",
    "PZ", "FP2", "F4", "C4", "P4", "F8", "T4", "T6", "O2",
)  # fmt: skip

# The double banana in the order of epilepsy2bids' Eeg.BIPOLAR_DBANANA, the tooling that writes
# SzCORE's BIDS releases: left parasagittal and temporal chains, midline, right ones.
DOUBLE_BANANA = (
    "FP1-F3", "F3-C3", "C3-P3", "P3-O1", "FP1-F7", "F7-T3", "T3-T5", "T5-O1", "FZ-CZ",
    "CZ-PZ", "FP2-F4", "F4-C4", "C4-P4", "P4-O2", "FP2-F8", "F8-T4", "T4-T6", "T6-O2",
)  # fmt: skip


def montage_channels(montage: Montage) -> tuple[str, ...]:
    """The montage's channels, in the order of the model's inputs."""
    return DOUBLE_BANANA if montage == "bipolar" else CHANNELS_19


# Bump when szdet/data/edf.py or preprocess.py changes what it computes from the same settings (filter orders,
# robust statistics, interpolation positions...): caches built before then are refused, not mixed.
# 2: dead, near-flat and lone-spike electrodes are interpolated (or refused), never z-scored
# into noise. 3: each channel's raw mean taken out before resampling, the filter run in float64,
# robust statistics from a subsample capped per channel: the same signal whole or in chunks.
PREPROCESS_ALGORITHM = 3


# Markers on fields (a whole section when set in its model_config), read by `marked_fields`:
# RESUMABLE: a resumed run may change it (state/resume.py): where things are, how the run is
# watched, how fast the machine is; nothing that changes which steps it takes or what they compute.
RESUMABLE: dict[str, Any] = {"resumable": True}
# EXECUTION: how the same weights are computed, not what they compute: left out of the model's
# fingerprint, so a checkpoint moves freely between them (mamba_ssm kernels on a GPU, the pure
# path on a laptop). A resume may change it too.
EXECUTION: dict[str, Any] = {"resumable": True, "execution": True}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def marked_fields(marker: str, section: type[Section], prefix: str = "") -> tuple[str, ...]:
    """Dotted names of the fields of ``section`` (recursively) that carry ``marker``."""
    marks = section.model_config.get("json_schema_extra")
    if isinstance(marks, dict) and marks.get(marker):
        return tuple(f"{prefix}{name}" for name in section.model_fields)
    found: list[str] = []
    for name, field in section.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, Section):
            found += marked_fields(marker, field.annotation, f"{prefix}{name}.")
        elif isinstance(field.json_schema_extra, dict) and field.json_schema_extra.get(marker):
            found.append(f"{prefix}{name}")
    return tuple(found)


class PathsConfig(Section):
    """One layout on every platform (laptop paths come from configs/local)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, json_schema_extra=RESUMABLE)

    data_root: Path = Path("/data/tusz")  # holds edf/{train,dev,eval}/...
    cache_dir: Path = Path("/results/cache/tusz")  # holds {split}/manifest.json and arrays
    runs_dir: Path = Path("/results/runs")  # a run writes runs_dir/run_name/
    run_name: str = "szdet"


class DataConfig(Section):
    train_split: str = "train"
    dev_split: str = "dev"
    max_recordings: int | None = Field(None, ge=1)  # per split; None = all (smoke: 50)
    # The model's inputs (szdet/data/montage.py): 19 electrodes against the file's reference,
    # against their common average, or the 18 double-banana derivations.
    montage: Montage = "referential"
    # Recording counts a complete cache must hold, checked by populate-cache and `cache verify`.
    expected_recordings: dict[str, int] = Field(default_factory=dict, json_schema_extra=RESUMABLE)


class PreprocessConfig(Section):
    """Settings that decide the cache's contents; their hash is stored in every manifest."""

    sample_rate_hz: float = Field(256.0, gt=0)
    bandpass_low_hz: float = Field(0.5, ge=0)
    bandpass_high_hz: float = Field(120.0, gt=0)
    notch_hz: float | None = Field(60.0, gt=0)  # 50 in Europe; None disables the notch
    clip: float = Field(10.0, gt=0)  # after the robust z-score
    # Channels allowed to be missing and interpolated (spherical splines); any other missing -> skip.
    interpolate_channels: list[str] = Field(default_factory=lambda: ["FZ", "PZ"])

    @model_validator(mode="after")
    def _band_fits(self) -> PreprocessConfig:
        if self.bandpass_high_hz >= self.sample_rate_hz / 2:
            raise ValueError(
                f"bandpass_high_hz {self.bandpass_high_hz} must be below Nyquist "
                f"({self.sample_rate_hz / 2} Hz)"
            )
        if self.bandpass_low_hz >= self.bandpass_high_hz:
            raise ValueError("bandpass_low_hz must be below bandpass_high_hz")
        return self

    def fingerprint(self, montage: Montage) -> str:
        """Short hash of these settings, the algorithm's version and ``montage`` (data.montage):
        recordings cached with another hash are not mixed in."""
        settings = {**self.model_dump(mode="json"), "algorithm": PREPROCESS_ALGORITHM}
        if montage != "referential":  # referential hashes as before montages: its caches stay
            settings["montage"] = montage
        return config_hash(settings)


class WindowsConfig(Section):
    length_s: float = Field(60.0, gt=0)
    train_stride_s: float = Field(10.0, gt=0)
    eval_stride_s: float = Field(30.0, gt=0)  # overlapping windows, averaged when stitched
    # Balanced draw per epoch: all partial-seizure windows, and these multiples of
    # their count of all-seizure and background windows.
    full_seizure_ratio: float = Field(0.3, ge=0)
    background_ratio: float = Field(2.5, ge=0)


class ModelConfig(Section):
    """V3 sizes; configs/local shrinks the widths, never the structure."""

    # auto: mamba_ssm on CUDA when it imports; cuda: the same, but a GPU without the kernels is an
    # error rather than the ~30x slower pure path; pure: the pure path everywhere
    kernels: Literal["auto", "pure", "cuda"] = Field("auto", json_schema_extra=EXECUTION)
    in_channels: int = Field(19, ge=1)
    tcn_channels: list[int] = Field(default_factory=lambda: [64, 64, 128, 128, 256, 256, 512, 512])
    tcn_kernel_size: int = Field(7, ge=1)
    # Halve the TCN's rate after every this many layers (0: every layer at the full rate). The
    # dilations shrink with the rate, so the receptive field in seconds stays; the final strided
    # downsample takes what is left of `downsample` (models/tcn.py).
    tcn_pool_every: int = Field(0, ge=0)
    # Channels-last convolutions and a compiled GroupNorm + GELU + residual that keeps bf16
    # activations between blocks (models/tcn.py): the same weights and function, computed faster.
    tcn_fused: bool = Field(False, json_schema_extra=EXECUTION)
    downsample: int = Field(16, ge=1)
    node_dim: int = Field(64, ge=1)
    node_layers: int = Field(6, ge=1)
    node_d_state: int = Field(16, ge=1)
    node_headdim: int = Field(8, ge=1)
    edge_dim: int = Field(16, ge=1)
    edge_layers: int = Field(2, ge=1)
    edge_d_state: int = Field(8, ge=1)
    edge_headdim: int = Field(4, ge=1)
    d_conv: int = Field(4, ge=1)
    expand: int = Field(2, ge=1)
    chunk_size: int = Field(
        64, ge=16, json_schema_extra=EXECUTION
    )  # mamba_ssm kernels' SSD chunk (tested there: 64, 128)
    pure_chunk_size: int = Field(
        16, ge=1, le=16, json_schema_extra=EXECUTION
    )  # the pure-PyTorch scan's chunk (mamba2.py)
    # Pure path only: recompute each Mamba-2's activations in backward instead of storing them
    # (about 9 KB per token and mixer otherwise: ~260 GB for a batch of 64 windows).
    recompute_pure_mamba: bool = Field(True, json_schema_extra=EXECUTION)
    edge_init_gain: float = Field(0.1, gt=0)
    edge_clamp: float = Field(3.0, gt=0)
    top_k: int = Field(3, ge=1)
    gnn_layers: int = Field(2, ge=1)
    gnn_alpha: float = Field(0.05, ge=0, le=1)
    gnn_hops: int = Field(2, ge=1)  # SSGConv's K
    pe_dim: int = Field(16, ge=1)
    pe_grad: bool = False  # False: stop gradients through eigh (stable, cheaper)
    # The Laplacian PE of every k-th step, held over the k steps (1: every step, the reference).
    pe_every_steps: int = Field(1, ge=1)
    # eigh: torch.linalg.eigh (LAPACK on a CPU, cuSOLVER on a GPU, one host sync per call);
    # jacobi: a batched Jacobi in plain tensor ops (models/eigen.py): no solver heuristics, no
    # host sync, exportable to ONNX.
    eigensolver: Literal["eigh", "jacobi"] = Field("eigh", json_schema_extra=EXECUTION)
    dropout: float = Field(0.1, ge=0, lt=1)

    @model_validator(mode="after")
    def _sizes_fit(self) -> ModelConfig:
        for stream, dim, headdim in (
            ("node", self.node_dim, self.node_headdim),
            ("edge", self.edge_dim, self.edge_headdim),
        ):
            if (self.expand * dim) % headdim:
                raise ValueError(
                    f"expand * {stream}_dim ({self.expand * dim}) must be a multiple of "
                    f"{stream}_headdim ({headdim})"
                )
        if not self.tcn_channels or self.tcn_kernel_size % 2 == 0:
            raise ValueError("tcn_channels must be non-empty and tcn_kernel_size odd")
        if self.downsample % self.tcn_pooling:
            raise ValueError(
                f"tcn_pool_every {self.tcn_pool_every} pools the TCN {self.tcn_pooling}-fold over "
                f"{len(self.tcn_channels)} layers, which must divide downsample ({self.downsample})"
            )
        for name, value in (("pe_dim", self.pe_dim), ("top_k", self.top_k)):
            if value > self.in_channels - 1:
                raise ValueError(f"{name} ({value}) must be at most in_channels - 1")
        return self

    @property
    def tcn_pooling(self) -> int:
        """How many input samples one step of the TCN's last layer spans (1: full rate)."""
        if self.tcn_pool_every == 0:
            return 1
        return 2 ** ((len(self.tcn_channels) - 1) // self.tcn_pool_every)


class TrainConfig(Section):
    epochs: int = Field(100, ge=1)
    batch_size: int = Field(64, ge=1)  # per process
    max_steps_per_epoch: int | None = Field(None, ge=1)
    lr: float = Field(1e-3, gt=0)
    min_lr_ratio: float = Field(0.01, ge=0, le=1)
    warmup_steps: int = Field(500, ge=0)
    weight_decay: float = Field(0.05, ge=0)
    grad_clip_norm: float = Field(1.0, gt=0)
    focal_alpha: float = Field(0.5, ge=0, le=1)
    focal_gamma: float = Field(2.0, ge=0)
    # Weight of the auxiliary focal loss on each node's own seizure logit, against the per-channel
    # labels where a recording has them (data/windows.py ``NodeRows``): it teaches the nodes
    # where a seizure is, which the detection loss alone does not (evaluate/localise.py).
    node_loss_weight: float = Field(0.5, ge=0)
    precision: Literal["bf16", "fp32"] = "bf16"  # bf16 autocast applies on CUDA only
    device: Literal["auto", "cpu", "cuda"] = Field("auto", json_schema_extra=RESUMABLE)
    num_workers: int = Field(4, ge=0, json_schema_extra=RESUMABLE)
    seed: int = 0
    checkpoint_every_min: float = Field(30.0, gt=0, json_schema_extra=RESUMABLE)
    checkpoint_every_steps: int | None = Field(
        None, ge=1, json_schema_extra=RESUMABLE
    )  # also every N steps (None: time only)
    keep_last: int = Field(3, ge=1, json_schema_extra=RESUMABLE)
    early_stop_patience: int = Field(10, ge=1)  # epochs without better sens at the first FA target
    collapse_auroc_floor: float = Field(0.55, ge=0, le=1)
    collapse_after_epochs: int = Field(3, ge=1)
    max_nonfinite_in_row: int = Field(20, ge=1)
    gpu_memory_warn_gb: float = Field(70.0, gt=0, json_schema_extra=RESUMABLE)
    log_every_steps: int = Field(50, ge=1, json_schema_extra=RESUMABLE)
    # Stop cleanly (checkpoint, exit code 75) after this long, so a platform limit such as Modal's
    # 24 h per attempt never kills a run mid-write; None = no limit.
    time_limit_s: float | None = Field(None, gt=0, json_schema_extra=RESUMABLE)


class EvaluateConfig(Section):
    frame_hz: float = Field(4.0, gt=0)  # resolution of the stitched probability tracks
    batch_size: int = Field(32, ge=1, json_schema_extra=RESUMABLE)
    # Without a GPU, windows run in parallel, one forward per core (evaluate/cpu_workers.py):
    # `cpu_workers` forwards at once (None: one per core this process may use, its affinity and a
    # container's CPU quota: device.py fit_threads_to_cpus), each of
    # `cpu_batch_size` windows. More windows per forward buy no speed, only memory: each window in
    # flight costs ~0.4 GB at the cloud size (README "Speed on a CPU"), so memory grows with the
    # cores used; cap `cpu_workers` on a machine with many cores and little memory.
    cpu_workers: int | None = Field(None, ge=1, json_schema_extra=RESUMABLE)
    cpu_batch_size: int = Field(1, ge=1, json_schema_extra=RESUMABLE)
    # `detect` reads, preprocesses and infers an EDF this many seconds at a time: its memory is
    # a chunk's at any recording length (data/edf.py, evaluate/inference.py).
    chunk_s: float = Field(600.0, gt=0, json_schema_extra=RESUMABLE)
    threshold_on: float = Field(0.5, gt=0, lt=1)  # hysteresis: start an event above this ...
    # ... and end it below threshold_on x this; a ratio, so that any on-threshold (the dev sweep's,
    # or one chosen from it for `detect`) keeps the same hysteresis shape
    threshold_off_ratio: float = Field(0.7, gt=0, le=1)
    min_duration_s: float = Field(5.0, ge=0)
    merge_gap_s: float = Field(10.0, ge=0)
    max_event_s: float = Field(600.0, gt=0)  # longer events are split
    # Operating points reported as sensitivity at each FA/24h; the FIRST is also the one early
    # stopping follows (train.early_stop_patience) and best.pt is chosen on.
    # They are also the budgets `szdet export` calibrates a detector's operating points for.
    fa_targets_per_24h: list[Annotated[float, Field(gt=0)]] = Field(
        default_factory=lambda: [10.0, 5.0, 2.5, 1.0, 0.5], min_length=1
    )
    # Resamples of the patients behind each operating point's 95% interval (`szdet export`).
    bootstrap_samples: int = Field(1000, ge=1, json_schema_extra=RESUMABLE)
    # On-thresholds `szdet export` tries: finer than the per-epoch sweep, as a detector's are
    # chosen once and a coarse grid skips the thresholds between its steps.
    calibration_points: int = Field(1000, ge=2, json_schema_extra=RESUMABLE)
    # On-thresholds tried when choosing sensitivity at each FA target (logit-spaced grid).
    sweep_points: int = Field(100, ge=2)
    timeline_recordings: int = Field(4, ge=0, json_schema_extra=RESUMABLE)


class TrackingConfig(Section):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, json_schema_extra=RESUMABLE)

    # auto: online when WANDB_API_KEY is set, offline otherwise.
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"
    project: str = "szdet"
    entity: str | None = None


class CloudConfig(Section):
    """Where the cloud launchers (modal/app.py) find the data in S3; the laptop never needs these."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, json_schema_extra=RESUMABLE)

    cache_url: str | None = None  # s3://bucket/prefix `szdet cache push` uploaded the root to
    edf_url: str | None = None  # s3://bucket/prefix holding TUSZ's edf/{train,dev,eval}/ tree
    s3_endpoint_url: str | None = None  # an S3-compatible store (MinIO, R2); None = AWS S3
    transfer_workers: int = Field(16, ge=1)  # parallel file transfers in `szdet cache pull`
    build_shards: int = Field(32, ge=1)  # containers the Modal build-cache action fans out to


class Config(Section):
    paths: PathsConfig = Field(default_factory=PathsConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)
    windows: WindowsConfig = Field(default_factory=WindowsConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    cloud: CloudConfig = Field(default_factory=CloudConfig)

    @model_validator(mode="after")
    def _windows_fit_the_model(self) -> Config:
        # The TCN's strided downsample (models/tcn.py) maps each `downsample` samples to one step,
        # and the detector refuses a window it cannot divide (models/detector.py): at step 1 of a
        # run otherwise, with a traceback and an exit code the launchers retry.
        samples = self.windows.length_s * self.preprocess.sample_rate_hz
        whole = round(samples)
        if abs(samples - whole) > 1e-6 or whole % self.model.downsample:
            raise PydanticCustomError(
                "window_misfit",
                f"windows.length_s ({self.windows.length_s:g} s) x preprocess.sample_rate_hz "
                f"({self.preprocess.sample_rate_hz:g} Hz) = {samples:g} samples, which must be a "
                f"whole multiple of model.downsample ({self.model.downsample})",
                {"fields": ("windows.length_s", "preprocess.sample_rate_hz", "model.downsample")},
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _in_channels_from_the_montage(cls, raw: Any) -> Any:
        """model.in_channels follows data.montage unless written out: a user who switches the
        montage never has to restate its channel count (written out, it is checked below)."""
        if not isinstance(raw, dict):
            return raw
        data, model = raw.get("data"), raw.get("model", {})
        montage = data.get("montage", "referential") if isinstance(data, dict) else "referential"
        if montage in MONTAGES and isinstance(model, dict) and "in_channels" not in model:
            raw = {**raw, "model": {**model, "in_channels": len(montage_channels(montage))}}
        return raw

    @model_validator(mode="after")
    def _model_reads_the_montage(self) -> Config:
        channels = len(montage_channels(self.data.montage))
        if self.model.in_channels != channels:
            raise PydanticCustomError(
                "montage_misfit",
                f"model.in_channels ({self.model.in_channels}) must equal the {channels} "
                f"channels of data.montage {self.data.montage}",
                {"fields": ("model.in_channels", "data.montage")},
            )
        return self

    @property
    def run_dir(self) -> Path:
        return self.paths.runs_dir / self.paths.run_name

    @property
    def window_samples(self) -> int:
        """Samples per window at the cache's rate (a whole number: ``_windows_fit_the_model``)."""
        return round(self.windows.length_s * self.preprocess.sample_rate_hz)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)

    def fingerprint(self, sections: tuple[str, ...] = ("model",)) -> str:
        """Hash of the named sections: a checkpoint from a different architecture is refused.
        How the model is executed (kernels, chunking, recomputation) is not architecture."""
        dumped = self.model_dump(mode="json")
        for field in marked_fields("execution", ModelConfig):
            dumped["model"].pop(field)
        return config_hash({s: dumped[s] for s in sections})


def config_hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]
