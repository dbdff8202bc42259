"""The daily partitions every asset shares: one snapshot per UTC day."""

from dagster import DailyPartitionsDefinition

# end_offset=1 makes today's partition available, so the daily run lands today's
# snapshot instead of waiting for the day to close.
daily_partitions = DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC", end_offset=1)
