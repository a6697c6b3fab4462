# A RecordIO rec (faceprep.outputs.rec): the images in output order (class by class, or a
# seeded shuffle), each record's place known from the sizes the plan or the label scan
# found, cut at the plan's chunk boundaries into parts that their own jobs write in place
# into train.rec.partial, then assembled (header and identity records around them, idx,
# lst, property; renamed to train.rec) and read back. Built only for datasets with 'rec'
# in their outputs.


rule order_rec:
    input:
        plan=rules.plan_chunks.output.plan,
        rows=rules.plan_chunks.output.rows,
        classes=rules.class_table.output.table,
        row_labels=chunk_scan_files("row_labels"),
        record_bytes=chunk_scan_files("record_bytes"),
    output:
        rows="results/{dataset}/rec/ordered_rows.npy",
        offsets="results/{dataset}/rec/record_offsets.npy",
    log:
        "logs/{dataset}/order_rec.log",
    conda:
        "../envs/faceprep.yaml"
    threads: 1
    resources:
        mem_mb=input_rows_mem_mb,
        runtime=30,
    params:
        layout=dataset_rec_setting("rec_layout"),
        order=dataset_rec_setting("rec_order"),
        seed=dataset_rec_setting("rec_seed"),
    script:
        "../scripts/order_rec.py"


# A part's bytes go into train.rec.partial, which no rule declares: every part job writes
# its own range of it. Its output is the part's index (payload checksums, image sizes, the
# range), written once the range is on disk and removed once the rec is verified.
rule write_rec_part:
    input:
        unpack(rec_dataset_source),
        plan=rec_dataset_plan,
        rows=rec_dataset_ordered_rows,
        offsets=rec_dataset_record_offsets,
        names=rec_dataset_names,
        classes=rec_dataset_classes,
    output:
        index=temp("{rec_dir}/train.rec.part-{chunk}.npz"),
    log:
        "logs/write_rec_part{rec_dir}/{chunk}.log",
    benchmark:
        "benchmarks/write_rec_part{rec_dir}/{chunk}.tsv"
    conda:
        "../envs/faceprep.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=60,
    params:
        layout=rec_dir_setting("rec_layout"),
        label_mode=config["label"],
        source_kind=rec_dir_setting("source_kind"),
        source_dir=rec_dir_setting("source"),
    script:
        "../scripts/write_rec_part.py"


rule assemble_rec:
    input:
        indexes=rec_part_indexes,
        rows=rec_dataset_ordered_rows,
        offsets=rec_dataset_record_offsets,
        names=rec_dataset_names,
    output:
        rec=os.path.join("{rec_dir}", REC_NAME),
        idx=os.path.join("{rec_dir}", IDX_NAME),
        lst=os.path.join("{rec_dir}", LST_NAME),
        property=os.path.join("{rec_dir}", PROPERTY_NAME),
    log:
        "logs/assemble_rec{rec_dir}.log",
    benchmark:
        "benchmarks/assemble_rec{rec_dir}.tsv"
    conda:
        "../envs/faceprep.yaml"
    threads: 1
    resources:
        mem_mb=input_rows_mem_mb,
        runtime=60,
    params:
        layout=rec_dir_setting("rec_layout"),
        source_property=rec_dir_source_property,
        source_kind=rec_dir_setting("source_kind"),
    script:
        "../scripts/assemble_rec.py"


rule verify_rec:
    input:
        unpack(rec_outputs_and_part_indexes),
        rows=rules.order_rec.output.rows,
    output:
        summary="results/{dataset}/rec.json",
    log:
        "logs/{dataset}/verify_rec.log",
    conda:
        "../envs/faceprep.yaml"
    threads: 1
    resources:
        mem_mb=input_rows_mem_mb,
        runtime=60,
    params:
        layout=dataset_rec_setting("rec_layout"),
    script:
        "../scripts/verify_rec.py"
