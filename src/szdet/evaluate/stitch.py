"""Overlapping window outputs -> one probability track per recording, at ``evaluate.frame_hz``.

Sample t of a recording (at its sample rate) belongs to frame ``floor((t + 0.5) * frame_hz / rate)``
(the frame holding the sample's midpoint, so no sample sits on a frame boundary). A frame's value is
the mean of every (sample, covering window) probability that falls in it: each window covering a
sample adds it once, overlapping windows are averaged, and padding past the recording's end is
ignored. Windows can arrive in any order; the `Stitcher` only keeps a sum and a count per frame.

Per-node evidence (19 rows a frame) must come recording by recording, as a WindowIndex orders
windows: a recording's evidence is final once a later recording's window lands. Within
`evidence_on_disk` (`szdet evaluate`), it then leaves memory for a temporary file, as a split's
would fill it (~2.2 MB per EEG-hour); elsewhere (`szdet detect`: one recording) it stays in memory.
"""

from __future__ import annotations

import tempfile
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast, overload

import numpy as np

from szdet.config import EvaluateConfig
from szdet.progress import progress

if TYPE_CHECKING:  # torch is imported only when a model runs, so scoring stays light
    import torch

    from szdet.evaluate.cpu_workers import CoreWorkers
    from szdet.models.detector import V3Detector


def frame_of_sample(samples: np.ndarray, sample_rate_hz: float, frame_hz: float) -> np.ndarray:
    return np.floor((samples + 0.5) * (frame_hz / sample_rate_hz)).astype(np.int64)


def n_frames(n_samples: int, sample_rate_hz: float, frame_hz: float) -> int:
    """Frames a recording of ``n_samples`` spans (the last may be partly filled)."""
    if n_samples <= 0:
        return 0
    return int(frame_of_sample(np.array([n_samples - 1]), sample_rate_hz, frame_hz)[0]) + 1


def label_track(
    events: Sequence[tuple[float, float]] | np.ndarray, n_frames: int, frame_hz: float
) -> np.ndarray:
    """Reference labels per frame: 1 where the frame's midpoint lies inside a seizure event."""
    labels = np.zeros(n_frames, dtype=np.uint8)
    for start_s, stop_s in events:
        # frames k with start <= (k + 0.5) / frame_hz < stop
        first = max(0, int(np.ceil(start_s * frame_hz - 0.5)))
        end = min(n_frames, int(np.ceil(stop_s * frame_hz - 0.5)))
        labels[first:end] = 1
    return labels


_SPILL_TO: ContextVar[Path | None] = ContextVar("szdet_evidence_spill", default=None)


@contextmanager
def evidence_on_disk() -> Iterator[None]:
    """Within it, stitchers write each recording's final evidence to a temporary directory (under
    TMPDIR) that is removed on leaving, also on error; reading it back is for within it too."""
    with tempfile.TemporaryDirectory(prefix="szdet-evidence-") as folder:
        token = _SPILL_TO.set(Path(folder))
        try:
            yield
        finally:
            _SPILL_TO.reset(token)


