"""Round trips of the project's CSV dialect through the Python writer, pyarrow and Spark."""

import json
import time
from datetime import datetime, timezone

import pytest

from etl_assets.io_managers.csv_dialect import (
    SPARK_READ_OPTIONS,
    SPARK_WRITE_OPTIONS,
    read_rows,
    write_header,
    write_rows,
)

COLUMNS = {"id": int, "name": str, "items": list}
BOM = b"\xef\xbb\xbf"

NAMES = [
    "Beyoncé, Jay-Z",
    'The "Quoted" Band',
    "Line\nBreak",
    "Carriage\r\nReturn",
    "Zoë Ñúñez 🎸",
    'Mötley, "Crüe"\r\n🤘',
    "",
    None,
    "  padded  ",
    '"',
    ",",
    "ends with a line break\n",
    "back\\slash",
]
ITEMS = [[1, 2], [], None, [3], [4, 5, 6], [7], [8], None, [9], [10], [], [11, 12], [13]]
ROWS = [{"id": index, "name": name, "items": items} for index, (name, items) in enumerate(zip(NAMES, ITEMS, strict=True), start=1)]


def items_text(items: list[int] | None) -> str | None:
    """`items` as the dialect stores it: compact JSON text, or null."""
    return None if items is None else json.dumps(items, separators=(",", ":"))


# The rows as a reader returns them: `items` stays JSON text, so a list and a null stay distinct.
TEXT_ROWS = [{**row, "items": items_text(row["items"])} for row in ROWS]


def spark_schema():
    from pyspark.sql.types import LongType, StringType, StructField, StructType

    return StructType([StructField("id", LongType()), StructField("name", StringType()), StructField("items", StringType())])


def carriage_returns() -> int:
    return sum(name.count("\r") for name in NAMES if name is not None)


@pytest.fixture
def python_file(tmp_path):
    path = tmp_path / "rows.csv"
    with path.open("w", encoding="utf-8", newline="") as stream:
        write_header(stream, list(COLUMNS))
        write_rows(stream, list(COLUMNS), ROWS)
    return path


@pytest.fixture
def spark_folder(spark_session, tmp_path):
    frame = spark_session.createDataFrame([(row["id"], row["name"], row["items"]) for row in TEXT_ROWS], spark_schema())
    folder = tmp_path / "spark"
    frame.write.options(**SPARK_WRITE_OPTIONS).csv(str(folder))
    return folder


def spark_parts(folder) -> list:
    return sorted(folder.glob("part-*.csv"))


def test_python_writer_to_pyarrow(python_file):
    assert read_rows(str(python_file), COLUMNS) == TEXT_ROWS


def test_python_writer_items_parse(python_file):
    parsed = [None if row["items"] is None else json.loads(row["items"]) for row in read_rows(str(python_file), COLUMNS)]
    assert parsed == ITEMS


def test_python_writer_to_spark(python_file, spark_session):
    frame = spark_session.read.schema(spark_schema()).options(**SPARK_READ_OPTIONS).csv(str(python_file))
    assert [row.asDict() for row in frame.orderBy("id").collect()] == TEXT_ROWS


def test_spark_writer_to_pyarrow(spark_folder):
    rows = [row for part in spark_parts(spark_folder) for row in read_rows(str(part), COLUMNS)]
    assert sorted(rows, key=lambda row: row["id"]) == TEXT_ROWS


def test_python_file_encoding(python_file):
    data = python_file.read_bytes()
    assert not data.startswith(BOM)
    assert data.decode("utf-8").startswith("id,name,items\n")


def test_python_file_line_endings(python_file):
    data = python_file.read_bytes()
    # Every \r in the file belongs to a value, because the writer ends its lines with a bare \n.
    assert data.count(b"\r") == carriage_returns()
    assert data.endswith(b"\n")


def test_spark_file_encoding(spark_folder):
    for part in spark_parts(spark_folder):
        data = part.read_bytes()
        assert not data.startswith(BOM), part
        assert data.decode("utf-8").startswith("id,name,items\n"), part


def test_spark_file_line_endings(spark_folder):
    data = b"".join(part.read_bytes() for part in spark_parts(spark_folder))
    assert data.count(b"\r") == carriage_returns()


def test_null_token_text_pyarrow(tmp_path):
    # A quoted `\N` is a string and only the bare token is null. Spark reads both as null, as the dialect notes.
    path = tmp_path / "token.csv"
    with path.open("w", encoding="utf-8", newline="") as stream:
        write_header(stream, ["id", "name"])
        write_rows(stream, ["id", "name"], [{"id": 1, "name": "\\N"}, {"id": 2, "name": None}])
    assert read_rows(str(path), {"id": int, "name": str}) == [{"id": 1, "name": "\\N"}, {"id": 2, "name": None}]


@pytest.fixture
def montreal_time(monkeypatch):
    """Set the Python process's local time zone to America/Montreal; the Spark session stays UTC."""
    monkeypatch.setenv("TZ", "America/Montreal")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_timestamps_written_utc(spark_session, tmp_path, montreal_time):
    from pyspark.sql import functions as F
    from pyspark.sql.types import StringType, StructField, StructType, TimestampType

    schema = StructType([StructField("from_python", TimestampType()), StructField("from_text", StringType())])
    # 07:30 UTC on 2026-03-08 is 03:30 in Montreal, the hour after clocks skip 02:00-03:00.
    moment = datetime(2026, 3, 8, 7, 30, 0, 123456, tzinfo=timezone.utc)
    frame = spark_session.createDataFrame([(moment, "2026-11-01T05:30:00.000001")], schema)
    frame = frame.select("from_python", F.try_to_timestamp("from_text").alias("from_text"))
    frame.coalesce(1).write.options(**SPARK_WRITE_OPTIONS).csv(str(tmp_path / "out"))

    rows = read_rows(str(spark_parts(tmp_path / "out")[0]), {"from_python": str, "from_text": str})
    assert time.localtime(moment.timestamp()).tm_hour == 3
    assert rows == [{"from_python": "2026-03-08T07:30:00.123456", "from_text": "2026-11-01T05:30:00.000001"}]
