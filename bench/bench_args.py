"""The command line of ``make bench`` (``bench/run_bench.py``): its presets and checks."""

import argparse
from pathlib import Path

from scale import SCALES

# An even count, so each of the two runs first in half the rounds: in the first 1 M-image run
# here (3 rounds) the first run of every round, whichever contender, took 23-30 s of kernel time,
# the second 12.5-13.9 s.
EXTRACTION_ONLY_DEFAULTS = dict(rounds=4)
DEFAULTS = dict(images=300_000, identities=5_000, bin_images=12_000, rounds=3, pool=4_000, seed=0,
                chunk_sizes="auto", trash_gb=40, settle=370)
SMOKE = dict(images=400, identities=20, bin_images=200, rounds=1, pool=60, chunk_sizes="100", settle=0)


def parse_args(argv, description):
    """The arguments of ``make bench`` (``run_bench.py``), whose docstring is ``description``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, help="image records in the full rec (default: %(default)s)")
    parser.add_argument("--identities", type=int, help="identities they are spread over (default: %(default)s)")
    parser.add_argument("--bin-images", type=int, help="images in each cfp_fp-like bin, even (default: %(default)s)")
    parser.add_argument("--rounds", type=int,
                        help="rounds over all contenders; medians are reported (default: %(default)s)")
    parser.add_argument("--pool", type=int,
                        help="distinct faces drawn and reused across records (default: %(default)s)")
    parser.add_argument("--seed", type=int, help="seed of the synthetic inputs (default: %(default)s)")
    parser.add_argument("--chunk-sizes",
                        help="chunk_size of the workflow runs: 'auto' (the workflow's default), or "
                             "comma-separated candidates, each run twice with --cores 2, the fastest used for "
                             "every workflow run (default: %(default)s)")
    parser.add_argument("--trash-gb", type=float,
                        help="removed run directories are kept (in <out>/trash) up to this size, then deleted "
                             "(default: %(default)s)")
    parser.add_argument("--settle", type=float,
                        help="seconds to wait after deleting trees before the next timed run; ext4 without a "
                             "journal avoids reusing inodes deleted less than 60 s, or 360 s, ago "
                             "(default: %(default)s)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "work", help="scratch directory (default: bench/work)")
    parser.add_argument("--report", type=Path, help="markdown section to write (default: <out>/report.md)")
    parser.add_argument("--rerender", action="store_true",
                        help="only write the report again from <out>/results.json (no runs)")
    parser.add_argument("--scale", choices=sorted(SCALES),
                        help="instead of the comparison: the workflow alone at a real dataset's record count "
                             "(ms1m: 5,822,653 images of 85,742 identities, tiny images; needs ~25 GB and 6 M inodes), "
                             "against --scale-base images of the same shape (bench/scale.py)")
    parser.add_argument("--scale-base", type=int, default=300_000,
                        help="the smaller record count --scale compares with (default: %(default)s)")
    parser.add_argument("--scale-cores", type=int, default=2, help="--cores of the --scale runs (default: %(default)s)")
    parser.add_argument("--extraction-only", action="store_true",
                        help="only the workflow (--cores 2) and two half-tree tar -x, for the extraction target "
                             "at a larger --images; inputs and results in <out>/extraction_only")
    parser.add_argument("--smoke", action="store_true",
                        help=f"tiny preset for the test suite: {', '.join(f'{k}={v}' for k, v in SMOKE.items())}")
    parser.set_defaults(**(DEFAULTS | (EXTRACTION_ONLY_DEFAULTS if "--extraction-only" in argv else {})
                           | (SMOKE if "--smoke" in argv else {})))
    args = parser.parse_args(argv)
    args.chunk_sizes = ["auto"] if args.chunk_sizes == "auto" else [int(size) for size in str(args.chunk_sizes).split(",")]
    if args.images < 4 or args.identities < 4 or args.images < args.identities:
        parser.error("--images and --identities must be at least 4, with at least one image per identity")
    if args.rounds < 1 or args.pool < 1 or args.chunk_sizes != ["auto"] and min(args.chunk_sizes) < 1:
        parser.error("--rounds, --pool and every chunk size must be at least 1")
    if args.chunk_sizes != ["auto"] and max(args.chunk_sizes) > args.images // 4:
        # Job memory grows with the chunk size; the rec of a quarter the size must hold whole
        # chunks of the same size for its peak RSS to show whether memory grows with the rec.
        parser.error(f"chunk sizes cannot exceed a quarter of --images ({args.images // 4})")
    if args.trash_gb < 0 or args.settle < 0:
        parser.error("--trash-gb and --settle cannot be negative")
    # Run directories, and the time of the last bulk deletion, are shared by both modes: a
    # benchmark started after the other one's deletion waits for it too (RunDirectories).
    args.runs = args.out.resolve()
    args.out = (args.out / "extraction_only" if args.extraction_only else args.out).resolve()
    if args.scale and not 4 <= args.scale_base < SCALES[args.scale][0]:
        parser.error(f"--scale-base must be from 4 to below {SCALES[args.scale][0]:,}")
    if args.scale:
        args.report = args.report.resolve() if args.report else None
    else:
        args.report = (args.report or args.out / "report.md").resolve()
    return args
