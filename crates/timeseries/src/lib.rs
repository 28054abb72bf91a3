//! # The time-series policy's core
//!
//! Prometheus's data model on DataLayer (DESIGN §9, `timeseries`): a series is a
//! metric name plus a label set ([`labels`]), identified by the xxh3 hash of its
//! canonical form; a sample is a millisecond timestamp and an f64 value (NaN and the
//! staleness marker kept bit for bit). Samples are chunked by ISO week ([`week`]) and
//! stored in Gorilla-compressed blocks per series ([`gorilla`]). What PromQL
//! computes from a series' samples, and its aggregations over many, follow
//! Prometheus's rules ([`functions`], [`aggregate`]); [`promql`] evaluates whole
//! PromQL expressions (parsed by `promql-parser`) with them.
//!
//! [`policy`] is the `timeseries` table policy itself: it keeps a table's rows
//! ([`keys`]) in strong tablets through the strong write path offered to layered
//! policies, so its data has the strong policy's acks, failover and catch-up; its
//! table options are [`options`]. The other modules are pure, each tested on its own.

pub mod aggregate;
pub mod fast;
pub mod functions;
pub mod gorilla;
pub mod keeper;
pub mod keys;
pub mod labels;
pub mod options;
pub mod policy;
pub mod promql;
pub mod rollup;
pub mod week;

pub use labels::{LabelError, Labels, Limits, SeriesId};
pub use options::TsOptions;
pub use policy::{SeriesSamples, TimeseriesPolicy};
pub use week::Week;
