"""What ``infra/gunicorn.conf.py``'s hooks do to a worker."""

from __future__ import annotations

import gc
import runpy

from infra.serving import GUNICORN_CONF


def test_a_worker_leaves_what_it_built_at_start_up_out_of_garbage_collection() -> None:
    hooks = runpy.run_path(str(GUNICORN_CONF))
    assert gc.get_freeze_count() == 0
    built_at_start_up = [object()]
    try:
        hooks["post_worker_init"](None)
        assert gc.get_freeze_count() > 0
        # Frozen objects are in no generation a collection walks.
        assert not any(tracked is built_at_start_up for tracked in gc.get_objects())
    finally:
        gc.unfreeze()
