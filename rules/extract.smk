checkpoint plan_chunks:
    input:
        unpack(dataset_source),
    output:
        plan="results/{dataset}/chunk_plan.json",
        rows="results/{dataset}/image_rows.npy",
        # A tree's image paths, one a line in key order, the files skipped, each class's
        # identity directory, one a line in class order, and every directory read (all empty
        # for a rec).
        names="results/{dataset}/image_names.txt",
        skipped="results/{dataset}/skipped_files.tsv",
        identities="results/{dataset}/identities.txt",
        directories="results/{dataset}/tree_directories.txt",
    log:
        "logs/{dataset}/plan_chunks.log",
    conda:
        "../envs/faceprep.yaml"
    threads: plan_threads
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        chunk_size=dataset_chunk_size,
        parallel_jobs=planned_parallel_jobs,
        source_kind=dataset_source_kind,
        source_dir=dataset_source_dir,
    script:
        "../scripts/plan_chunks.py"


rule extract_chunk:
    input:
        unpack(dataset_source),
        plan=rules.plan_chunks.output.plan,
        rows=rules.plan_chunks.output.rows,
        names=rules.plan_chunks.output.names,
    output:
        manifest="results/{dataset}/manifests/chunk_{chunk}.tsv",
    log:
        "logs/{dataset}/extract_chunk/{chunk}.log",
    benchmark:
        "benchmarks/{dataset}/extract_chunk/{chunk}.tsv"
    conda:
        "../envs/faceprep.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=60,
    params:
        images_dir=dataset_images_dir,
        label_mode=config["label"],
        source_kind=dataset_source_kind,
        source_dir=dataset_source_dir,
    script:
        "../scripts/extract_chunk.py"


# The index and its class table live beside the images directory (named as
# Keras_insightface names the index it writes for a folder); the directory is an
# absolute path, so the log path below gets no '//'.
rule build_index:
    input:
        manifests=index_chunk_manifests,
        identities=index_dataset_identities,
    output:
        index="{images_dir}_shuffle.npz",
        classes="{images_dir}_classes.tsv",
    log:
        "logs/build_index{images_dir}.log",
    conda:
        "../envs/faceprep.yaml"
    threads: 1
    resources:
        mem_mb=input_rows_mem_mb,
        runtime=30,
    params:
        seed=config["index_seed"],
    script:
        "../scripts/build_index.py"


rule verify_extraction:
    input:
        manifests=chunk_manifests,
        plan=rules.plan_chunks.output.plan,
    output:
        summary="results/{dataset}/extraction.json",
    log:
        "logs/{dataset}/verify_extraction.log",
    conda:
        "../envs/faceprep.yaml"
    threads: 1
    resources:
        mem_mb=input_rows_mem_mb,
        runtime=60,
    params:
        images_dir=dataset_images_dir,
        label_mode=config["label"],
        check_crc=config["verify_crc"],
        remove_unlisted=config["remove_unlisted"],
    script:
        "../scripts/verify_extraction.py"
