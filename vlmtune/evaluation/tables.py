"""Spreadsheet-shaped files: TSV/CSV read with the csv module (every cell a string), XLSX with openpyxl.

    header, rows = read_table("MMBench_DEV_EN.tsv")      # rows: [(line_number, {column: text})]
    write_xlsx("submission.xlsx", header, rows)          # rows: [{column: value}]

Cells are kept as text: MMBench's `index` stays "1000012", a blank cell is "". Reading with
pandas would turn "None" answers into NaN and indexes into floats; here nothing is guessed.
"""

from __future__ import annotations

import csv
import os
import sys

from vlmtune.errors import DataError

TABLE_SUFFIXES = (".tsv", ".csv", ".xlsx")


def _raise_csv_limit() -> None:
    # MMBench puts whole base64 images in one cell, far over csv's 128 KiB default.
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:
            limit //= 2


def cell_text(value) -> str:
    """A spreadsheet value as text: None -> "", 3.0 -> "3", anything else str()."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _read_delimited(path: str, delimiter: str) -> tuple[list[str], list[tuple[int, dict]]]:
    _raise_csv_limit()
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as e:
        raise DataError(f"can't read {path}: {e.strerror}.") from None
    with f:
        reader = csv.reader(f, delimiter=delimiter)
        try:
            header = next(reader, None)
            if not header:
                raise DataError(f"{path} is empty: expected a header line with column names.")
            header = [h.strip() for h in header]
            rows = []
            for cells in reader:
                line = reader.line_num
                if not any(c.strip() for c in cells):
                    continue
                if len(cells) > len(header):
                    raise DataError(f"{path} line {line}: {len(cells)} cells but the header has {len(header)} columns "
                                    f"(a stray {'tab' if delimiter == chr(9) else 'comma'} or an unclosed quote?).")
                cells = list(cells) + [""] * (len(header) - len(cells))  # short rows: blank cells, as pandas reads them
                rows.append((line, dict(zip(header, cells))))
        except csv.Error as e:
            raise DataError(f"{path} line {reader.line_num}: not valid {'TSV' if delimiter == chr(9) else 'CSV'} ({e}).") from None
        except UnicodeDecodeError as e:
            raise DataError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}).") from None
    return header, rows


def _read_xlsx(path: str) -> tuple[list[str], list[tuple[int, dict]]]:
    openpyxl = import_openpyxl("read " + os.path.basename(path))
    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # zipfile.BadZipFile, KeyError, InvalidFileException...
        raise DataError(f"{path} is not a readable .xlsx workbook ({type(e).__name__}: {e}).") from None
    try:
        it = wb.worksheets[0].iter_rows(values_only=True)
        first = next(it, None)
        if not first or all(v is None for v in first):
            raise DataError(f"{path} is empty: expected a header row with column names in its first sheet.")
        header = [cell_text(v).strip() for v in first]
        rows = []
        for line, values in enumerate(it, start=2):
            cells = [cell_text(v) for v in values]
            if not any(c.strip() for c in cells):
                continue
            cells = cells[: len(header)] + [""] * (len(header) - len(cells))
            rows.append((line, dict(zip(header, cells))))
    finally:
        wb.close()
    return header, rows


def read_table(path: str | os.PathLike) -> tuple[list[str], list[tuple[int, dict]]]:
    """(header, [(line or spreadsheet row number, {column: text})]) of a .tsv, .csv or .xlsx file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path} does not exist." if not os.path.exists(path) else f"{path} is not a file.")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".xlsx":
        return _read_xlsx(path)
    if suffix == ".csv":
        return _read_delimited(path, ",")
    return _read_delimited(path, "\t")


def import_openpyxl(purpose: str):
    try:
        import openpyxl
    except ImportError:
        raise DataError(f"openpyxl is needed to {purpose}: `pip install openpyxl`.") from None
    return openpyxl


def write_tsv(path: str | os.PathLike, header: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(header)
        for row in rows:
            w.writerow([row.get(h, "") for h in header])


def write_xlsx(path: str | os.PathLike, header: list[str], rows: list[dict]) -> None:
    """One sheet; control characters Excel refuses are dropped, cells over Excel's limit are cut."""
    openpyxl = import_openpyxl(f"write {os.path.basename(os.fspath(path))}")
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    def clean(v):
        if isinstance(v, str):
            return ILLEGAL_CHARACTERS_RE.sub("", v)[:32767]
        return v

    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(header)
    for row in rows:
        ws.append([clean(row.get(h, "")) for h in header])
    wb.save(path)
