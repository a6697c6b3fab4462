"""Whether a folder tree changed since its plan, for Snakemake to see.

Snakemake judges a directory input by the directory's own modification time, so a file
added to, removed from or renamed in an identity directory would leave a finished run's
outputs standing, silently short of it or holding a file that is gone. Every directory the
plan read is listed in its directories file (faceprep.sources.tree); adding, removing or
renaming an entry changes the modification time of the directory holding it, a removed
directory its parent's.

At every start of the workflow, ``stamp_tree_changes`` gives a stamp file beside the plan
the modification time of the listed directory changed last, and writes both in the stamp. The
stamp is an input of every job reading the tree, under the same path run after run (a
changing set of input paths would make Snakemake plan again each time): once it is newer
than the plan, the tree is planned again and every output rewritten.

It costs a ``stat`` per directory (not per file) at every start. A file rewritten in place
under its old name changes no directory and is not seen: touch its directory, or run with
``--forcerun plan_chunks``.
"""

import os

from faceprep.atomic import write_bytes


def newest_directory(root, directories_path):
    """``(relative path, modification time in ns)`` of the directory listed in
    ``directories_path`` (relative to ``root``, one a line, ``.`` for ``root`` itself) that
    was modified last; None if there is no list yet. A listed directory that is gone is
    passed over: its parent changed when it went."""
    try:
        with open(directories_path, "rb") as stream:
            listed = stream.read().splitlines()
    except FileNotFoundError:
        return None
    prefix, newest = os.fsencode(root), None
    for relative in listed:
        try:
            modified = os.stat(os.path.join(prefix, relative)).st_mtime_ns
        except OSError:
            continue
        if newest is None or modified > newest[1]:
            newest = relative, modified
    return newest


def stamp_tree_changes(root, directories_path, stamp_path):
    """Give ``stamp_path`` the modification time of the directory of the tree at ``root``
    changed last (the start of 1970 before the tree's plan lists any), holding that
    directory's path relative to ``root`` (as on disk) and the time in ns, tab-separated.
    Its content changes with the time: Snakemake passes over an input newer than the
    outputs if it holds what it held when they were made."""
    newest = newest_directory(root, directories_path)
    relative, modified = newest if newest is not None else (b"", 0)
    content = b"%s\t%d\n" % (relative, modified)
    try:
        with open(stamp_path, "rb") as stream:
            unchanged = stream.read() == content
    except FileNotFoundError:
        unchanged = False
    if not unchanged:
        os.makedirs(os.path.dirname(stamp_path) or ".", exist_ok=True)
        write_bytes(stamp_path, content)
    os.utime(stamp_path, ns=(modified, modified))