class EvidenceTracks(Sequence[np.ndarray]):
    """Per recording, its (rows, frames) float32 mean evidence: in memory, or, within
    `evidence_on_disk`, in a .npy file read back each time it is asked for, so that a split's
    evidence never sits in memory at once."""

    def __init__(self, n_recordings: int) -> None:
        self._n = n_recordings
        self._held: dict[int, np.ndarray] = {}
        self._spill_to = _SPILL_TO.get()
        self._folder: Path | None = None

    def put(self, recording: int, evidence: np.ndarray) -> None:
        if self._spill_to is None:
            self._held[recording] = evidence
            return
        if self._folder is None:  # its own: two stitchers in one `evidence_on_disk` number alike
            self._folder = Path(tempfile.mkdtemp(dir=self._spill_to))
        np.save(self._folder / f"{recording}.npy", evidence)

    def __len__(self) -> int:
        return self._n

    @overload
    def __getitem__(self, i: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, i: slice) -> list[np.ndarray]: ...

    def __getitem__(self, i: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(i, slice):
            return [self[k] for k in range(self._n)[i]]
        k = range(self._n)[i]  # negative indices, and IndexError past the end, as a list's
        return self._held[k] if self._folder is None else np.load(self._folder / f"{k}.npy")


class Stitcher:
    """Accumulates per-sample window probabilities into per-recording frame tracks, in O(window)
    work per window; with ``evidence_rows``, each node's evidence (evaluate/localise.py) alike."""

    def __init__(
        self,
        n_samples: Sequence[int],
        sample_rate_hz: float,
        frame_hz: float,
        evidence_rows: int = 0,
    ) -> None:
        self.n_samples = [int(n) for n in n_samples]
        self.sample_rate_hz = sample_rate_hz
        self.frame_hz = frame_hz
        self.evidence_rows = evidence_rows
        sizes = [n_frames(n, sample_rate_hz, frame_hz) for n in self.n_samples]
        self._sums = [np.zeros(size, dtype=np.float64) for size in sizes]
        self._counts = [np.zeros(size, dtype=np.int64) for size in sizes]
        # Evidence sums of the one recording being stitched (None until its first window), in
        # float32: 19 rows of a 72-hour recording at 4 frames/s are 79 MB so, twice that in float64
        self._stitching = 0
        self._open: np.ndarray | None = None
        self._evidence = EvidenceTracks(len(sizes))

    def add(
        self, recording: int, start: int, probs: np.ndarray, evidence: np.ndarray | None = None
    ) -> None:
        """Add one window's per-sample probabilities (and (rows, samples) evidence); ``start``
        is its first sample."""
        if self.evidence_rows:
            self._finish_before(recording)
        n = self.n_samples[recording]
        first = max(0, -start)  # a window may begin before the recording (left padding)
        last = min(len(probs), n - start)  # ... and run past its end (right padding)
        if last <= first:
            return
        frames = frame_of_sample(
            np.arange(start + first, start + last), self.sample_rate_hz, self.frame_hz
        )
        lo = int(frames[0])
        local = frames - lo
        size = int(local[-1]) + 1
        values = np.asarray(probs[first:last], dtype=np.float64)
        self._sums[recording][lo : lo + size] += np.bincount(local, weights=values, minlength=size)
        self._counts[recording][lo : lo + size] += np.bincount(local, minlength=size)
        if evidence is not None and self.evidence_rows:
            rows = np.arange(self.evidence_rows)[:, None] * size  # one bincount for every row
            summed = np.bincount(
                (rows + local).ravel(),
                weights=np.asarray(evidence[:, first:last], np.float64).ravel(),
                minlength=self.evidence_rows * size,
            )
            if self._open is None:
                shape = (self.evidence_rows, len(self._counts[recording]))
                self._open = np.zeros(shape, np.float32)
            self._open[:, lo : lo + size] += summed.reshape(-1, size)

    def add_batch(
        self,
        recordings: np.ndarray,
        starts: np.ndarray,
        probs: np.ndarray,
        evidence: np.ndarray | None = None,
    ) -> None:
        for k, (recording, start, window) in enumerate(zip(recordings, starts, probs, strict=True)):
            self.add(int(recording), int(start), window, None if evidence is None else evidence[k])

    def coverage(self, recording: int) -> np.ndarray:
        """How many (sample, window) pairs landed in each frame; 0 = never covered."""
        return self._counts[recording].copy()

    def tracks(self) -> list[np.ndarray]:
        """One float32 probability track per recording; frames no window covered are 0."""
        return [
            np.divide(s, c, out=np.zeros_like(s), where=c > 0).astype(np.float32)
            for s, c in zip(self._sums, self._counts, strict=True)
        ]

    def evidence_tracks(self) -> EvidenceTracks:
        """Per recording, (evidence_rows, frames) float32 mean evidence; 0 where uncovered. Ends
        the stitching of evidence."""
        self._finish_before(len(self.n_samples))
        return self._evidence

    def _finish_before(self, recording: int) -> None:
        """A window of ``recording`` finishes every recording before it: their evidence is final
        and put away."""
        if recording < self._stitching:
            raise ValueError(
                f"a window of recording {recording} came after one of recording "
                f"{self._stitching}: evidence is stitched recording by recording"
            )
        while self._stitching < recording:
            self._evidence.put(self._stitching, self._mean_evidence())
            self._stitching += 1

    def _mean_evidence(self) -> np.ndarray:
        """The evidence of the recording being stitched, divided by its counts; frees its sums."""
        counts = self._counts[self._stitching]
        sums = self._open
        if sums is None:  # no window landed on it
            sums = np.zeros((self.evidence_rows, len(counts)), np.float32)
        self._open = None
        return np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)


# Batches whose probabilities may still be on their way to the host: the host stitches the oldest
# while the device computes the newer ones, so it waits only for a copy already done and the
# device's queue never runs dry.
IN_FLIGHT_BATCHES = 3


