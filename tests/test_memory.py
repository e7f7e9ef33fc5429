"""stack/memory.py: the process's own memory habits."""

import gc
import weakref

from stack.memory import freeze_loaded_objects


class _Node:
    pass


def test_loaded_objects_leave_the_collectors_walks_and_new_garbage_is_still_collected():
    tracked = len(gc.get_objects())
    before = gc.get_freeze_count()
    try:
        freeze_loaded_objects()
        # what the process held (the models, once loaded) is no longer walked by a collection
        assert gc.get_freeze_count() - before >= tracked * 0.9
        # a conversation's cycles made afterwards are still collected
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
