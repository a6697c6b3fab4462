# Input functions and settings of the output rules (shards, rec, bins, evaluation sets,
# audit): which files of which dataset each of their jobs reads or writes.


def dataset_shard_size(wildcards):
    """The dataset's shard_size, or the top-level one: images per shard, or 'auto'."""
    return DATASETS[wildcards.dataset].shard_size or config["shard_size"]


def dataset_writes_rec(wildcards):
    return DATASETS[wildcards.dataset].rec is not None


def chunk_scan_files(name):
    """An input function: scan_labels' output ``name`` of every scan chunk of a dataset
    (faceprep.chunking.scan_chunks), in order (``labels``: each scan chunk's distinct labels,
    ``row_labels``: each row's, ``record_bytes``: each row's record size in a rec)."""

    def files(wildcards):
        return expand(
            getattr(rules.scan_labels.output, name),
            dataset=wildcards.dataset,
            chunk=chunk_wildcards(len(scan_chunks(plan_of(wildcards.dataset)))),
        )

    return files


def shard_rows(wildcards):
    """The image rows a dataset's shards are cut from: the plan's, or their shuffle."""
    if DATASETS[wildcards.dataset].shard_order == "shuffled":
        return rules.shuffle_shard_rows.output.rows.format(dataset=wildcards.dataset)
    return rules.plan_chunks.output.rows.format(dataset=wildcards.dataset)


def dataset_shards_dir(wildcards):
    return DATASETS[wildcards.dataset].shards


def _shard_summaries_of(dataset_name, shard_format):
    return expand(
        rules.write_shard.output.summary,
        dataset=dataset_name,
        format=shard_format,
        chunk=chunks_of(dataset_name),
    )


def format_shard_summaries(wildcards):
    """The shard jobs' summaries of one format of a dataset, by chunk."""
    return _shard_summaries_of(wildcards.dataset, wildcards.format)


def shard_metadata_inputs(wildcards):
    """Plan, class table and every shard summary of the dataset writing into shards_dir,
    one list per shard format on."""
    dataset = dataset_by("shards", wildcards.shards_dir)
    inputs = {
        "plan": rules.plan_chunks.output.plan.format(dataset=dataset.name),
        "classes": rules.class_table.output.table.format(dataset=dataset.name),
    }
    for shard_format in dataset.shard_formats:
        inputs[shard_format] = _shard_summaries_of(dataset.name, shard_format)
    return inputs


def shards_dataset(wildcards):
    return dataset_by("shards", wildcards.shards_dir).name


def shards_dataset_order(wildcards):
    return dataset_by("shards", wildcards.shards_dir).shard_order


def dataset_shard_metadata(wildcards):
    return os.path.join(DATASETS[wildcards.dataset].shards, "metadata.json")


def dataset_shard_verifications(wildcards):
    return expand(
        rules.verify_shards.output.summary,
        dataset=wildcards.dataset,
        format=DATASETS[wildcards.dataset].shard_formats,
    )


def dataset_rec_setting(name):
    """An input function giving the dataset's rec setting ``name`` (rec_layout, ...)."""
    return lambda wildcards: getattr(DATASETS[wildcards.dataset], name)


def _rec_dataset(wildcards):
    return dataset_by("rec", wildcards.rec_dir)


def rec_dir_setting(name):
    """An input function giving the rec setting ``name`` of the dataset writing rec_dir."""
    return lambda wildcards: getattr(_rec_dataset(wildcards), name)


def rec_dataset_source(wildcards):
    return source_files(_rec_dataset(wildcards))


def rec_dataset_plan(wildcards):
    return rules.plan_chunks.output.plan.format(dataset=_rec_dataset(wildcards).name)


def rec_dataset_ordered_rows(wildcards):
    return rules.order_rec.output.rows.format(dataset=_rec_dataset(wildcards).name)


def rec_dataset_names(wildcards):
    return rules.plan_chunks.output.names.format(dataset=_rec_dataset(wildcards).name)


def rec_dataset_classes(wildcards):
    return rules.class_table.output.table.format(dataset=_rec_dataset(wildcards).name)


def rec_dataset_record_offsets(wildcards):
    return rules.order_rec.output.offsets.format(dataset=_rec_dataset(wildcards).name)


def _rec_part_indexes_of(dataset):
    return expand(
        rules.write_rec_part.output.index,
        rec_dir=dataset.rec,
        chunk=chunks_of(dataset.name),
    )


