"""Signal generators of the synthetic corpus: scalp potentials in microvolts, before any reference.

Every electrode's potential is simulated against an ideal distant reference; `corpus.py` then
re-references it the way each TUSZ setup does (average or linked ears). Simulated here:

- background: 1/f noise mixed between neighbouring electrodes, plus a posterior alpha rhythm that
  waxes and wanes and is blocked while the eyes are open;
- artefacts: eye blinks and lateral eye movements (frontal), muscle bursts (broadband, temporal),
  electrode pops (one electrode, step and decay), ECG leaking into the ears, 60 Hz line noise;
- seizure-like artefacts, never labelled: rhythmic chewing (1-2 Hz bursts of temporal muscle),
  rhythmic movement (a steady 0.5-3 Hz swing) and photic driving;
- and, drawn by `seizure.py`, the seizures.

Everything is vectorised numpy in float32; one recording's randomness comes from one Generator.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from szdet.config import CHANNELS_19

if TYPE_CHECKING:  # seizure.py builds on this module
    from szdet.synth.seizure import Seizure

Array = np.ndarray

# Positions on a flat head map (x to the right, y to the nose; the 10-20 outer ring at radius 0.8).
_RING = {"T4": 0, "F8": 36, "FP2": 72, "FP1": 108, "F7": 144, "T3": 180, "T5": 216, "O1": 252,
         "O2": 288, "T6": 324}  # fmt: skip
POSITIONS: dict[str, tuple[float, float]] = {
    **{e: (0.8 * np.cos(np.radians(a)), 0.8 * np.sin(np.radians(a))) for e, a in _RING.items()},
    "FZ": (0.0, 0.4), "CZ": (0.0, 0.0), "PZ": (0.0, -0.4), "C3": (-0.4, 0.0), "C4": (0.4, 0.0),
    "F3": (-0.35, 0.45), "F4": (0.35, 0.45), "P3": (-0.35, -0.45), "P4": (0.35, -0.45),
    "A1": (-1.0, -0.05), "A2": (1.0, -0.05), "T1": (-0.9, 0.3), "T2": (0.9, 0.3),
    "LOC": (-0.45, 1.05), "ROC": (0.45, 1.05),
}  # fmt: skip
ELECTRODES: tuple[str, ...] = tuple(POSITIONS)
INDEX = {e: i for i, e in enumerate(ELECTRODES)}
_XY = np.array([POSITIONS[e] for e in ELECTRODES])
DISTANCE = np.linalg.norm(_XY[:, None] - _XY[None], axis=-1)

POSTICTAL_GAP_S = 40.0  # seizures and seizure-like artefacts keep this far from a seizure's end


def _weights(values: dict[str, float], default: float = 0.0) -> Array:
    return np.array([values.get(e, default) for e in ELECTRODES], dtype=np.float32)


_ALPHA_W = _weights({"O1": 1, "O2": 1, "P3": 0.6, "P4": 0.6, "PZ": 0.6, "T5": 0.5, "T6": 0.5,
                     "C3": 0.15, "C4": 0.15, "CZ": 0.15, "A1": 0.1, "A2": 0.1}, 0.05)  # fmt: skip
_ALPHA_MIX = _ALPHA_W[:, None] * np.array(
    [[0.85, 0.53, 0.0] if x < -0.1 else [0.85, 0.0, 0.53] if x > 0.1 else [0.85, 0.265, 0.265]
     for x, _ in _XY], dtype=np.float32)  # fmt: skip
_BLINK_W = _weights({"FP1": 1, "FP2": 1, "LOC": 0.8, "ROC": 0.8, "F7": 0.45, "F8": 0.45,
                     "F3": 0.35, "F4": 0.35, "FZ": 0.3, "C3": 0.08, "C4": 0.08, "CZ": 0.06}, 0.01)  # fmt: skip
_SACCADE_W = _weights({"F7": 1, "F8": -1, "LOC": 1.3, "ROC": -1.3, "FP1": 0.3, "FP2": -0.3,
                       "T1": 0.4, "T2": -0.4})  # fmt: skip
_ECG_W = _weights({"A1": 0.015, "A2": -0.012, "T5": 0.006, "T6": -0.005, "T3": 0.004,
                   "T4": -0.003})  # fmt: skip
_TEMPORAL = {
    "left": {"F7": 0.8, "T3": 1.0, "T5": 0.6, "T1": 1.0, "A1": 0.8, "F3": 0.15, "C3": 0.15},
    "right": {"F8": 0.8, "T4": 1.0, "T6": 0.6, "T2": 1.0, "A2": 0.8, "F4": 0.15, "C4": 0.15},
}


# --- noise with a chosen spectrum -------------------------------------------------------------


def shaped_noise(
    rng: np.random.Generator,
    n_channels: int,
    n_samples: int,
    fs: float,
    amplitude: Callable[[Array], Array],
) -> Array:
    """Gaussian noise whose amplitude spectrum is ``amplitude(freqs_hz)``; unit RMS per channel."""
    freqs = np.fft.rfftfreq(n_samples, 1 / fs).astype(np.float32)
    # Pairs of float32 normals viewed as complex64: a white spectrum, then shaped in place.
    spectrum = rng.standard_normal((n_channels, 2 * freqs.size), dtype=np.float32).view(
        np.complex64
    )
    spectrum *= amplitude(freqs).astype(np.float32)
    x = np.fft.irfft(spectrum, n=n_samples, axis=-1)
    x /= x.std(axis=-1, keepdims=True) + np.float32(1e-12)
    return x.astype(np.float32, copy=False)


def band_noise(
    rng: np.random.Generator, n_channels: int, n_samples: int, fs: float, lo_hz: float, hi_hz: float
) -> Array:
    """Unit-RMS noise flat between lo_hz and hi_hz (capped below Nyquist)."""
    hi_hz = min(hi_hz, 0.45 * fs)
    return shaped_noise(
        rng, n_channels, n_samples, fs, lambda f: ((f >= lo_hz) & (f <= hi_hz)) * 1.0
    )


def narrowband_noise(
    rng: np.random.Generator, n_channels: int, n_samples: int, fs: float, f_hz: float, sd_hz: float
) -> Array:
    """Unit-RMS noise concentrated around f_hz: a rhythm whose amplitude waxes and wanes."""
    return shaped_noise(
        rng, n_channels, n_samples, fs, lambda f: np.exp(-0.5 * ((f - f_hz) / sd_hz) ** 2)
    )


def taper(n: int, ramp: int) -> Array:
    """Flat window of n samples with raised-cosine ramps of `ramp` samples at both ends."""
    window = np.ones(n, dtype=np.float32)
    ramp = min(ramp, n // 2)
    if ramp > 0:
        edge = np.sin(np.linspace(0, np.pi / 2, ramp, dtype=np.float32)) ** 2
        window[:ramp], window[n - ramp :] = edge, edge[::-1]
    return window


def _add_at(trace: Array, start: int, values: Array) -> None:
    """trace[..., start:start+len] += values, cut to the trace's end."""
    stop = min(start + values.shape[-1], trace.shape[-1])
    if start < stop:
        trace[..., start:stop] += values[..., : stop - start]


