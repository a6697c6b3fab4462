"""The registry of outputs: what a dataset's record stream can become, by config name.

``folders`` is the ``<images>/<label>/<key>.jpg`` tree (faceprep.folders); each shard format
is one module here declaring a ShardFormat; ``rec`` is a RecordIO rec (faceprep.outputs.rec).
The config check (faceprep.workflow_config: config/schema.yaml lists no names), the rules'
wildcards, the shard jobs, the metadata and the verification all read ``SHARD_FORMATS`` and
``OUTPUT_NAMES``.
"""

from faceprep.outputs import tfrecord, webdataset

FOLDERS, REC = "folders", "rec"
SHARD_FORMATS = {module.FORMAT.name: module.FORMAT for module in (webdataset, tfrecord)}
OUTPUT_NAMES = (FOLDERS, *SHARD_FORMATS, REC)
