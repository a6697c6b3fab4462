"""Whether a source changed since the outputs made from it, for Snakemake to see.

Snakemake judges an input by its own modification time, and passes over one that is newer
but holds what it held when the outputs were made (files up to 1 MB): a directory input
says nothing of a file added deep inside it or rewritten in place, so a finished run would
leave its outputs standing, silently short of the source or holding what is gone. So the
paths a job read are listed beside its outputs:

- a folder tree's plan lists every directory it read (faceprep.sources.tree): adding,
  removing or renaming an entry changes the modification time of the directory holding it,
  a removed directory its parent's. A file rewritten in place under its old name changes
  no directory and is not seen (touch its directory, or ``--forcerun plan_chunks``);
- an evaluation set's pack lists every image file it read (faceprep.evalsets), a file
  rewritten in place included.

At every start of the workflow, ``stamp_changes`` gives a stamp file the modification time
of the listed path changed last, and writes its path and that time in the stamp, so that
its content changes with the time. The stamp is an input of the jobs reading the source,
under the same path run after run (a changing set of input paths would make Snakemake run
them again each time): once it is newer than their outputs, they run again. It costs a
``stat`` per listed path at every start.
"""

import os

from faceprep.atomic import write_bytes


def newest_listed(root, list_path):
    """``(relative path, modification time in ns)`` of the path listed in ``list_path``
    (relative to ``root``, one a line, ``.`` for ``root`` itself) that was modified last;
    None if there is no list yet. A listed path that is gone is passed over: the directory
    that held it changed when it went."""
    try:
        with open(list_path, "rb") as stream:
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


def stamp_changes(root, list_path, stamp_path):
    """Give ``stamp_path`` the modification time of the path listed in ``list_path`` that
    changed last (the start of 1970 before there is a list), and write in it that path
    (relative to ``root``, as on disk) and the time in ns, tab-separated."""
    newest = newest_listed(root, list_path)
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