# --- the recording ---------------------------------------------------------------------------


@dataclass
class SimulatedEEG:
    """Scalp potentials (len(ELECTRODES), n) and the auxiliary traces, all float32 microvolts."""

    potentials_uv: Array
    ecg_uv: Array
    emg_uv: Array
    photic_uv: Array


def simulate(
    rng: np.random.Generator,
    duration_s: int,
    fs: int,
    seizures: list[Seizure],
    artefact_every_s: float = 150.0,
) -> SimulatedEEG:
    """One recording of `duration_s` seconds at `fs` Hz holding the given seizures, and a
    seizure-like rhythmic artefact per ``artefact_every_s`` on average."""
    n = duration_s * fs
    eyes_open = _eyes_open(rng, n, fs)
    v = _background(rng, n, fs, eyes_open)
    for seizure in seizures:
        seizure.add_to(rng, v, fs)
    busy = [(s.start_s - 5.0, s.stop_s + POSTICTAL_GAP_S) for s in seizures]
    muscle = np.zeros(n, dtype=np.float32)  # envelope of muscle activity, mirrored in the EMG trace
    _add_eye_artefacts(rng, v, fs, eyes_open)
    _add_muscle_bursts(rng, v, fs, muscle)
    _add_pops(rng, v, fs)
    for kind in _rhythmic_artefact_kinds(rng, duration_s, artefact_every_s):
        start_s = _free_start(rng, duration_s, busy, length_s=kind[1])
        if start_s is not None:
            busy.append((start_s, start_s + kind[1]))
            _RHYTHMIC[kind[0]](rng, v, fs, int(start_s * fs), int(kind[1] * fs), muscle)
    photic = np.zeros(n, dtype=np.float32)
    if rng.random() < 0.3 and duration_s >= 150:
        start_s = _free_start(rng, duration_s, busy, length_s=84.0)
        if start_s is not None:
            _add_photic(rng, v, fs, int(start_s * fs), photic)
    ecg = _ecg(rng, n, fs)
    v += _ECG_W[:, None] * ecg[None]
    t = np.arange(n, dtype=np.float32) / fs
    line = np.sin(2 * np.pi * 60.0 * t + rng.uniform(0, 2 * np.pi)).astype(np.float32)
    v += rng.uniform(0.5, 4.0, (len(ELECTRODES), 1)).astype(np.float32) * line[None]
    emg = (3.0 + 40.0 * muscle) * band_noise(rng, 1, n, fs, 20, 150)[0]
    return SimulatedEEG(v, ecg + rng.normal(0, 2, n).astype(np.float32), emg, photic)


