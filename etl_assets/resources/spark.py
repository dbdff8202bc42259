"""The Spark session of a run: one per process, sized to the CPUs and memory it may really use."""

import socket
import threading
from typing import Any
from urllib.parse import urlsplit

from dagster import ConfigurableResource, InitResourceContext
from dagster_pyspark import LazyPySparkResource
from pydantic import Field, PrivateAttr

from etl_assets.contract import RAW_TABLES
from etl_assets.resources.cpu import total_memory_bytes, usable_cpu_count


def default_driver_memory() -> str:
    """Return a quarter of the machine's memory, 1 to 16 GiB, so the driver leaves room for Ray."""
    gibibytes = max(1, min(16, total_memory_bytes() // 4 // 2**30))
    return f"{gibibytes}g"


# Spark 4.0.1 retries an unreachable spark:// master for about a minute (3 attempts, 20 s apart),
# then fails with a Py4J message that names neither the master nor the cause.
PROBE_TIMEOUT_SECONDS = 10
DEFAULT_PORTS = {"spark": 7077, "sc": 15002}


def run_needs_spark(context: InitResourceContext) -> bool:
    """Tell whether the run selects any asset beyond the raw snapshots, which are fetched without Spark."""
    run = context.dagster_run
    selection = run.asset_selection if run is not None else None
    if selection is None:
        return True
    return any(key.path[-1] not in RAW_TABLES for key in selection)


class SparkUnavailable(RuntimeError):
    pass


def probe_master(url: str) -> None:
    """Fail fast unless one master of a spark:// or sc:// URL accepts a TCP connection.

    A spark:// URL may list several masters (spark://a:7077,b:7077), and one reachable master is enough.
    Other masters (local[N], yarn, k8s://) are not probed.
    """
    scheme, _, rest = url.partition("://")
    if scheme not in DEFAULT_PORTS:
        return
    # Only scheme://hosts is shown: the rest of an sc:// URL may carry a token.
    masters = rest.split("/")[0]
    errors = []
    for host_port in masters.split(","):
        parts = urlsplit(f"{scheme}://{host_port}")
        try:
            port = parts.port or DEFAULT_PORTS[scheme]
        except ValueError:
            # An invalid port is left for Spark to reject with its own message.
            continue
        if parts.hostname is None:
            continue
        try:
            socket.create_connection((parts.hostname, port), timeout=PROBE_TIMEOUT_SECONDS).close()
            return
        except OSError as error:
            errors.append(f"{parts.hostname}:{port}: {error.strerror or error}")
    if errors:
        raise SparkUnavailable(
            f"could not connect to the Spark master at {scheme}://{masters} ({'; '.join(errors)}); "
            "start the master, fix the master URL (ETL_SPARK_MASTER for the default resources), "
            "or leave it empty for local Spark"
        )


class SparkResource(ConfigurableResource):
    """A SparkSession created on first use and stopped at the end of the run, if this resource created it."""

    master: str | None = Field(
        default=None,
        description="Spark master URL: spark://host:7077, sc://host:15002 for Spark Connect, or local[N]. "
        "Defaults to local[N] with N the CPUs this process may use.",
    )
    cores: int | None = Field(default=None, description="Cores of the local master. Defaults to the usable CPUs.")
    driver_memory: str | None = Field(default=None, description="spark.driver.memory, e.g. 4g. Defaults to a quarter of RAM, 1 to 16g.")
    shuffle_partitions: int | None = Field(
        default=None, description="spark.sql.shuffle.partitions. Defaults to twice the cores instead of Spark's 200."
    )
    warm_start: bool = Field(
        default=True, description="Start the JVM in the background as soon as a run that needs Spark begins."
    )
    app_name: str = Field(default="etl_assets", description="Name of the Spark application.")
    extra_conf: dict[str, str] = Field(default_factory=dict, description="Further Spark settings; they win over the sized defaults.")

    _pyspark: LazyPySparkResource | None = PrivateAttr(default=None)
    _created_here: bool = PrivateAttr(default=False)
    _started: bool = PrivateAttr(default=False)
    _start_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def resolved_cores(self) -> int:
        return self.cores or usable_cpu_count()

    def spark_conf(self) -> dict[str, str]:
        """Return every Spark setting this resource applies, sized defaults first."""
        cores = self.resolved_cores()
        conf = {
            "spark.app.name": self.app_name,
            "spark.master": self.master or f"local[{cores}]",
            "spark.driver.memory": self.driver_memory or default_driver_memory(),
            "spark.sql.shuffle.partitions": str(self.shuffle_partitions or 2 * cores),
            "spark.sql.adaptive.enabled": "true",
            "spark.sql.session.timeZone": "UTC",
            "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
            "spark.executor.extraJavaOptions": "-Duser.timezone=UTC",
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.sql.csv.parser.columnPruning.enabled": "true",
        }
        if conf["spark.master"].startswith("sc://"):
            conf["spark.remote"] = conf.pop("spark.master")
        conf.update(self.extra_conf)
        return conf

    def setup_for_execution(self, context: InitResourceContext) -> None:
        from pyspark.sql import SparkSession

        self._created_here = SparkSession.getActiveSession() is None
        self._pyspark = LazyPySparkResource(spark_config=self.spark_conf())
        conf = self.spark_conf()
        context.log.info(
            f"Spark will use master {conf.get('spark.master') or conf.get('spark.remote')}, "
            f"driver memory {conf['spark.driver.memory']}, {conf['spark.sql.shuffle.partitions']} shuffle partitions"
        )

        # The JVM takes seconds to start: start it now, while Ray fetches the raw pages.
        if self.warm_start and self._created_here and run_needs_spark(context):
            threading.Thread(target=self._warm_up, name="spark-warm-up", daemon=True).start()

    def _warm_up(self) -> None:
        try:
            self.spark_session
        except SparkUnavailable:
            # The step that needs Spark raises the same error again, with its context.
            pass

    @property
    def spark_session(self) -> Any:
        if self._pyspark is None:
            raise RuntimeError("SparkResource is not set up: use it through Dagster or call setup_for_execution first")

        with self._start_lock:
            return self._start_session()

    def _start_session(self) -> Any:
        # A session that already exists is reused whatever its master, so only a new one is probed.
        conf = self.spark_conf()
        if not self._started and self._created_here:
            probe_master(conf.get("spark.master") or conf.get("spark.remote"))
        try:
            session = self._pyspark.spark_session
            self._started = True
            return session
        except Exception as error:
            raise SparkUnavailable(
                f"could not start Spark with master {conf.get('spark.master') or conf.get('spark.remote')}: "
                f"{str(error).splitlines()[0][:300]}; check that the master is running and reachable and that Java 17+ is on PATH"
            ) from None

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        # A session that existed before the run (a test session, a notebook) is left running.
        if self._pyspark is not None and self._started and self._created_here:
            self._pyspark.spark_session.stop()
            context.log.info("Stopped the Spark session of this run")
        self._pyspark = None
        self._started = False
