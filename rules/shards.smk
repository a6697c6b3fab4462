# Shards (WebDataset tar, TFRecord): a chunk's images become its shards of each format on
# (shard_size images or fewer each, faceprep.shards). Built only for datasets with a shard
# format in their outputs.
#
# A shard stores each image's class (the rank of its label among all distinct labels), so
# every label must be known before any shard is written, and labels come only from the
# image records: scan_labels reads the IRHeaders of a scan chunk (one per job slot, at most
# 200,000 records: faceprep.chunking.scan_positions), class_table merges them.
#
# Shards are written by their own jobs, one per chunk and format, not by the folder
# extraction's chunk job: each output then resumes on its own (a format switched on later
# writes only its shards; folders do not wait for the class table), at the cost of one
# more sequential read of the chunk's records per format, which the page cache serves
# when the rec fits in it.


rule scan_labels:
    input:
        unpack(dataset_source),
        plan=rules.plan_chunks.output.plan,
        rows=rules.plan_chunks.output.rows,
        names=rules.plan_chunks.output.names,
    output:
        labels="results/{dataset}/labels/chunk_{chunk}.npy",
        row_labels="results/{dataset}/labels/rows_{chunk}.npy",
        # Each row's image framed as a record of the dataset's rec (order_rec); empty for a
        # dataset without 'rec' in its outputs.
        record_bytes="results/{dataset}/labels/record_bytes_{chunk}.npy",
    log:
        "logs/{dataset}/scan_labels/{chunk}.log",
    conda:
        "../envs/faceprep.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=30,
    params:
        label_mode=config["label"],
        source_kind=dataset_source_kind,
        source_dir=dataset_source_dir,
        record_sizes=dataset_writes_rec,
    script:
        "../scripts/scan_labels.py"


rule class_table:
    input:
        labels=chunk_scan_files("labels"),
        identities=rules.plan_chunks.output.identities,
    output:
        table="results/{dataset}/classes.tsv",
    log:
        "logs/{dataset}/class_table.log",
    conda:
        "../envs/faceprep.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    script:
        "../scripts/class_table.py"


rule shuffle_shard_rows:
    input:
        rows=rules.plan_chunks.output.rows,
    output:
        rows="results/{dataset}/shuffled_rows.npy",
    log:
        "logs/{dataset}/shuffle_shard_rows.log",
    conda:
        "../envs/faceprep.yaml"
    threads: 1
    resources:
        mem_mb=input_rows_mem_mb,
        runtime=30,
    params:
        seed=config["shard_seed"],
    script:
        "../scripts/shuffle_shard_rows.py"


# The summary (per shard: file, images, bytes, SHA-256) marks the chunk's shards done, as a
# manifest marks a folder chunk: the shards go to the configured shards directory, each
# written to a temporary name and renamed before the summary is written.
rule write_shard:
    input:
        unpack(dataset_source),
        plan=rules.plan_chunks.output.plan,
        rows=shard_rows,
        names=rules.plan_chunks.output.names,
        classes=rules.class_table.output.table,
    output:
        summary="results/{dataset}/shards/{format}/chunk_{chunk}.json",
    log:
        "logs/{dataset}/write_shard/{format}/{chunk}.log",
    benchmark:
        "benchmarks/{dataset}/write_shard/{format}/{chunk}.tsv"
    conda:
        "../envs/faceprep.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=60,
    params:
        shards_dir=dataset_shards_dir,
        label_mode=config["label"],
        shard_size=dataset_shard_size,
        source_kind=dataset_source_kind,
        source_dir=dataset_source_dir,
    script:
        "../scripts/write_shard.py"


# The sidecar readers start from: counts, class table, and every shard of every format.
rule shard_metadata:
    input:
        unpack(shard_metadata_inputs),
    output:
        metadata="{shards_dir}/metadata.json",
        classes="{shards_dir}/classes.tsv",
    log:
        "logs/shard_metadata{shards_dir}.log",
    conda:
        "../envs/faceprep.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        dataset=shards_dataset,
        label_mode=config["label"],
        shard_order=shards_dataset_order,
        shard_seed=config["shard_seed"],
    script:
        "../scripts/shard_metadata.py"


# The chunk summaries are inputs, not params, though only the metadata is read: a param that
# depends on the checkpoint is '<TBD>' in Snakemake's first pass over the DAG, which counts as
# a changed param and reran every job after this one on every run.
rule verify_shards:
    input:
        metadata=dataset_shard_metadata,
        plan=rules.plan_chunks.output.plan,
        chunk_summaries=format_shard_summaries,
    output:
        summary="results/{dataset}/shards_{format}.json",
    log:
        "logs/{dataset}/verify_shards/{format}.log",
    conda:
        "../envs/faceprep.yaml"
    # Two shards hashed at a time (more would wait on the disk or the walks' GIL).
    threads: 2
    resources:
        mem_mb=500,
        runtime=60,
    params:
        shard_size=dataset_shard_size,
        remove_unlisted=config["remove_unlisted"],
    script:
        "../scripts/verify_shards.py"