def _eyes_open(rng: np.random.Generator, n: int, fs: int) -> Array:
    """1 while the eyes are open (blocks of 5-30 s), 0 while closed (10-60 s), ramps of 1 s."""
    is_open = bool(rng.random() < 0.4)
    knots_s, values, t_s = [0.0], [float(is_open)], 0.0
    while t_s < n / fs:
        t_s += rng.uniform(5, 30) if is_open else rng.uniform(10, 60)
        is_open = not is_open
        knots_s += [t_s, t_s + 1.0]
        values += [values[-1], float(is_open)]
    return np.interp(np.arange(n) / fs, knots_s, values).astype(np.float32)


def _background(rng: np.random.Generator, n: int, fs: int, eyes_open: Array) -> Array:
    exponent = rng.uniform(1.4, 2.0)  # power ~ 1/f^exponent
    sources = shaped_noise(
        rng, len(ELECTRODES), n, fs, lambda f: (0.25 + f**2) ** (-exponent / 4) * (f > 0.1)
    )
    mixing = np.exp(-0.5 * (DISTANCE / 0.3) ** 2)  # neighbours share sources: spatial correlation
    mixing /= np.linalg.norm(mixing, axis=1, keepdims=True)
    v = (mixing.astype(np.float32) @ sources) * np.float32(rng.uniform(15, 30))
    v[[INDEX["A1"], INDEX["A2"]]] *= 0.6  # the earlobes sit farther from the brain
    # Alpha: a common rhythm plus one per hemisphere (midline electrodes get both halves).
    alpha = narrowband_noise(rng, 3, n, fs, rng.uniform(8.5, 11.5), 0.4)
    gain = np.float32(rng.uniform(10, 18)) * (1.0 - 0.6 * eyes_open)  # blocked by open eyes
    v += (_ALPHA_MIX @ alpha) * gain[None]
    return v


# --- artefacts --------------------------------------------------------------------------------


def _poisson_times(rng: np.random.Generator, duration_s: float, rate_hz: float) -> Array:
    count = rng.poisson(rate_hz * duration_s)
    return np.sort(rng.uniform(0, duration_s, count))


