"""Crash-safe writes: a file or a folder appears under its final name complete, or not at all.

Everything is first written under a temporary name in the destination's own
folder (so the final rename stays on one file system, where it is atomic) and
then renamed into place; a failure removes the temporary copy.
"""

import contextlib
import os
import shutil
import stat
import tempfile
import uuid


def temporary_sibling(path, kind="file"):
    """A fresh hidden name beside ``path`` (``.<name>.<random>.tmp``), not created."""
    parent, name = os.path.split(os.path.abspath(os.fspath(path)))
    return os.path.join(parent, f".{name}.{uuid.uuid4().hex[:12]}.{kind}.tmp")


@contextlib.contextmanager
def open_for_writing(path, mode="w", *, overwrite=False, **kwargs):
    """A new file object whose content appears under ``path`` when the block ends.

    Every file skunetseg writes (masks, CSV files, plots, histories) goes
    through here: the content is written to a temporary file beside ``path``
    (``.<name>.<random>.file.tmp``) and renamed into place once it is complete
    and closed. An error while writing (a full disk, a file-size limit, an
    exception in the block) removes the temporary file and leaves ``path`` as
    it was: absent, or the complete earlier file. Without ``overwrite``, an
    existing ``path`` raises FileExistsError and is never replaced, even when
    another process creates it meanwhile (the final step is a hard link, which
    fails when the name is taken; where hard links are not supported, the name
    is checked just before the rename). A replaced file keeps its permissions.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write.
    mode : {"w", "wb"}, default="w"
        Text or binary.
    overwrite : bool, default=False
        Replace an existing file.
    **kwargs
        Passed to :func:`open` (``newline``, ``encoding``).
    """
    path = os.fspath(path)
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb'; got {mode!r}.")
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(path)
    temporary = temporary_sibling(path)
    try:
        with open(temporary, mode.replace("w", "x"), **kwargs) as file:
            yield file
        publish(temporary, path, overwrite)
    finally:
        if os.path.lexists(temporary):
            os.remove(temporary)


def publish(temporary, path, overwrite):
    """Rename the complete file ``temporary`` to ``path``, replacing a file there only
    with ``overwrite`` (see :func:`open_for_writing`)."""
    if overwrite:
        with contextlib.suppress(OSError):  # a replaced file keeps its permissions
            os.chmod(temporary, stat.S_IMODE(os.stat(path).st_mode))
        os.replace(temporary, path)
        return
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise
    except OSError:  # no hard links on this file system
        if os.path.lexists(path):
            raise FileExistsError(path) from None
        os.replace(temporary, path)


def write_bytes(path, data, *, overwrite=False):
    """Write ``data`` to ``path`` through :func:`open_for_writing`."""
    with open_for_writing(path, "wb", overwrite=overwrite) as file:
        file.write(data)


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


@contextlib.contextmanager
def parent_lock(path):
    """Hold an exclusive lock on the folder that holds ``path`` (POSIX ``flock``).

    Two processes (or threads) swapping folders in one place take turns, so
    that neither deletes the other's backup or renames onto its half-done
    swap. Where the lock is not available (Windows, some network file
    systems), the block runs unlocked.
    """
    try:
        import fcntl

        descriptor = os.open(os.path.dirname(os.path.abspath(os.fspath(path))), os.O_RDONLY)
    except (ImportError, OSError):
        yield
        return
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX)
        except OSError:
            pass  # no locks here: unlocked
        yield
    finally:
        os.close(descriptor)  # releases the lock


def replace_folder(staging, path, *, overwrite=True, check=None):
    """Move the complete folder ``staging`` to ``path``, replacing what is there.

    At every instant one complete version is findable: the old ``path`` is
    first renamed to :func:`backup_path`, then ``staging`` is renamed to
    ``path``, then the backup is deleted. A crash between the two renames
    leaves the old version under the backup name (which
    :func:`skunetseg.load` falls back to); a failed second rename puts the old
    version back. The swap holds :func:`parent_lock`: concurrent swaps to one
    ``path`` take turns, the last one wins.

    Parameters
    ----------
    staging : str
        The complete new folder, beside ``path``.
    path : str or os.PathLike
        Where it goes.
    overwrite : bool, default=True
        False: raise FileExistsError when ``path`` exists by the time of the
        swap (another process created it while ``staging`` was written).
    check : callable, default=None
        Called with ``path`` under the lock before an existing ``path`` is
        replaced; it raises to refuse (what is there is not what may be
        replaced).
    """
    path = os.path.abspath(os.fspath(path))
    backup = backup_path(path)
    with parent_lock(path):
        if os.path.lexists(path):
            if not overwrite:
                raise FileExistsError(
                    f"{path!r} was created by another process while this one was writing; "
                    "nothing was replaced. Pass overwrite=True to replace it.")
            if check is not None:
                check(path)
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