def rec_part_indexes(wildcards):
    """The index of every part of the rec being assembled in rec_dir, in chunk order."""
    return _rec_part_indexes_of(_rec_dataset(wildcards))


def rec_outputs_and_part_indexes(wildcards):
    """A dataset's assembled rec and its parts' indexes (their checksums), to verify."""
    dataset = DATASETS[wildcards.dataset]
    outputs = {
        name: path.format(rec_dir=dataset.rec)
        for name, path in rules.assemble_rec.output.items()
    }
    return outputs | {"indexes": _rec_part_indexes_of(dataset)}


def rec_dir_source_property(wildcards):
    """The source's property file, whose image size the rec's property falls back on when no
    image is a JPEG or PNG; '' when there is none."""
    return source_files(_rec_dataset(wildcards)).get("property", "")


def _source_bin(dataset, name):
    """The path of the dataset's evaluation bin ``name`` in its source."""
    return os.path.join(dataset.source, f"{name}.bin")


def _source_bins(dataset):
    """``{name: path}`` of the dataset's evaluation bins in its source."""
    return {name: _source_bin(dataset, name) for name in dataset.bins}


def source_bin(wildcards):
    return _source_bin(dataset_by("bins_out", wildcards.bins_dir), wildcards.bin)


def bin_pair(wildcards):
    """A dataset's source bin and its reformatted bin, for the verification."""
    dataset = DATASETS[wildcards.dataset]
    return {
        "source": _source_bin(dataset, wildcards.bin),
        "reformatted": os.path.join(dataset.bins_out, f"{wildcards.bin}.bin"),
    }


def dataset_bins(wildcards):
    return list(DATASETS[wildcards.dataset].bins)


def bin_summary(dataset_name, bin_name):
    """The verification summary of a bin: verify_bin's output, its path written only there."""
    return rules.verify_bin.output.summary.format(dataset=dataset_name, bin=bin_name)


def dataset_bin_summaries(wildcards):
    """The verification summary of every bin of a dataset, in the order of dataset_bins."""
    return [
        bin_summary(wildcards.dataset, bin_name)
        for bin_name in DATASETS[wildcards.dataset].bins
    ]


def evalset_images_changed(wildcards):
    return evalset_change_stamp(wildcards.evalset)


def evalset_pairs_files(wildcards):
    """The files an evaluation set's pairs are read from: a pairs file, or a CFP split's lists and folds."""
    return pairs_files(EVALSETS[wildcards.evalset].pairs)


def evalset_setting(name):
    """An input function giving the evaluation set's ``name`` (images, pairs, bin)."""
    return lambda wildcards: getattr(EVALSETS[wildcards.evalset], name)


def bin_of_images_dir(wildcards):
    """The reformatted bin a bin_images directory is written from."""
    dataset = dataset_by("bin_images", wildcards.bin_images_dir)
    return rules.reformat_bin.output.bin.format(
        bins_dir=dataset.bins_out, bin=wildcards.bin
    )


def audit_evaluation_bins(wildcards):
    """``{name: bin}`` of the evaluation images a dataset is searched for: its own bins
    (by name), every evalset's packed bin (evalsets.<name>) and each of audit_bins."""
    evalsets = {f"evalsets.{name}": evalset.bin for name, evalset in EVALSETS.items()}
    return _source_bins(DATASETS[wildcards.dataset]) | evalsets | AUDIT_BINS


def audit_evaluation_inputs(wildcards):
    """The dataset's bins, each evalset's summary (its bin is written before it) and the
    audit_bins."""
    return (
        _source_bins(DATASETS[wildcards.dataset])
        | {
            f"evalset_{name}": rules.pack_evalset.output.summary.format(evalset=name)
            for name in EVALSETS
        }
        | {
            f"audit_bin_{number}": path
            for number, path in enumerate(AUDIT_BINS.values())
        }
    )


def chunk_audit_findings(wildcards):
    return expand(
        rules.audit_chunk.output.findings,
        dataset=wildcards.dataset,
        chunk=chunks_of(wildcards.dataset),
    )


def chunk_audit_rows(wildcards):
    return expand(
        rules.audit_chunk.output.rows,
        dataset=wildcards.dataset,
        chunk=chunks_of(wildcards.dataset),
    )
