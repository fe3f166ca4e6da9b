"""Progress bars: the one place that decides how they look and how often they redraw.

In a terminal a bar redraws as tqdm likes (10 times a second at most). Where no terminal
watches (``seas demo > log 2>&1``, a batch job's log file) every redraw would be one more line
of carriage-return text in the log, thousands per run (a loss in the postfix forced a redraw on
every update): there a bar redraws at most once every :data:`LOG_INTERVAL_S` seconds (and once
when it closes), so a log gets a line now and then.
"""

from __future__ import annotations

import sys

LOG_INTERVAL_S = 60.0  # seconds between redraws of a bar written to a file or a pipe


def watched(stream=None) -> bool:
    """Whether ``stream`` (default: standard error, where bars go) is a terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def bar(total: int | None = None, initial: int = 0, desc: str = "", disable: bool = False, leave: bool = True,
        unit: str = "it", iterable=None):
    """A tqdm bar on standard error; where no terminal watches, slowed to one redraw per
    :data:`LOG_INTERVAL_S` (``set_postfix`` then waits for the next redraw instead of forcing one)."""
    from tqdm.auto import tqdm

    terminal = watched()

    class Bar(tqdm):
        def set_postfix(self, ordered_dict=None, refresh=True, **kwargs):
            super().set_postfix(ordered_dict, refresh=refresh and terminal, **kwargs)

    slow = {} if terminal else {"mininterval": LOG_INTERVAL_S, "maxinterval": LOG_INTERVAL_S, "miniters": 0}
    return Bar(iterable, total=total, initial=initial, desc=desc, disable=disable, leave=leave, unit=unit,
               dynamic_ncols=True, **slow)
