"""The data layer: read any supported record format, check it, render it with a template, tokenize it
with trained spans from character offsets, and serve it to training with bad records skipped.

    sample.py     Message, Sample, RecordProblem (stable `reason` slugs)
    readers.py    read_records, parse_record, load_samples (.json / .jsonl / .parquet)
    images.py     resolve_image_path, load_image, prepare_image
    templates.py  get_template, TEMPLATE_NAMES, Segment
    tokenize.py   encode_sample, Encoded
    dataset.py    SupervisedDataset, collate, BadSampleTracker (imports torch)
    check.py      check_dataset (what `vlmtune data check` runs)
"""
