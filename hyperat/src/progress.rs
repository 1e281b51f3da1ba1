//! Progress reporting from long work to whoever shows it (a terminal bar, an SSE
//! stream), without the core knowing which.

/// Receives progress of a long computation.
pub trait Progress {
    /// `done` of `total` units finished; `message` says what the numbers are.
    fn update(&mut self, done: usize, total: usize, message: &str);
    /// One metrics record (the JSON line a run appends to `metrics.jsonl`), for
    /// live curves.
    fn metrics(&mut self, _record: &serde_json::Value) {}
    /// Whether the caller asked to stop (checked between units of work).
    fn cancelled(&self) -> bool {
        false
    }
    /// A token the caller cancels when it asks to stop, for work that checks inside a
    /// unit (an attack's steps within one evaluation batch).
    fn cancel_token(&self) -> Option<crate::cancel::CancelToken> {
        None
    }
}

/// Discards progress.
#[derive(Debug, Default)]
pub struct Silent;

impl Progress for Silent {
    fn update(&mut self, _: usize, _: usize, _: &str) {}
}
