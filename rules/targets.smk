# The default target: every output of every configured dataset and evaluation set, each
# path taken from the rule that writes it.


def report_targets(dataset):
    """The figures and tables of a dataset in `snakemake --report`."""
    figures = []
    if dataset.folders:
        figures += [
            rules.tabulate_extraction.output.table,
            rules.plot_identity_histogram.output.figure,
            rules.draw_contact_sheet.output.figure,
        ]
    if dataset.shard_formats:
        figures.append(rules.tabulate_shards.output.table)
    if dataset.rec:
        figures.append(rules.tabulate_rec.output.table)
    if dataset.bins:
        figures.append(rules.tabulate_bins.output.table)
    if dataset.audit:
        figures.append(rules.draw_audit.output.page)
    pairs = [
        rules.draw_bin_pairs.output.figure.format(dataset=dataset.name, bin=bin_name)
        for bin_name in dataset.bins
    ]
    return [figure.format(dataset=dataset.name) for figure in figures] + pairs


def all_targets(wildcards):
    """Every output of every dataset, each path as its rule writes it."""
    targets = []
    for dataset in DATASETS.values():
        if dataset.folders:
            targets.append(
                rules.build_index.output.index.format(images_dir=dataset.images)
            )
            targets.append(
                rules.verify_extraction.output.summary.format(dataset=dataset.name)
            )
        if dataset.shard_formats:
            targets.append(
                rules.shard_metadata.output.metadata.format(shards_dir=dataset.shards)
            )
            targets.extend(
                rules.verify_shards.output.summary.format(
                    dataset=dataset.name, format=shard_format
                )
                for shard_format in dataset.shard_formats
            )
        if dataset.rec:
            targets.append(rules.assemble_rec.output.rec.format(rec_dir=dataset.rec))
            targets.append(rules.verify_rec.output.summary.format(dataset=dataset.name))
        for bin_name in dataset.bins:
            targets.append(
                rules.reformat_bin.output.bin.format(
                    bins_dir=dataset.bins_out, bin=bin_name
                )
            )
            targets.append(bin_summary(dataset.name, bin_name))
            if dataset.bin_images:
                targets.append(
                    rules.export_bin_images.output.images.format(
                        bin_images_dir=dataset.bin_images, bin=bin_name
                    )
                )
        if dataset.audit:
            targets.extend(
                path.format(dataset=dataset.name) for path in rules.join_audit.output
            )
        targets.extend(report_targets(dataset))
    for name in EVALSETS:
        targets.append(rules.pack_evalset.output.summary.format(evalset=name))
        targets.append(rules.draw_evalset_pairs.output.figure.format(evalset=name))
    return targets
