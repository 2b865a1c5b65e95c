//! Integration tests: the real binary, real DuckDB files, a real InfluxDB.

mod bigquery_sink;
mod dry_run;
mod engine;
mod guarantees;
mod influx_source;
mod law;
mod ops;
mod prefect_client;
mod prefect_cloud;
mod prefect_ops;
mod prefect_runs;
mod prefect_state;
mod products;
mod products_exact;
mod products_ref;
mod readme;
mod shared;
mod sink_down;
mod spec_errors;
mod util;
