//! Progress on stderr for the library's [`Progress`] callbacks: an indicatif bar on a
//! terminal; in a log file (a `nohup` run) a plain line at most once a minute with the
//! step, the rate and the time left. Evaluation records print as lines either way.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use hyperat::progress::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// A bar (terminal) or periodic lines (log file).
pub struct Bar {
    bar: ProgressBar,
    prefix: String,
    plain: Option<PlainLog>,
}

struct PlainLog {
    started: Instant,
    first_done: Option<usize>,
    last_line: Option<Instant>,
    last_done: usize,
}

impl PlainLog {
    /// Notes `done`; a count that went back is a new pass (`report` runs PGD, then CW,
    /// over the same images), whose rate counts from now, not from the first pass.
    fn observe(&mut self, done: usize) -> usize {
        if done < self.last_done {
            (self.started, self.first_done, self.last_line) = (Instant::now(), None, None);
        }
        self.last_done = done;
        *self.first_done.get_or_insert(done)
    }
}

impl Bar {
    /// Labelled `prefix`.
    pub fn new(prefix: &str) -> Self {
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg} (ETA {eta})",
            )
            .expect("valid template"),
        );
        bar.set_prefix(prefix.to_string());
        let plain = (!std::io::stderr().is_terminal()).then(|| PlainLog {
            started: Instant::now(),
            first_done: None,
            last_line: None,
            last_done: 0,
        });
        Self {
            bar,
            prefix: prefix.to_string(),
            plain,
        }
    }

    fn line(&self, text: &str) {
        if self.plain.is_some() {
            eprintln!("{}: {text}", self.prefix);
        } else {
            self.bar.println(format!("{}: {text}", self.prefix));
        }
    }
}

impl Progress for Bar {
    fn update(&mut self, done: usize, total: usize, message: &str) {
        self.bar.set_length(total as u64);
        if (done as u64) < self.bar.position() {
            self.bar.reset();
        }
        self.bar.set_position(done as u64);
        self.bar.set_message(message.to_string());
        let Some(p) = &mut self.plain else { return };
        let first = p.observe(done);
        let due = p
            .last_line
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(60));
        if !(due || done == total) || done == first {
            return;
        }
        p.last_line = Some(Instant::now());
        let secs = p.started.elapsed().as_secs_f64();
        let per_unit = secs / (done - first) as f64;
        let left = per_unit * total.saturating_sub(done) as f64;
        eprintln!(
            "{}: {done}/{total} {message} ({:.2} s each, {} left)",
            self.prefix,
            per_unit,
            human(left)
        );
    }

    fn metrics(&mut self, r: &serde_json::Value) {
        let pct = |k: &str| r[k].as_f64().map(|v| format!("{:.2}%", 100.0 * v));
        match r["kind"].as_str() {
            Some("eval") => self.line(&format!(
                "epoch {} {} accuracy {}",
                r["epoch"].as_u64().map_or(0, |e| e + 1),
                r["split"].as_str().unwrap_or("evaluation"),
                pct("acc").unwrap_or_default()
            )),
            Some("holdout") => self.line(&format!(
                "step {} hold-out {}: clean {}, {} {}",
                r["step"],
                r["model"].as_str().unwrap_or("?"),
                pct("clean_acc").unwrap_or_default(),
                r["attack"].as_str().unwrap_or("attack"),
                pct("robust_acc").unwrap_or_default()
            )),
            Some("diagnostics") => self.line(&format!(
                "step {} LoRA delta cosine between methods: mean {:.3} (min {:.3}, max {:.3}); method embedding cosine mean {:.3}",
                r["step"],
                r["delta_cosine"]["mean"].as_f64().unwrap_or(f64::NAN),
                r["delta_cosine"]["min"].as_f64().unwrap_or(f64::NAN),
                r["delta_cosine"]["max"].as_f64().unwrap_or(f64::NAN),
                r["embed_cosine_mean"].as_f64().unwrap_or(f64::NAN),
            )),
            _ => {}
        }
    }
}

fn human(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        _ => format!("{} h {} min", s / 3600, (s % 3600) / 60),
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_pass_restarts_the_rate() {
        let mut p = PlainLog {
            started: Instant::now() - Duration::from_secs(600),
            first_done: None,
            last_line: None,
            last_done: 0,
        };
        assert_eq!(p.observe(0), 0);
        assert_eq!(p.observe(500), 0);
        // The next pass starts over at 0, then 250: counted from its own start.
        assert_eq!(p.observe(0), 0);
        assert!(p.started.elapsed() < Duration::from_secs(60));
        assert_eq!(p.observe(250), 0);
        // Resuming mid-way counts from where it resumed.
        let mut q = PlainLog { last_done: 0, ..p };
        q.first_done = None;
        assert_eq!(q.observe(40), 40);
    }
}
