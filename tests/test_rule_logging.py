"""Unit tests of faceprep.rule_logging: the progress lines of long jobs."""

import logging

from faceprep.rule_logging import Progress


def test_progress_logs_at_most_every_interval_and_once_at_close(caplog):
    log = logging.getLogger("faceprep.test")
    with caplog.at_level(logging.INFO, logger="faceprep.test"):
        quiet = Progress(log, 75_000, seconds=3600)
        for _ in range(75):
            quiet.update(1000)
        quiet.close()
        every = Progress(log, 2_500, unit="pairs", seconds=0)
        every.update(1000)
        every.update(1500)
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 3
    assert lines[0].startswith("75,000 of 75,000 images, ") and lines[0].endswith(" images/s")
    assert lines[1].startswith("1,000 of 2,500 pairs, ") and lines[2].startswith("2,500 of 2,500 pairs, ")
