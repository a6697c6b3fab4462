"""Verification of an extracted ``<images>/<label>/<key>.jpg`` tree against its plan and manifests."""

import os
import zlib

from faceprep.folders import read_manifest
from faceprep.insightface import DatasetError

# Problems named in a failed verification's message (all are counted).
SHOWN_PROBLEMS = 20


def verify_extraction(plan, manifest_paths, images_dir, label_mode="first", check_crc=False):
    """Check the tree against the plan and the manifests; return a summary or raise DatasetError.

    Every manifest row must name a file of its label directory. Directories are listed
    (once per chunk) rather than each file stat'ed: extract_chunk already checked that
    every file was written whole. ``check_crc`` reads every file back and compares its
    size and CRC32 with the manifest.
    """
    # Only the first few file problems are kept: a tree deleted by mistake would otherwise
    # hold one message per image in memory.
    file_problems, file_problem_count = [], 0
    images = total_bytes = 0
    labels = set()
    for manifest_path in manifest_paths:
        rows = read_manifest(manifest_path)
        images += len(rows)
        listed_directory, listed = None, set()
        for relative, class_label, size, crc in sorted(rows):
            total_bytes += size
            labels.add(class_label)
            directory, _, name = relative.rpartition("/")
            if directory != listed_directory:
                listed_directory = directory
                try:
                    listed = set(os.listdir(os.path.join(images_dir, directory)))
                except FileNotFoundError:
                    listed = set()
            path = os.path.join(images_dir, relative)
            problem = None
            if name not in listed:
                problem = f"{path}: listed in {manifest_path} but missing"
            elif check_crc:
                with open(path, "rb") as stream:
                    data = stream.read()
                if len(data) != size:
                    problem = f"{path}: {len(data)} bytes, {manifest_path} says {size}"
                elif zlib.crc32(data) != crc:
                    problem = f"{path}: CRC32 differs from {manifest_path}"
            if problem:
                file_problem_count += 1
                if len(file_problems) < SHOWN_PROBLEMS:
                    file_problems.append(problem)
    problems = []
    if len(manifest_paths) != len(plan["chunks"]):
        problems.append(f"{len(manifest_paths)} chunk manifests, the plan has {len(plan['chunks'])} chunks")
    if images != plan["images"]:
        problems.append(f"{images} images extracted, the plan of the {plan['layout']} dataset has {plan['images']}")
    # With label sums, images of one identity may land in several folders.
    if label_mode == "first" and plan["identities"] is not None and len(labels) != plan["identities"]:
        problems.append(
            f"{len(labels)} distinct labels extracted, the {plan['identities_from']} says {plan['identities']} identities"
        )
    summary = {
        "layout": plan["layout"],
        "images": images,
        "expected_images": plan["images"],
        "identities": plan["identities"],
        "distinct_labels": len(labels),
        "bytes": total_bytes,
        "chunks": len(manifest_paths),
        "crc_checked": check_crc,
    }
    if problems or file_problems:
        count = len(problems) + file_problem_count
        shown = "\n  ".join(problems + file_problems)
        unshown = file_problem_count - len(file_problems)
        more = f"\n  ... and {unshown} more files" if unshown else ""
        raise DatasetError(f"verification of {images_dir} failed ({count} problems):\n  {shown}{more}")
    return summary
