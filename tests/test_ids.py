"""Ids sort by time, which the hourly window and retention read as a range on the id."""

from __future__ import annotations

import time

from nudge.ids import id_floor, id_time, new_id


def test_an_id_tells_when_it_was_made() -> None:
    before = time.time()
    made = new_id("n")
    after = time.time()
    assert before - 0.001 <= id_time(made) <= after


def test_the_floor_of_a_time_sorts_between_ids_made_before_and_after() -> None:
    earlier = new_id("n")
    time.sleep(0.002)
    floor = id_floor("n", time.time())
    time.sleep(0.002)
    later = new_id("n")
    assert earlier < floor < later
    assert id_time(floor + "0" * 10) <= id_time(later)
