"""The launchers' one restart policy (szdet/cloud/restart.py); the torchrun launcher applying it
end to end is tested in test_train_stops.py, Modal's and SkyPilot's settings in tests/launch."""

from szdet.cloud import restart
from szdet.errors import EXIT_COLLAPSE, EXIT_NONFINITE, EXIT_OK, EXIT_STOPPED


def test_the_policy_speaks_the_trainers_exit_codes():
    assert restart.outcome(EXIT_OK) == "done"
    assert restart.outcome(EXIT_STOPPED) == "resume"
    assert [restart.outcome(c) for c in (1, 2, EXIT_NONFINITE, EXIT_COLLAPSE)] == ["final"] * 4
    assert [restart.outcome(c) for c in (70, -9, 137, 139)] == ["crash"] * 4


def test_crashes_restart_a_bounded_number_of_times_in_a_row(tmp_path):
    count = tmp_path / "crashes"
    codes = [restart.main(["-9", str(count)]) for _ in range(restart.MAX_CRASH_RESTARTS + 1)]
    assert codes == [70] * restart.MAX_CRASH_RESTARTS + [1]
    assert count.read_text() == f"{restart.MAX_CRASH_RESTARTS + 1}\n"
    assert restart.main(["75", str(count)]) == 75  # trained on: the streak is over
    assert not count.exists()
    assert restart.bound_crashes(3, crashes_before=2) == (3, 0)
