"""Reading envelopes back: index locations in, the log's own bytes out."""
from __future__ import annotations

import logging
import os
from itertools import groupby
from operator import itemgetter

from ...errors import StorageError
from . import segments
from .index import Location

log = logging.getLogger(__name__)


def read_lines(session_dir: str, locations: list[Location]) -> list[bytes]:
    """The lines at ``locations`` (in their order), one pread per segment touched."""
    lines: list[bytes] = []
    for segment, group in groupby(locations, key=itemgetter(1)):  # (seq, segment, offset, length)
        spans = list(group)
        path = os.path.join(session_dir, segments.segment_name(segment))
        try:
            lines.extend(segments.read_lines(path, [loc[2] for loc in spans], [loc[3] for loc in spans]))
        except OSError as exc:
            log.error("read of %s failed: %s", path, exc)
            raise StorageError(f"the log of session {os.path.basename(session_dir)!r} could not be read") from None
    return lines
