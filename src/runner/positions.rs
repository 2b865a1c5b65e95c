//! One job's sinks in a run: where each stands (its position, see
//! [`crate::state::progress`]), which of the run's batches each takes, and
//! the checkpoint they make together (the oldest position).

use std::collections::BTreeMap;

use crate::plan::{self, Batch};
use crate::spec::Hour;
use crate::state::Progress;
use crate::time::Ranges;

#[derive(Debug, Clone)]
pub(super) struct Positions {
    /// As read before the run (its failure records are updated at the end).
    pub(super) progress: Progress,
    /// Every sink of the pipeline.
    pub(super) at: BTreeMap<String, Option<Hour>>,
    /// The hours each sink taking writes loads in this run.
    pub(super) takes: BTreeMap<String, Ranges<Hour>>,
    /// Where a sink without a position stands once another has one: the
    /// hour before this run's first (a first run whose sink was down, in a
    /// pipeline without `start`, where a sink without a position would
    /// begin at the newest hour).
    pub(super) origin: Option<Hour>,
    /// Whether the store holds positions for the job (see `load::save`).
    pub(super) stored: bool,
}

impl Positions {
    /// Whether `sink` loads `batch` in this run.
    pub(super) fn takes(&self, sink: &str, batch: Batch) -> bool {
        self.takes.get(sink).is_some_and(|r| r.contains(batch.from))
    }

    /// A sink up in this run that holds every hour of `batch` already and
    /// does not load it again (its rows are what the sinks taking it lack).
    pub(super) fn holder(&self, batch: Batch, up: impl Fn(&str) -> bool) -> Option<&str> {
        let last = batch.to.plus(-1);
        self.at
            .iter()
            .find(|(s, p)| up(s) && !self.takes(s, batch) && p.is_some_and(|p| p >= last))
            .map(|(s, _)| s.as_str())
    }

    /// `sink` has `batch` now.
    pub(super) fn advance(&mut self, sink: &str, start: Option<Hour>, batch: Batch) {
        if let Some(p) = self.at.get_mut(sink) {
            *p = plan::advance(*p, start, batch);
        }
        if self.at.values().any(Option::is_some) {
            for p in self.at.values_mut() {
                if p.is_none() {
                    *p = self.origin;
                }
            }
        }
    }

    /// The job's checkpoint: the oldest position.
    pub(super) fn checkpoint(&self) -> Option<Hour> {
        crate::state::progress::floor(&self.at)
    }

    /// The progress to write: the positions with the checkpoint they make.
    pub(super) fn to_progress(&self) -> Progress {
        let mut p = self.progress.clone();
        p.checkpoint = self.checkpoint();
        for (s, at) in &self.at {
            p.sinks.entry(s.clone()).or_default().position = *at;
        }
        p
    }
}
