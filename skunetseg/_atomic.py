"""Crash-safe writes: a file or a folder appears under its final name complete, or not at all.

Everything is first written under a temporary name in the destination's own
folder (so the final rename stays on one file system, where it is atomic) and
then renamed into place; a failure removes the temporary copy.
"""

import os
import shutil
import tempfile
import uuid


def temporary_sibling(path, kind="file"):
    """A fresh hidden name beside ``path`` (``.<name>.<random>.tmp``), not created."""
    parent, name = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(parent, f".{name}.{uuid.uuid4().hex[:12]}.{kind}.tmp")


def write_bytes(path, data, *, overwrite=False):
    """Write ``data`` to ``path`` through a temporary file renamed into place.

    A crash or an error while writing leaves no file under ``path`` (an existing
    one stays as it was) and no temporary file. Without ``overwrite``, an
    existing ``path`` raises FileExistsError and is never replaced, even when
    another process creates it meanwhile (the final step is a hard link, which
    fails when the name is taken; where hard links are not supported, the name
    is checked just before the rename).
    """
    path = os.fspath(path)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(path)
    temporary = temporary_sibling(path)
    try:
        with open(temporary, "xb") as file:
            file.write(data)
        if overwrite:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise
            except OSError:  # no hard links on this file system
                if os.path.lexists(path):
                    raise FileExistsError(path) from None
                os.replace(temporary, path)
    finally:
        if os.path.lexists(temporary):
            os.remove(temporary)


def backup_path(path):
    """Where :func:`replace_folder` keeps the old ``path`` while it swaps in a new one."""
    parent, name = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(parent, f".{name}.skunetseg-backup")


def staging_folder(path):
    """Create and return an empty hidden folder beside ``path`` to build its new content in."""
    parent, name = os.path.split(os.path.abspath(os.fspath(path)))
    return tempfile.mkdtemp(prefix=f".{name}.", suffix=".staging.tmp", dir=parent)


def _remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


def replace_folder(staging, path):
    """Move the complete folder ``staging`` to ``path``, replacing what is there.

    At every instant one complete version is findable: the old ``path`` is
    first renamed to :func:`backup_path`, then ``staging`` is renamed to
    ``path``, then the backup is deleted. A crash between the two renames
    leaves the old version under the backup name (which
    :func:`skunetseg.load` falls back to); a failed second rename puts the old
    version back.
    """
    path = os.path.abspath(os.fspath(path))
    backup = backup_path(path)
    if os.path.lexists(path):
        if os.path.lexists(backup):
            _remove(backup)  # stale: left by an interrupted earlier save; path is complete
        os.replace(path, backup)
        try:
            os.replace(staging, path)
        except BaseException:
            os.replace(backup, path)
            raise
    else:
        # an interrupted earlier swap may have left the only old copy as the backup:
        # keep it until the new folder is in place
        os.replace(staging, path)
    if os.path.lexists(backup):
        _remove(backup)
