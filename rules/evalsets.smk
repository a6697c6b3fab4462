# Evaluation sets both ways (faceprep.evalsets): each configured set's images and pairs
# packed into a bin, and each dataset's reformatted bins written out as images and pairs.


# The bin goes to the configured path, written to a temporary name and renamed; the summary
# (counts, re-encoded images, TensorFlow's verification) marks it done, as for shards.
rule pack_evalset:
    input:
        images=evalset_setting("images"),
        pairs=evalset_pairs_files,
        images_changed=evalset_images_changed,
    output:
        summary="results/evalsets/{evalset}.json",
        images_read="results/evalsets/{evalset}_images.txt",
    log:
        "logs/evalsets/{evalset}.log",
    benchmark:
        "benchmarks/evalsets/{evalset}.tsv"
    conda:
        "../envs/tensorflow.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        pairs=evalset_setting("pairs"),
        bin=evalset_setting("bin"),
        reencode=config["reencode"],
        jpeg_quality=config["jpeg_quality"],
    script:
        "../scripts/pack_evalset.py"


rule export_bin_images:
    input:
        bin=bin_of_images_dir,
    output:
        images=directory("{bin_images_dir}/{bin}"),
    log:
        "logs/export_bin_images{bin_images_dir}/{bin}.log",
    conda:
        "../envs/faceprep.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/export_bin_images.py"


rule draw_evalset_pairs:
    input:
        summary=rules.pack_evalset.output.summary,
    output:
        figure=report(
            "results/evalsets/report/{evalset}_pairs.png",
            caption="../report/evalset_pairs.rst",
            category="evaluation sets",
            labels={"figure": "{evalset} pairs"},
        ),
    log:
        "logs/evalsets/draw_pairs/{evalset}.log",
    conda:
        "../envs/report.yaml"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=15,
    params:
        bin=evalset_setting("bin"),
        pairs=12,
    script:
        "../scripts/draw_evalset_pairs.py"
