"""No resource grows with the corpus: open files stay bounded however many recordings a split
has."""

import os

from cache_support import write_split
from szdet.data.manifest import MAX_OPEN_ARRAYS, CacheSplit


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_split_keeps_at_most_max_open_arrays_files_open(tmp_path):
    write_split(tmp_path, "train", [(0.5, [])] * (3 * MAX_OPEN_ARRAYS))
    split = CacheSplit.open(tmp_path, "train")
    before = _open_fds()
    for i in range(len(split)):
        split.signal(i).sum()  # read, and let go of the array as a Dataset does
    assert _open_fds() - before == MAX_OPEN_ARRAYS
    recent = split.signal(len(split) - 1)
    assert split.signal(len(split) - 1) is recent  # the recently read stay open, not reopened
    split.signal(0)  # evicts the least recently read, closing its file
    assert _open_fds() - before == MAX_OPEN_ARRAYS
