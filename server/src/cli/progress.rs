//! A terminal progress bar on stderr for the library's [`Progress`] callbacks.

use hyperat::progress::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// indicatif bar; hidden when stderr is not a terminal.
pub struct Bar {
    bar: ProgressBar,
}

impl Bar {
    /// A bar labelled `prefix`.
    pub fn new(prefix: &str) -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} (ETA {eta})",
            )
            .expect("valid template"),
        );
        bar.set_prefix(prefix.to_string());
        Self { bar }
    }
}

impl Progress for Bar {
    fn update(&mut self, done: usize, total: usize, message: &str) {
        self.bar.set_length(total as u64);
        self.bar.set_position(done as u64);
        self.bar.set_message(message.to_string());
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
