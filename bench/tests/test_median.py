"""The bench keeps the median of repeated runs (bench/scenarios.py: median_run)."""

from bench.scenarios import median_run


def test_the_median_run_is_kept_with_every_run_s_seconds():
    runs = [{"seconds": 5.0, "id": "a"}, {"seconds": 3.0, "id": "b"}, {"seconds": 9.0, "id": "c"}]
    assert median_run(runs) == {"seconds": 5.0, "id": "a", "repeats_seconds": [5.0, 3.0, 9.0]}


def test_of_two_runs_the_faster_is_kept_and_one_run_is_itself():
    assert median_run([{"seconds": 4.0}, {"seconds": 2.0}])["seconds"] == 2.0
    assert median_run([{"seconds": 4.0}]) == {"seconds": 4.0, "repeats_seconds": [4.0]}
