# Reformatted bins are written into the configured bins_out (an absolute path),
# so the log and benchmark paths below get no '//'.
rule reformat_bin:
    input:
        bin=source_bin,
    output:
        bin="{bins_dir}/{bin}.bin",
    log:
        "logs/reformat_bin{bins_dir}/{bin}.log",
    benchmark:
        "benchmarks/reformat_bin{bins_dir}/{bin}.tsv"
    conda:
        "../envs/tensorflow.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        reencode=config["reencode"],
        jpeg_quality=config["jpeg_quality"],
    script:
        "../scripts/reformat_bin.py"


rule verify_bin:
    input:
        unpack(bin_pair),
    output:
        summary="results/{dataset}/bins/{bin}.json",
    log:
        "logs/{dataset}/verify_bin/{bin}.log",
    benchmark:
        "benchmarks/{dataset}/verify_bin/{bin}.tsv"
    conda:
        "../envs/tensorflow.yaml"
    threads: 2
    resources:
        mem_mb=2000,
        runtime=30,
    params:
        jpeg_quality=config["jpeg_quality"],
    script:
        "../scripts/verify_bin.py"
