"""Session-wide real components: one local Ray, one local SparkSession, one stand-in API."""

import pytest

from etl_assets.stand_in_api.server import serve_in_thread
from etl_assets.stand_in_api.settings import StandInSettings

# Small tables keep the session fast; the default stand-in serves 1,000 rows each.
SMALL = StandInSettings(seed=7, tracks=250, users=120, listen_history=300)


@pytest.fixture(scope="session")
def spark_session():
    """The SparkSession of the whole test session; the Spark resource reuses it and leaves it running."""
    from pyspark.sql import SparkSession

    from etl_assets.resources.spark import SparkResource

    conf = SparkResource(cores=2, driver_memory="2g").spark_conf()
    builder = SparkSession.builder
    for key, value in conf.items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    yield session
    session.stop()


@pytest.fixture(scope="session")
def ray_session():
    """A local Ray for the whole test session; the Ray resource reuses it."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    yield
    ray.shutdown()


@pytest.fixture(scope="session")
def small_stand_in():
    """The stand-in API over SMALL, served by uvicorn on a loopback port."""
    with serve_in_thread(SMALL) as server:
        yield server


@pytest.fixture
def pipeline_env(spark_session, ray_session):
    """Real Spark and Ray, ready for `materialize()` through etl_assets_tests.pipeline.run_pipeline."""
    return spark_session