def _add_eye_artefacts(rng: np.random.Generator, v: Array, fs: int, eyes_open: Array) -> None:
    """Blinks (positive frontal bumps) and lateral saccades (opposite polarity left/right)."""
    n, duration_s = v.shape[1], v.shape[1] / fs
    trace = np.zeros(n, dtype=np.float32)
    for t_s in _poisson_times(rng, duration_s, rng.uniform(0.15, 0.4)):
        if eyes_open[int(t_s * fs)] > 0.5:
            width = int(rng.uniform(0.25, 0.45) * fs)
            bump = np.sin(np.linspace(0, np.pi, width, dtype=np.float32)) ** 2
            _add_at(trace, int(t_s * fs), rng.uniform(80, 200) * bump)
    v += _BLINK_W[:, None] * trace[None]
    trace[:] = 0
    for t_s in _poisson_times(rng, duration_s, rng.uniform(0.03, 0.12)):
        hold = int(rng.uniform(0.5, 2.0) * fs)
        step = np.ones(hold, dtype=np.float32) * taper(hold, int(0.05 * fs))
        _add_at(trace, int(t_s * fs), rng.choice([-1, 1]) * rng.uniform(30, 80) * step)
    v += _SACCADE_W[:, None] * trace[None]


def _temporal_rows(side: str) -> tuple[Array, Array]:
    sides = ("left", "right") if side == "both" else (side,)
    gains = {e: g for s in sides for e, g in _TEMPORAL[s].items()}
    return np.array([INDEX[e] for e in gains]), np.array(list(gains.values()), dtype=np.float32)


def _add_muscle(
    rng: np.random.Generator, v: Array, fs: int, i0: int, envelope: Array, side: str, muscle: Array
) -> None:
    """Broadband muscle activity on one or both temporal regions, shaped by `envelope`."""
    rows, gains = _temporal_rows(side)
    n = min(envelope.size, v.shape[1] - i0)
    noise = band_noise(rng, len(rows), n, fs, 20, 150)
    v[rows, i0 : i0 + n] += gains[:, None] * envelope[None, :n] * noise
    muscle[i0 : i0 + n] += envelope[:n] / 100.0


def _add_muscle_bursts(rng: np.random.Generator, v: Array, fs: int, muscle: Array) -> None:
    for t_s in _poisson_times(rng, v.shape[1] / fs, rng.uniform(1 / 40, 1 / 15)):
        n = int(rng.uniform(0.5, 4.0) * fs)
        envelope = rng.uniform(20, 80) * taper(n, int(0.2 * fs))
        side = str(rng.choice(["left", "right", "both"]))
        _add_muscle(rng, v, fs, int(t_s * fs), envelope, side, muscle)


def _add_pops(rng: np.random.Generator, v: Array, fs: int) -> None:
    """Electrode pops: one electrode jumps and decays back, sometimes a few times in a row."""
    scalp = [INDEX[e] for e in (*CHANNELS_19, "A1", "A2")]
    for t_s in _poisson_times(rng, v.shape[1] / fs, rng.uniform(1 / 180, 1 / 60)):
        row, tau = int(rng.choice(scalp)), rng.uniform(0.1, 0.5)
        decay = np.exp(-np.arange(int(5 * tau * fs), dtype=np.float32) / (tau * fs))
        for k in range(int(rng.integers(1, 4))):
            amplitude = rng.choice([-1, 1]) * rng.uniform(100, 400)
            _add_at(v[row], int((t_s + 1.5 * k) * fs), amplitude * decay)


def _rhythmic_artefact_kinds(
    rng: np.random.Generator, duration_s: int, every_s: float
) -> list[tuple[str, float]]:
    """Seizure-like artefacts of a recording: at least one, about one per ``every_s``."""
    count = max(1, int(rng.poisson(duration_s / every_s)))
    kinds = ["chewing"] + [str(rng.choice(["chewing", "movement"])) for _ in range(count - 1)]
    return [(k, float(rng.uniform(4, 15) if k == "chewing" else rng.uniform(5, 30))) for k in kinds]


