"""Output directories owned by one working copy of the workflow.

Snakemake's lock keeps two runs of one working directory apart, not two working copies
(two clones, two configs' directories, two people) writing into one output directory,
where each would overwrite the other's files and ``remove_unlisted`` delete them. A run
claims each output directory before its first job by creating ``OWNER_FILE`` in it, which
holds the working directory's path; a directory whose owner file names another working
directory is refused, naming it. Writing another working directory into the owner file
hands the directory over; deleting it releases the directory.

A directory nobody owns yet that already holds a file a run would write there under a name
it always gives (a rec's ``train.rec``, a shard directory's ``metadata.json``, a bin) is
refused too (``check_unowned_files``): no run of the workflow wrote that file, and a run
would overwrite it.
"""

import errno
import glob
import os

from faceprep.atomic import refuse_foreign
from faceprep.errors import OutputError

OWNER_FILE = ".faceprep-owner"


def working_copy():
    """The owner name of this process's runs: its working directory, resolved."""
    return os.path.realpath(os.getcwd())


def owner_of(directory):
    """The working copy that owns ``directory``, or None when nobody does (yet)."""
    path = os.path.join(directory, OWNER_FILE)
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError:
        refuse_foreign(path, expected="its owner file")
        raise
    with open(descriptor, "rb") as stream:
        return stream.read().decode(errors="replace").strip()


def _refusal(directory, owner, key):
    return OutputError(
        errno.EBUSY,
        f"{key}: {directory} is owned by the working copy at {owner} (its {OWNER_FILE}); a second "
        "working copy writing there would overwrite or delete the first one's files. Use another "
        f"directory, or release this one once no run of that copy writes there: rm {os.path.join(directory, OWNER_FILE)}",
        directory,
    )


def check_owner(directory, owner, key):
    """Raise OutputError (naming config ``key``) if another working copy owns ``directory``."""
    found = owner_of(directory)
    if found is not None and found != owner:
        raise _refusal(directory, found, key)


def check_unowned_files(directory, patterns, owner, key):
    """Raise OutputError (naming config ``key``) if no working copy owns ``directory`` and it
    already holds a file matching one of the glob ``patterns`` (what a run writes there)."""
    if owner_of(directory) is not None:
        return
    found = sorted({path for pattern in patterns for path in glob.glob(os.path.join(glob.escape(directory), pattern))})
    if found:
        more = f" and {len(found) - 1} more such files" if len(found) > 1 else ""
        raise OutputError(
            errno.EEXIST,
            f"{key}: {directory} already holds {found[0]}{more}, which no run of this workflow wrote there (it "
            f"has no {OWNER_FILE}), and a run would overwrite it. Move it away or use another directory; to "
            f"replace it with this working copy's output, claim the directory: echo {owner} > "
            f"{os.path.join(directory, OWNER_FILE)}",
            directory,
        )


def claim(directory, owner, key):
    """Make ``owner`` the owner of ``directory`` (created if missing); True if this call
    created the claim. The owner file appears whole or not at all (a hard link of a
    written temporary), so of two copies claiming at once exactly one wins."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, OWNER_FILE)
    temporary = f"{path}.{os.getpid()}.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    try:
        with open(descriptor, "wb") as stream:
            stream.write(f"{owner}\n".encode())
        os.link(temporary, path, follow_symlinks=False)
        return True
    except FileExistsError:
        check_owner(directory, owner, key)
        return False
    finally:
        os.unlink(temporary)


def claim_all(directories, owner):
    """Claim every ``{key: directory}``; on a refusal, release the claims made by this call
    and raise it, so a refused run leaves no owner file behind."""
    made = []
    try:
        for key, directory in sorted(directories.items(), key=lambda item: item[1]):
            if claim(directory, owner, key):
                made.append(directory)
    except BaseException:
        for directory in made:
            os.unlink(os.path.join(directory, OWNER_FILE))
        raise