def predict_tracks(
    model: torch.nn.Module,
    split: Any,
    index: Any,
    batch_size: int,
    device: torch.device | str,
    autocast_dtype: torch.dtype | None = None,
    frame_hz: float | None = None,
    num_workers: int = 0,
    show_progress: bool = True,
) -> list[np.ndarray]:
    """Run ``model`` over every window of ``index`` (a WindowIndex of ``split``, built with
    ``windows.eval_stride_s``) and stitch the sigmoid outputs into one track per recording."""
    frame_hz = EvaluateConfig().frame_hz if frame_hz is None else frame_hz
    stitcher = Stitcher([r.n_samples for r in split.recordings], split.sample_rate_hz, frame_hz)
    predict_into(
        stitcher,
        model,
        split,
        index,
        batch_size,
        device,
        autocast_dtype,
        num_workers,
        show_progress,
    )
    return stitcher.tracks()


def predict_into(
    stitcher: Stitcher,
    model: torch.nn.Module,
    split: Any,
    index: Any,
    batch_size: int,
    device: torch.device | str,
    autocast_dtype: torch.dtype | None = None,
    num_workers: int = 0,
    show_progress: bool = True,
    cpu_workers: int = 1,
) -> None:
    """Add the sigmoid outputs of ``model`` over the windows of ``index`` to ``stitcher`` (whose
    recordings are ``split``'s): a recording read in chunks is stitched window batch by batch.
    A stitcher with evidence rows gets the model's per-node evidence too (``model.localised``).
    ``cpu_workers`` > 1 (on a CPU): each batch is split over that many threads, one core each
    (evaluate/cpu_workers.py)."""
    import torch

    from szdet.evaluate.cpu_workers import CoreWorkers

    device = torch.device(device)
    window_recording = np.asarray(index.recording)
    window_start = np.asarray(index.start)
    loader = _loader(split, index, batch_size, num_workers, device)
    localise = stitcher.evidence_rows > 0
    workers = CoreWorkers(cpu_workers) if cpu_workers > 1 and device.type == "cpu" else None
    in_flight: deque[tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, Any]] = deque()

    def stitch_oldest() -> None:
        probs, evidence, ids, landed = in_flight.popleft()
        if landed is not None:
            landed.synchronize()
        ids_np = ids.numpy()
        stitcher.add_batch(
            window_recording[ids_np],
            window_start[ids_np],
            probs.numpy(),
            None if evidence is None else evidence.numpy(),
        )

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), workers or nullcontext():
            for x, _, ids in progress(
                loader, desc="predict", total=len(loader), unit="batch", disable=not show_progress
            ):
                probs, evidence = _forward(model, x, device, autocast_dtype, localise, workers)
                in_flight.append((probs, evidence, ids, _event_after_queued_work(device)))
                if len(in_flight) > IN_FLIGHT_BATCHES:
                    stitch_oldest()
            while in_flight:
                stitch_oldest()
    finally:
        model.train(was_training)


def _loader(
    split: Any, index: Any, batch_size: int, num_workers: int, device: torch.device
) -> torch.utils.data.DataLoader:
    from torch.utils.data import DataLoader

    from szdet.data.windows import WindowDataset

    return DataLoader(
        WindowDataset(split, index),
        batch_size=batch_size,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )


def _forward(
    model: torch.nn.Module,
    x: torch.Tensor,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    localise: bool,
    workers: CoreWorkers | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One batch's probabilities (and per-node evidence), on their way to the host: from CUDA,
    a non-blocking copy lands in pinned memory, unwaited for. With ``workers``, the batch's parts
    run one per core and are joined."""
    import torch

    if workers is not None:
        return _joined(
            workers.map(lambda part: _forward(model, part, device, autocast_dtype, localise), x)
        )

    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        x = x.to(device, non_blocking=True).float()
        logits, evidence = cast("V3Detector", model).localised(x) if localise else (model(x), None)
    probs = torch.sigmoid(logits.float()).to("cpu", non_blocking=True)
    if evidence is not None:
        evidence = evidence.float().to("cpu", non_blocking=True)
    return probs, evidence


def _joined(
    parts: list[tuple[torch.Tensor, torch.Tensor | None]],
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The probabilities (and evidence) of a batch's parts, as one batch's."""
    import torch

    probs = torch.cat([p for p, _ in parts])
    evidence = [e for _, e in parts if e is not None]
    return probs, torch.cat(evidence) if evidence else None


def _event_after_queued_work(device: torch.device) -> torch.cuda.Event | None:
    """An event that completes once the device's work queued so far is done (None on the CPU,
    whose work is done when queued)."""
    import torch

    if device.type != "cuda":
        return None
    event = torch.cuda.Event()
    event.record()
    return event
