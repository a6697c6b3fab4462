rule make_demo_dataset:
    output:
        rec=os.path.join("resources/{dataset}", REC_NAME),
        idx=os.path.join("resources/{dataset}", IDX_NAME),
        property=os.path.join("resources/{dataset}", PROPERTY_NAME),
        bins=multiext("resources/{dataset}/", "lfw.bin", "cfp_fp.bin", "agedb_30.bin"),
    log:
        "logs/{dataset}/make_demo_dataset.log",
    conda:
        "../envs/faceprep.yaml"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        demo=demo_settings,
    script:
        "../scripts/make_demo_dataset.py"