def _add_chewing(
    rng: np.random.Generator, v: Array, fs: int, i0: int, n: int, muscle: Array
) -> None:
    """Bursts of temporal muscle at 1-2 Hz, one per bite, on both sides."""
    period_s, envelope, t_s = 1 / rng.uniform(1.0, 2.0), np.zeros(n, dtype=np.float32), 0.0
    while t_s < n / fs:
        width = int(rng.uniform(0.15, 0.3) * fs)
        bump = np.sin(np.linspace(0, np.pi, width, dtype=np.float32)) ** 2
        _add_at(envelope, int(t_s * fs), rng.uniform(40, 150) * bump)
        t_s += period_s * rng.uniform(0.9, 1.1)
    _add_muscle(rng, v, fs, i0, envelope, "both", muscle)


def _add_movement(
    rng: np.random.Generator, v: Array, fs: int, i0: int, n: int, muscle: Array
) -> None:
    """A steady 0.5-3 Hz swing (rocking, patting) over a patch of electrodes: rhythmic like a
    seizure's late phase, but it neither evolves in frequency nor spreads."""
    centre = rng.choice(len(ELECTRODES))
    gains = np.exp(-0.5 * (DISTANCE[centre] / rng.uniform(0.3, 0.8)) ** 2)
    gains *= rng.choice([-1, 1], len(ELECTRODES))
    t = np.arange(n, dtype=np.float32) / fs
    phase = 2 * np.pi * rng.uniform(0.5, 3.0) * t
    swing = np.sin(phase) + 0.3 * np.sin(2 * phase)
    amplitude = rng.uniform(50, 300) * taper(n, int(fs))
    v[:, i0 : i0 + n] += (gains[:, None] * amplitude * swing).astype(np.float32)


_RHYTHMIC = {"chewing": _add_chewing, "movement": _add_movement}


def _add_photic(rng: np.random.Generator, v: Array, fs: int, i0: int, photic: Array) -> None:
    """Photic stimulation: flash trains of rising rate (8 s on, 6 s off) and occipital driving."""
    occipital = np.array([INDEX[e] for e in ("O1", "O2", "P3", "P4", "PZ")])
    driving_uv = rng.uniform(4, 12)
    for k, rate_hz in enumerate((3, 6, 9, 12, 15, 18)):
        start, n = i0 + k * 14 * fs, 8 * fs
        flashes = np.arange(0, n, fs / rate_hz).astype(int)
        photic[start + flashes] = 500.0
        t = np.arange(n, dtype=np.float32) / fs
        v[occipital, start : start + n] += driving_uv * np.sin(2 * np.pi * rate_hz * t)[None]


def _free_start(
    rng: np.random.Generator, duration_s: float, busy: list[tuple[float, float]], length_s: float
) -> float | None:
    """A start time where [start, start + length_s] meets no busy interval (None if none found)."""
    for _ in range(50):
        start = rng.uniform(1.0, duration_s - length_s - 1.0) if duration_s > length_s + 2 else -1
        if start >= 0 and all(start + length_s <= a or start >= b for a, b in busy):
            return float(start)
    return None


def _ecg(rng: np.random.Generator, n: int, fs: int) -> Array:
    """ECG in microvolts: P, QRS and T waves at a heart rate of 55-100 bpm with some variability."""
    rr_s = 60 / rng.uniform(55, 100)
    t = np.arange(int(0.7 * fs), dtype=np.float32) / fs - 0.2
    waves = ((-0.16, 0.02, 100), (-0.03, 0.008, -100), (0, 0.01, 1000), (0.03, 0.01, -250),
             (0.25, 0.04, 250))  # fmt: skip
    beat = np.zeros_like(t)
    for centre_s, width_s, amplitude_uv in waves:
        beat += amplitude_uv * np.exp(-0.5 * ((t - centre_s) / width_s) ** 2)
    beat *= np.float32(rng.uniform(0.6, 1.4))
    ecg, t_s = np.zeros(n, dtype=np.float32), rng.uniform(0, rr_s)
    while t_s < n / fs:
        _add_at(ecg, int(t_s * fs), beat)
        t_s += rr_s * rng.normal(1.0, 0.04)
    return ecg
