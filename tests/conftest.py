import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# The format package lives beside the rule scripts that use it.
sys.path.insert(0, str(REPO / "scripts"))


@pytest.fixture(scope="session")
def slurm():
    """A real single-node SLURM cluster (tests/slurm/cluster.sh), shared by the session."""
    from slurm.harness import slurm_cluster_for_tests

    with slurm_cluster_for_tests() as cluster:
        yield cluster


@pytest.fixture(scope="session")
def tf():
    import tensorflow

    return tensorflow


@pytest.fixture(scope="session")
def tf_reads(tf):
    """The definition the codec must follow: decode_jpeg(channels=3) yields an HxWx3 image."""

    def reads(data):
        try:
            return tf.io.decode_jpeg(data, channels=3).shape.rank == 3
        except tf.errors.InvalidArgumentError:
            return False

    return reads


@pytest.fixture(scope="session")
def sparse_rec(tmp_path_factory):
    """rec_samples' im2rec source rec, written once for the session; tests read it only."""
    from rec_samples import write_sparse_rec

    return write_sparse_rec(tmp_path_factory.mktemp("sparse_rec") / "src")
