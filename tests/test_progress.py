"""The ETA that the scorer, training and predict print: a known clock gives known text."""

from entromix.common.progress import Eta, format_seconds


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_eta_from_the_steps_this_process_timed():
    clock = Clock()
    eta = Eta(10, clock=clock)
    assert eta.text() == "0/10, 0 min 00 s elapsed, ETA after the first step"
    clock.now += 30
    assert eta.step() == "1/10, 0 min 30 s elapsed, ETA 4 min 30 s"
    clock.now += 30
    assert eta.step(count=False) == "1 min 00 s elapsed, ETA 4 min 00 s"


def test_resumed_steps_count_as_done_but_not_in_the_rate():
    clock = Clock()
    eta = Eta(10, clock=clock)
    eta.skip(6)  # an earlier run finished 6 of 10
    assert eta.remaining_seconds() is None
    clock.now += 20
    assert eta.step() == "7/10, 0 min 20 s elapsed, ETA 1 min 00 s"


def test_format_seconds():
    assert format_seconds(65) == "1 min 05 s"
    assert format_seconds(3600 * 2 + 180) == "2 h 03 min"
