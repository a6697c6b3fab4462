"""What the folder-tree tests share: where a plan of a tree is written."""

PLAN_FILES = ("rows.npy", "names.txt", "skipped.tsv", "identities.txt", "directories.txt")


def plan_files(directory):
    """Where plan_tree writes its rows, names, skipped files, identities and the directories
    it read, in ``directory``."""
    return [directory / name for name in PLAN_FILES]
