"""Output directories owned by one working copy of the workflow.

Snakemake's lock keeps two runs of one working directory apart, not two working copies
(two clones, two configs' directories, two people) writing into one output directory,
where each would overwrite the other's files and ``remove_unlisted`` delete them. A run
claims each output directory before its first job by creating ``OWNER_FILE`` in it, which
holds the working directory's path; a directory whose owner file names another working
directory is refused, naming it. Deleting the owner file releases the directory.
"""

import errno
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
