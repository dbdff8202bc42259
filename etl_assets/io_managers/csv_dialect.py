"""The one CSV dialect every writer and reader of the project uses, Python's and Spark's.

UTF-8 without BOM, `\\n` line endings, a header row, fields quoted with `"` and
quotes inside them doubled. A null is the bare token `\\N` and an empty string
is `""`, so the two stay distinct: Spark reads an unquoted empty field as null
too, which rules out the empty field as the null token. Python's writer quotes
every string, while Spark's quotes only those that need it; both read the same.
Timestamps are written in UTC with microseconds.
"""

import json
from collections.abc import Iterable, Sequence
from typing import IO, Any

NULL_TOKEN = "\\N"
TIMESTAMP_FORMAT = "yyyy-MM-dd'T'HH:mm:ss.SSSSSS"

# NOTE: Spark applies nullValue to quoted fields as well, so a string whose
# whole value is `\N` is read back as null by Spark (pyarrow keeps it).
SPARK_READ_OPTIONS = {
    "header": "true",
    "multiLine": "true",
    "encoding": "UTF-8",
    "quote": '"',
    "escape": '"',
    "nullValue": NULL_TOKEN,
    "ignoreLeadingWhiteSpace": "false",
    "ignoreTrailingWhiteSpace": "false",
    "timestampFormat": TIMESTAMP_FORMAT,
    "timestampNTZFormat": TIMESTAMP_FORMAT,
    "mode": "FAILFAST",
}

# Spark's writer trims whitespace by default, which would silently change values.
SPARK_WRITE_OPTIONS = {
    "header": "true",
    "encoding": "UTF-8",
    "quote": '"',
    "escape": '"',
    "nullValue": NULL_TOKEN,
    "emptyValue": '""',
    "ignoreLeadingWhiteSpace": "false",
    "ignoreTrailingWhiteSpace": "false",
    "timestampFormat": TIMESTAMP_FORMAT,
    "lineSep": "\n",
}


def quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def format_field(value: Any) -> str:
    """Format one JSON value as a CSV field: null as `\\N`, strings quoted, lists as JSON text."""
    if value is None:
        return NULL_TOKEN
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, (list, dict)):
        return quote(json.dumps(value, ensure_ascii=False, separators=(",", ":")))
    raise TypeError(f"cannot write a value of type {type(value).__name__} to CSV: {value!r}")


def write_header(stream: IO[str], columns: Sequence[str]) -> None:
    stream.write(",".join(columns) + "\n")


def write_rows(stream: IO[str], columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as CSV lines in column order and return how many were written."""
    count = 0
    for row in rows:
        stream.write(",".join(format_field(row.get(column)) for column in columns) + "\n")
        count += 1
    return count


def read_rows(source: Any, column_types: dict[str, type]) -> list[dict[str, Any]]:
    """Read a CSV file (a path or a binary file object) of this dialect into dicts, ints as ints and strings as strings.

    pyarrow, unlike Python's `csv` module, distinguishes a quoted empty string from a null.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    arrow_types = {name: pa.int64() if kind is int else pa.string() for name, kind in column_types.items()}
    table = pacsv.read_csv(
        source,
        read_options=pacsv.ReadOptions(encoding="utf8"),
        parse_options=pacsv.ParseOptions(newlines_in_values=True, double_quote=True, quote_char='"'),
        convert_options=pacsv.ConvertOptions(
            column_types=arrow_types,
            null_values=[NULL_TOKEN],
            strings_can_be_null=True,
            quoted_strings_can_be_null=False,
        ),
    )
    return table.to_pylist()
