"""Render the benchmark results as docs/benchmarks.md, keeping the hand-written analysis section."""

from pathlib import Path

from bench_ingest import raw_table_names
from harness import median, mib

ANALYSIS_HEADING = "## Analysis"
ANALYSIS_PLACEHOLDER = (
    f"{ANALYSIS_HEADING}\n\nWritten by hand after a full run; `benchmarks/bench.py` keeps this section "
    "and everything below it when it rewrites the page.\n"
)


def rate(runs, name: str | None = None) -> float:
    """Median rows per second over runs, for one endpoint or, with no name, for all three together."""
    if name is None:
        return median([run.rows / run.seconds for run in runs])
    return median([run.fetch[name].rows_per_second for run in runs])


def seconds_list(values: list[float]) -> str:
    return ", ".join(f"{value:.1f}" for value in values)


def verdict(value: float, target: float, higher_is_better: bool) -> str:
    met = value >= target if higher_is_better else value <= target
    if met:
        return "met"
    shortfall = (target - value) / target if higher_is_better else (value - target) / target
    return f"missed by {shortfall:.0%}"


def machine_section(results: dict) -> list[str]:
    lines = ["## Machine and run", "", "| | |", "|---|---|"]
    lines += [f"| {name} | {value} |" for name, value in results["machine"].items()]
    lines += [
        f"| Started | {results['started']} |",
        f"| Load average at start (1, 5, 15 min) | {results['load_start']} |",
        f"| Load average at end | {results.get('load_end', 'not reached')} |",
        f"| Duration of the whole benchmark | {results['total_minutes']:.1f} min |",
        f"| Runs per measurement (median reported) | {results['repeats']} |",
        "",
        "The machine is shared with other engineers' test runs (Spark, Ray), so the load average above "
        "includes their work and the numbers carry that noise.",
        "",
    ]
    return lines


