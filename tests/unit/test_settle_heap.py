"""A serving process hides its start-up heap from the cyclic collector."""

from __future__ import annotations

import gc

from gateway.main import GC_THRESHOLDS, settle_heap


def test_settle_heap_freezes_what_exists_and_collects_less_often():
    thresholds = gc.get_threshold()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == GC_THRESHOLDS
        assert GC_THRESHOLDS[0] > thresholds[0]
    finally:  # this test process is not a server: give its heap back to the collector
        gc.unfreeze()
        gc.set_threshold(*thresholds)
