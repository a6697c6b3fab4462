"""Logging set-up shared by the rule scripts."""

import logging
import sys
import time


def log_to(path):
    """Log to the rule's log file and to stderr; an uncaught error is logged as one clear line.

    The error line goes to the log file too, so `snakemake` users find the cause
    (file, record key, image index) where the failed job's log points them.
    """
    open(path, "w").close()
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        # A folder tree's file names need not be UTF-8 (Linux names are bytes): such a name
        # is logged with its undecodable bytes escaped, as stderr writes it, not dropped.
        handlers=[logging.FileHandler(path, mode="a", errors="backslashreplace"), logging.StreamHandler(sys.stderr)],
    )

    def log_uncaught(kind, error, traceback):
        logging.getLogger("faceprep").error("%s: %s", kind.__name__, error)
        sys.__excepthook__(kind, error, traceback)

    sys.excepthook = log_uncaught
    return logging.getLogger("faceprep")


class Progress:
    """Log ``done of total <unit>`` with the rate so far at most every ``seconds`` (a job's
    log then shows how far a long job is), and once at ``close``; ``update(count)`` adds."""

    def __init__(self, log, total, unit="images", seconds=10):
        self.log, self.total, self.unit, self.seconds = log, total, unit, seconds
        self.done = 0
        self._started = self._logged = time.monotonic()

    def update(self, count):
        self.done += count
        if time.monotonic() - self._logged >= self.seconds:
            self._log()

    def close(self):
        self._log()

    def _log(self):
        self._logged = time.monotonic()
        elapsed = self._logged - self._started
        rate = f", {self.done / elapsed:,.0f} {self.unit}/s" if elapsed > 0 else ""
        self.log.info("%s of %s %s%s", f"{self.done:,}", f"{self.total:,}", self.unit, rate)
