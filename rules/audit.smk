# The audit (faceprep.audit): every image of a dataset decoded once per chunk, its findings
# joined into results/<dataset>/audit.json and exclude.txt. Outputs are never touched.


# The images of the dataset's evaluation bins, of every evalset and of audit_bins, indexed
# once for the chunks' search for them.
rule index_evaluation_images:
    input:
        unpack(audit_evaluation_inputs),
    output:
        grays="results/{dataset}/audit/evaluation_grays.npy",
        features="results/{dataset}/audit/evaluation_features.npy",
        images="results/{dataset}/audit/evaluation_images.json",
    log:
        "logs/{dataset}/index_evaluation_images.log",
    benchmark:
        "benchmarks/{dataset}/index_evaluation_images.tsv"
    conda:
        "../envs/faceprep.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        bins=audit_evaluation_bins,
    script:
        "../scripts/index_evaluation_images.py"


rule audit_chunk:
    input:
        unpack(dataset_source),
        plan=rules.plan_chunks.output.plan,
        rows=rules.plan_chunks.output.rows,
        names=rules.plan_chunks.output.names,
        grays=rules.index_evaluation_images.output.grays,
        features=rules.index_evaluation_images.output.features,
        images=rules.index_evaluation_images.output.images,
    output:
        findings="results/{dataset}/audit/chunk_{chunk}.json",
        rows="results/{dataset}/audit/chunk_{chunk}.npy",
    log:
        "logs/{dataset}/audit_chunk/{chunk}.log",
    benchmark:
        "benchmarks/{dataset}/audit_chunk/{chunk}.tsv"
    conda:
        "../envs/faceprep.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=60,
    params:
        label_mode=config["label"],
        source_kind=dataset_source_kind,
        source_dir=dataset_source_dir,
    script:
        "../scripts/audit_chunk.py"


rule join_audit:
    input:
        findings=chunk_audit_findings,
        rows=chunk_audit_rows,
        plan_rows=rules.plan_chunks.output.rows,
        names=rules.plan_chunks.output.names,
    output:
        audit="results/{dataset}/audit.json",
        exclude="results/{dataset}/exclude.txt",
    log:
        "logs/{dataset}/join_audit.log",
    benchmark:
        "benchmarks/{dataset}/join_audit.tsv"
    conda:
        "../envs/faceprep.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=30,
    params:
        source_kind=dataset_source_kind,
    script:
        "../scripts/join_audit.py"
