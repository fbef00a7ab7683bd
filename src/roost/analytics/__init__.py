"""Analytics: the ClickHouse outbox (``clickhouse_analytics``), its export job, and the
per-chunk metrics of streamed answers (``streaming_analytics``).  docs/analytics.md."""