def ingestion_section(results: dict) -> list[str]:
    ingestion, sizes = results["ingestion"], results["sizes"]
    product, ideal, sequential = ingestion["product"], ingestion["ideal"], ingestion["sequential"]
    lines = [
        "## Ingestion",
        "",
        f"The stand-in serves {sizes.tracks:,} tracks, {sizes.users:,} users and {sizes.listen_history:,} listening records "
        f"({5 * sizes.listen_history:,} events) with {ingestion['latency_ms']} ms added to every page, 100 rows a page. "
        "It runs as `etl-stand-in-api` in its own process (one uvicorn worker).",
        "",
        f"- **Product**: `etl_assets.assets.ingest.ingest_endpoint` on a local Ray started in the benchmark process "
        f"({ingestion['tasks']} Ray tasks = Ray CPUs, {ingestion['threads']} threads per task = the `IngestionConfig` default), "
        f"into a staging folder under a temporary directory. Ray's start ({ingestion['ray_start_seconds']:.1f} s) is not counted.",
        "- **Sequential**: one `requests.Session`, one page after another, rows counted. "
        f"{'Run once' if len(sequential) == 1 else f'{len(sequential)} runs'}: at this size it takes minutes.",
        f"- **Ideal client**: asyncio and `httpx.AsyncClient`, fetching and counting rows only, at the best of "
        f"{', '.join(str(value) for value in ingestion['ideal_sweep'])} requests in flight "
        f"(best: {ingestion['ideal_concurrency']}).",
        "",
        "Rows per second (median):",
        "",
        "| Endpoint | Rows | Product | Ideal client | Sequential | Product / ideal | Product / sequential |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name in [*raw_table_names(), None]:
        label = name or "**all three**"
        rows = product[0].fetch[name].rows if name else product[0].rows
        values = [rate(product, name), rate(ideal, name), rate(sequential, name)]
        lines.append(
            f"| {label} | {rows:,} | {values[0]:,.0f} | {values[1]:,.0f} | {values[2]:,.0f} | "
            f"{values[0] / values[1]:.2f} | {values[0] / values[2]:.1f} |"
        )

    lines += [
        "",
        f"Fetch seconds per run, all three endpoints: product {seconds_list([run.seconds for run in product])}; "
        f"ideal {seconds_list([run.seconds for run in ideal])}; sequential {seconds_list([run.seconds for run in sequential])}.",
        "",
        "Ideal-client sweep (one run each, rows per second over the three endpoints): "
        + ", ".join(f"{concurrency} in flight: {run.rows / run.seconds:,.0f}" for concurrency, run in ingestion["ideal_sweep"].items())
        + ".",
        "",
        "The raw IO manager's merge (`RawCsvIOManager.dump_to_path`: read the staged pages, de-duplicate, write "
        "`part-00000.csv`, commit the folder) runs after the fetch and is not in the rates above. Median seconds:",
        "",
        "| Endpoint | Merge seconds | Fetch seconds |",
        "|---|---:|---:|",
    ]
    for name in raw_table_names():
        lines.append(
            f"| {name} | {median([run.merge_seconds[name] for run in product]):.1f} | "
            f"{median([run.fetch[name].seconds for run in product]):.1f} |"
        )
    lines.append("")
    return lines


def transforms_section(results: dict) -> list[str]:
    transforms, sizes = results["transforms"], results["sizes"]
    spark, duckdb = median(transforms["spark"]), median(transforms["duckdb"])
    comparison = transforms["comparison"]
    lines = [
        "## Transforms",
        "",
        f"Input: the raw partitions written by the product's ingestion above ({5 * sizes.listen_history:,} events). "
        "**Spark**: `dagster.materialize` of `tracks`, `users`, `listen_events` and `listening_activity` only, with the "
        "project's Spark resource, in the benchmark process. **DuckDB**: the same rules in SQL over the same raw CSVs "
        "(trim, blank name or artist dropped, durations MM:SS and H:MM:SS, newest row per id, `items` exploded, "
        "inner joins with users and tracks), writing the same four tables as CSV. The script compares the row counts "
        "of all four tables and the SHA-256 of the sorted rows of `listening_activity` and stops when they differ.",
        "",
        "| | Seconds (median) | Runs |",
        "|---|---:|---|",
        f"| SparkSession start (JVM, first job) | {transforms['spark_start_seconds']:.1f} | 1 |",
        f"| Spark assets | {spark:.1f} | {seconds_list(transforms['spark'])} |",
        f"| DuckDB SQL | {duckdb:.1f} | {seconds_list(transforms['duckdb'])} |",
        "",
        f"Spark / DuckDB: **{spark / duckdb:.1f}x** (target at most 4x: {verdict(spark / duckdb, 4, False)}).",
        "",
        "Rows written by both: " + ", ".join(f"{name} {count:,}" for name, count in comparison["counts"].items())
        + f". `listening_activity` SHA-256 of sorted rows: `{comparison['checksum'][:16]}…`, equal on both sides.",
        "",
    ]
    return lines


def end_to_end_section(results: dict) -> list[str]:
    end_to_end, sizes = results["end_to_end"], results["sizes"]
    default, large = end_to_end["default"], end_to_end["large"]
    large_command = " ".join(f"{name}={value}" for name, value in end_to_end["large_env"].items())
    lines = [
        "## End to end",
        "",
        "`/usr/bin/time -v .venv/bin/etl-daily-run` with a fresh `ETL_DATA_DIR` and `DAGSTER_HOME` per run, no added "
        "latency. The launcher starts the stand-in in its own process and then `dagster asset materialize` (the run "
        f"process, called the driver below). Large size: `{large_command}`.",
        "",
        "Three memory figures. `/usr/bin/time`'s maximum RSS is the largest single process among the descendants that were "
        "waited for, not a sum; where it equals the driver peak, the Spark JVM and Ray's processes were not counted in it. The tree peak is the largest sum of RSS over every process of the tree, sampled from /proc every 0.5 s, "
        "so it can miss short spikes. The driver peak is VmHWM of the `dagster asset materialize` process.",
        "",
        "| Size | Wall seconds | Runs | time -v max RSS | Tree peak | Driver peak |",
        "|---|---:|---|---:|---:|---:|",
        f"| default (1,000 rows each) | {median([run.seconds for run in default]):.1f} | {seconds_list([run.seconds for run in default])} | "
        f"{mib(median([run.max_rss_bytes for run in default]))} | {mib(median([run.tree_peak_bytes for run in default]))} | "
        f"{mib(median([run.driver_peak_bytes for run in default]))} |",
        f"| large ({sizes.tracks:,} / {sizes.users:,} / {sizes.listen_history:,}) | {large.seconds:.1f} | 1 | "
        f"{mib(large.max_rss_bytes)} | {mib(large.tree_peak_bytes)} | {mib(large.driver_peak_bytes)} |",
        "",
        f"Default size against the 30 s target: {verdict(median([run.seconds for run in default]), 30, False)}.",
        "",
    ]
    return lines


def growth_section(results: dict) -> list[str]:
    growth, sizes = results["growth"], results["sizes"]
    runs = growth["runs"]
    small, big = sorted(runs)
    ratio = runs[big].driver_peak_bytes / runs[small].driver_peak_bytes
    lines = [
        "## Memory growth",
        "",
        f"`{growth['command']}` against the stand-in ({sizes.tracks:,} tracks, {sizes.users:,} users, "
        "no added latency) in its own process, a fresh `ETL_DATA_DIR` and `DAGSTER_HOME`, one run per size.",
        "",
        "| Listening records | Events | Wall seconds | Driver peak | Tree peak | time -v max RSS |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for records in (small, big):
        run = runs[records]
        lines.append(
            f"| {records:,} | {5 * records:,} | {run.seconds:.1f} | {mib(run.driver_peak_bytes)} | "
            f"{mib(run.tree_peak_bytes)} | {mib(run.max_rss_bytes)} |"
        )
    lines += [
        "",
        f"Driver peak at {5 * big:,} events / at {5 * small:,} events: **{ratio:.2f}x** "
        f"(target at most 1.5x: {verdict(ratio, 1.5, False)}).",
        "",
    ]
    return lines


def targets_section(results: dict) -> list[str]:
    ingestion, transforms, end_to_end, growth = results["ingestion"], results["transforms"], results["end_to_end"], results["growth"]
    product_ideal = rate(ingestion["product"]) / rate(ingestion["ideal"])
    product_sequential = rate(ingestion["product"]) / rate(ingestion["sequential"])
    spark_duckdb = median(transforms["spark"]) / median(transforms["duckdb"])
    default_seconds = median([run.seconds for run in end_to_end["default"]])
    small, big = sorted(growth["runs"])
    growth_ratio = growth["runs"][big].driver_peak_bytes / growth["runs"][small].driver_peak_bytes
    rows = [
        ("Ingestion rows/s, product / ideal client", "at least 0.8", f"{product_ideal:.2f}", verdict(product_ideal, 0.8, True)),
        ("Ingestion rows/s, product / sequential", "at least 10", f"{product_sequential:.1f}", verdict(product_sequential, 10, True)),
        ("Transform seconds, Spark / DuckDB", "at most 4", f"{spark_duckdb:.1f}", verdict(spark_duckdb, 4, False)),
        ("`etl-daily-run` at the default size", "at most 30 s", f"{default_seconds:.1f} s", verdict(default_seconds, 30, False)),
        ("Driver peak RSS, 5x events / 1x", "at most 1.5", f"{growth_ratio:.2f}", verdict(growth_ratio, 1.5, False)),
    ]
    lines = ["## Targets", "", "| Measure | Target | Measured | Result |", "|---|---|---:|---|"]
    lines += [f"| {name} | {target} | {value} | {result} |" for name, target, value, result in rows]
    lines.append("")
    return lines


def kept_analysis(path: Path) -> str:
    if not path.exists():
        return ANALYSIS_PLACEHOLDER
    text = path.read_text()
    index = text.find(f"\n{ANALYSIS_HEADING}\n")
    return text[index + 1 :] if index >= 0 else ANALYSIS_PLACEHOLDER


def write_report(results: dict, path: Path) -> None:
    title = "# Benchmarks" + (" (quick smoke run: small tables, numbers not meaningful)" if results["quick"] else "")
    lines = [
        title,
        "",
        "Generated by one run of the command below on the machine it describes. Every ratio compares numbers measured "
        "in that same run. Rerun it to replace the measured sections; the analysis section at the end is kept.",
        "",
        "```",
        results["command"],
        "```",
        "",
        *machine_section(results),
    ]
    # The report is rewritten after each phase, so a run that stops early still leaves its numbers.
    if "growth" in results:
        lines += targets_section(results)
    sections = [
        ("ingestion", ingestion_section),
        ("transforms", transforms_section),
        ("end_to_end", end_to_end_section),
        ("growth", growth_section),
    ]
    for key, section in sections:
        lines += section(results) if key in results else [f"## {key.replace('_', ' ').capitalize()}", "", "Not measured: the run stopped before this phase.", ""]
    path.write_text("\n".join(lines) + "\n" + kept_analysis(path))
