"""Progress bars: shown for long work when asked, silenced by TQDM_DISABLE=1 (tests, CI logs)."""
from __future__ import annotations

import os

from tqdm.auto import tqdm


def bar(iterable=None, *, desc: str, enabled: bool = True, **kwargs):
    silenced = os.environ.get("TQDM_DISABLE", "").lower() not in ("", "0", "false")
    kwargs.setdefault("leave", False)
    return tqdm(iterable, desc=desc, disable=(not enabled) or silenced, **kwargs)
