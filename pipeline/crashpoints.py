"""Named points where a test can kill mixprep as a crash would (SIGKILL, no cleanup).

    MIXPREP_CRASH_AT='mmidx-rename:stage1-00001-*' mixprep run ...

kills the process the first time a point whose name matches the pattern (``fnmatch``) is reached.
Points: ``cache-part:<source>:<part>`` (a cache part is complete), ``mmidx-rename:<file>`` (a
``.bin`` is in place, its ``.idx`` is not yet), ``before-manifest:<mixture>``. Unset, it costs one
dictionary lookup.
"""

from __future__ import annotations

import fnmatch
import os
import signal

__all__ = ["crash_point", "ENV"]

ENV = "MIXPREP_CRASH_AT"


def crash_point(name: str) -> None:
    pattern = os.environ.get(ENV)
    if pattern and fnmatch.fnmatchcase(name, pattern):
        os.kill(os.getpid(), signal.SIGKILL)
