"""A test that needs what this machine lacks: a bare ``pytest`` skips it, ``make test`` fails it.

``make test`` (which CI runs) sets FACEPREP_REQUIRE_ALL, so a green ``make test`` has run
every test, on a laptop as in CI.
"""

import os

import pytest

REQUIRE_ALL = "FACEPREP_REQUIRE_ALL"


def lacks(reason):
    """Skip the calling test for ``reason``; fail it instead when FACEPREP_REQUIRE_ALL is set."""
    if os.environ.get(REQUIRE_ALL):
        pytest.fail(f"{reason} ({REQUIRE_ALL} is set, as by `make test`: every test must run)", pytrace=False)
    pytest.skip(reason)
