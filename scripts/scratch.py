"""Clearing away a finished benchmark run's files without slowing the runs after it.

On a filesystem like this machine's root (ext4 without a journal), creating a file
looks at each free inode it passes and skips those freed in the last half minute
(`recently_deleted` in fs/ext4/ialloc.c, which reads the inode table for each). After
a run unlinks its thousands of segment files, every file the next run creates pays
for that walk: in a profile of the broker at 28 MB/s, 17% of its samples were that
walk. A run's files are therefore emptied at once (their space comes back) and
unlinked only when the whole benchmark ends and removes its work directory.
"""

import os
import uuid
from pathlib import Path


def empty(path):
    """Truncates every file under `path` to zero bytes, keeping the inodes."""
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                os.truncate(os.path.join(root, f), 0)
            except OSError:
                pass


def set_aside(path, into):
    """Moves `path` into the directory `into` (on the same filesystem, so a rename)
    and empties it there: it is gone from where it was, and unlinked with `into`."""
    path = Path(path)
    if not path.exists():
        return
    into = Path(into)
    into.mkdir(parents=True, exist_ok=True)
    dest = into / uuid.uuid4().hex
    os.rename(path, dest)
    empty(dest)
