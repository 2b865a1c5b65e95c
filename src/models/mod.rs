//! Products over the hourly table: models. A model is a SQL template over
//! the hourly rows of a pipeline's jobs with an output key of one grain
//! (UTC hour, local day, local year) and a lookback; whenever a run loads
//! hours, every output key those hours touch is recomputed and replaced in
//! every sink, and nothing else is rewritten.
//!
//! Which keys an hour change touches and which hours they read is key
//! maths, in [`crate::time::keys`].
//!
//! - [`stage`]: a model's input, result and contract in the embedded DuckDB.
//! - [`step`]: the model step of a run: pending hours, recomputation, state.
//! - [`plan`]: which models a run touches and the hours each has pending
//!   once marked (pure; `run` and `dry-run` share it).
//! - [`events`]: a model's new episodes as Prefect events (`events:`).
//!
//! History needs no raw data: a model reads the hourly rows the sinks hold.

pub mod events;
pub mod plan;
pub mod stage;
pub mod step;

pub use step::{recompute, Ctx, ModelOutcome};
