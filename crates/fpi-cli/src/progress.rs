//! Progress bars: one per phase, showing the step, the iteration and the residual; one per model part loading.

use std::ops::ControlFlow;

use fpi_core::solver::Progress;
use fpi_pipeline::Phase;
use indicatif::{ProgressBar, ProgressStyle};

/// A bar per phase (adjust, invert, sample) and per model part while loading, or nothing with `--quiet`.
pub struct Bars {
    quiet: bool,
    current: Option<(Phase, ProgressBar)>,
    loading: Option<ProgressBar>,
}

impl Bars {
    /// Bars on standard error, or none when `quiet`.
    pub fn new(quiet: bool) -> Self {
        Self { quiet, current: None, loading: None }
    }

    /// The observer to hand the pipeline.
    pub fn observe(&mut self, phase: Phase, p: &Progress) -> ControlFlow<()> {
        if self.quiet {
            return ControlFlow::Continue(());
        }
        if self.current.as_ref().is_none_or(|(current, _)| *current != phase) {
            self.finish();
            let bar = ProgressBar::new(p.steps as u64);
            let style = ProgressStyle::with_template("{prefix:>8} [{bar:30}] {pos}/{len} {msg} ({elapsed}, eta {eta})")
                .expect("valid template")
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(phase.name());
            self.current = Some((phase, bar));
        }
        let (_, bar) = self.current.as_ref().expect("set above");
        bar.set_position(p.step as u64 + 1);
        let message = match p.residual {
            Some(r) => format!("t={} iteration {} residual {r:.2e}", p.timestep, p.iteration),
            None => format!("t={}", p.timestep),
        };
        bar.set_message(message);
        ControlFlow::Continue(())
    }

    /// The load observer to hand `Pipeline::load`: a byte bar per model part.
    pub fn load(&mut self, part: &str, done: u64, total: u64) {
        if self.quiet {
            return;
        }
        if done == 0 {
            let bar = ProgressBar::new(total);
            let style = ProgressStyle::with_template("{prefix:>12} [{bar:30}] {bytes}/{total_bytes} ({elapsed})")
                .expect("valid template")
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(part.to_owned());
            self.loading = Some(bar);
        }
        if let Some(bar) = &self.loading {
            bar.set_position(done);
            if done == total {
                bar.finish();
            }
        }
    }

    /// Ends the current bar.
    pub fn finish(&mut self) {
        if let Some((_, bar)) = self.current.take() {
            bar.finish();
        }
    }
}
