# Figures and tables of `snakemake --report report.html`: one rule each, reading only
# finished outputs (no figure work in the extraction jobs). Captions: report/*.rst.


rule tabulate_extraction:
    input:
        summary=rules.verify_extraction.output.summary,
        plan=rules.plan_chunks.output.plan,
        manifests=chunk_manifests,
    output:
        table=report(
            "results/{dataset}/report/extraction.html",
            caption="../report/extraction_table.rst",
            category="{dataset}",
            subcategory="extraction",
            labels={"figure": "summary table"},
        ),
    log:
        "logs/{dataset}/tabulate_extraction.log",
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    params:
        benchmarks=chunk_benchmarks,
        source=dataset_source_dir,
        images_dir=dataset_images_dir,
    script:
        "../scripts/tabulate_extraction.py"


rule plot_identity_histogram:
    input:
        manifests=chunk_manifests,
    output:
        figure=report(
            "results/{dataset}/report/images_per_identity.svg",
            caption="../report/identity_histogram.rst",
            category="{dataset}",
            subcategory="extraction",
            labels={"figure": "images per identity"},
        ),
    log:
        "logs/{dataset}/plot_identity_histogram.log",
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    script:
        "../scripts/plot_identity_histogram.py"


# After the verification, so that the sheet shows a tree known to be complete.
rule draw_contact_sheet:
    input:
        manifests=chunk_manifests,
        summary=rules.verify_extraction.output.summary,
    output:
        figure=report(
            "results/{dataset}/report/contact_sheet.png",
            caption="../report/contact_sheet.rst",
            category="{dataset}",
            subcategory="extraction",
            labels={"figure": "contact sheet"},
        ),
    log:
        "logs/{dataset}/draw_contact_sheet.log",
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        images_dir=dataset_images_dir,
        # Six rows fit a laptop screen: the report centres a figure vertically, so the
        # top of a figure taller than the window is cut off.
        identities=6,
        faces=8,
    script:
        "../scripts/draw_contact_sheet.py"


rule tabulate_shards:
    input:
        metadata=dataset_shard_metadata,
        verifications=dataset_shard_verifications,
    output:
        table=report(
            "results/{dataset}/report/shards.html",
            caption="../report/shards_table.rst",
            category="{dataset}",
            subcategory="shards",
            labels={"figure": "shard table"},
        ),
    log:
        "logs/{dataset}/tabulate_shards.log",
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    script:
        "../scripts/tabulate_shards.py"


rule tabulate_rec:
    input:
        summary=rules.verify_rec.output.summary,
    output:
        table=report(
            "results/{dataset}/report/rec.html",
            caption="../report/rec_table.rst",
            category="{dataset}",
            subcategory="rec",
            labels={"figure": "rec table"},
        ),
    log:
        "logs/{dataset}/tabulate_rec.log",
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    params:
        rec_dir=dataset_rec_setting("rec"),
    script:
        "../scripts/tabulate_rec.py"


rule tabulate_bins:
    input:
        summaries=dataset_bin_summaries,
    output:
        table=report(
            "results/{dataset}/report/bins.html",
            caption="../report/bins_table.rst",
            category="{dataset}",
            subcategory="evaluation bins",
            labels={"figure": "summary table"},
        ),
    log:
        "logs/{dataset}/tabulate_bins.log",
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    params:
        bins=dataset_bins,
    script:
        "../scripts/tabulate_bins.py"


rule draw_bin_pairs:
    input:
        unpack(bin_pair),
        summary=rules.verify_bin.output.summary,
    output:
        figure=report(
            "results/{dataset}/report/{bin}_pairs.png",
            caption="../report/bin_pairs.rst",
            category="{dataset}",
            subcategory="evaluation bins",
            labels={"figure": "{bin}.bin pairs"},
        ),
    log:
        "logs/{dataset}/draw_bin_pairs/{bin}.log",
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    params:
        pairs=12,
    script:
        "../scripts/draw_bin_pairs.py"


rule draw_audit:
    input:
        unpack(dataset_source),
        audit=rules.join_audit.output.audit,
        rows=rules.plan_chunks.output.rows,
        names=rules.plan_chunks.output.names,
    output:
        page=report(
            "results/{dataset}/report/audit.html",
            caption="../report/audit.rst",
            category="{dataset}",
            subcategory="audit",
            labels={"figure": "audit"},
        ),
    log:
        "logs/{dataset}/draw_audit.log",
    conda:
        "../envs/faceprep.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=15,
    params:
        bins=audit_evaluation_bins,
        label_mode=config["label"],
        source_kind=dataset_source_kind,
        source_dir=dataset_source_dir,
    script:
        "../scripts/draw_audit.py"
