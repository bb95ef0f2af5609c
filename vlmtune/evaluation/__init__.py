"""Benchmarks and the generation engine behind `vlmtune eval` and evaluation during training.

    items.py          EvalItem / ImageRef: the question type every reader produces
    mmbench.py        MMBench / CCBench TSV, LLaVA's prompt, CircularEval, the submission spreadsheet
    scienceqa.py      LLaVA's ScienceQA question file + problems.json + pid_splits.json
    vqa.py            VQA JSONL, VQAv2 answer normalisation and accuracy
    answers.py        which option a free-text answer picks
    predictions.py    our predictions JSONL (resumable), LLaVA's answer files, VLMEvalKit's spreadsheets
    engine.py         batched, resumable generation on `vlmtune.inference.ChatModel`
    benchmarks.py     one interface over the three benchmarks
    during_training.py  `evaluate_during_training(chat_model, eval_cfg, step, out_dir)` for the trainer
    tables.py         TSV/CSV/XLSX reading and writing
"""
