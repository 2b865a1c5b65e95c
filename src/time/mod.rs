//! Time as duckhour counts it: whole UTC hours ([`Hour`]), sets of
//! half-open ranges ([`Ranges`], for hours and model keys alike), and the
//! key maths of models' grains and zones ([`keys`]). A leaf: it imports
//! chrono and nothing of the crate, so every layer can use it.

pub mod hour;
pub mod keys;
pub mod ranges;

pub use hour::{parse_time, Hour};
pub use keys::{Grain, KeyRange, Zone};
pub use ranges::{Point, Ranges};
