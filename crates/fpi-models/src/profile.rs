//! Where a forward pass spends its device time, by kind of operation.
//!
//! While [`record`] runs a forward pass on this thread, the layers run each convolution, linear layer, attention,
//! norm and GEGLU gate in a profiling window of its own (burn's [`Device::profile`]: the device's timestamps where
//! the adapter has `timestamp-query`, as lavapipe and Chromium's WebGPU do, else the wall clock between two syncs).
//! The windows resolve asynchronously, so the same profile runs natively and in a browser. Outside [`record`] the
//! layers run as they are, at the cost of one thread-local check each.

use std::cell::{Cell, RefCell};
use std::fmt;

use burn::nn::Linear;
use burn::tensor::{Device, ProfileDuration, Tensor};

/// A kind of operation the layers time while [`record`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// 3×3 convolutions: ResNet blocks, down- and upsampling, the UNet's first and last layers.
    Convolution3x3,
    /// 1×1 convolutions: ResNet shortcuts and, in SD1.x, the transformers' projections in and out.
    Convolution1x1,
    /// Linear layers: attention's query, key, value and output projections, the feed-forward's two products, the
    /// time embedding and its projection into each ResNet block.
    Linear,
    /// `softmax(q·kᵀ/√d)·v`, in blocks of query rows.
    Attention,
    /// Group norm, fused with the SiLU that follows it in ResNet blocks.
    GroupNorm,
    /// Layer norm (computed in f32) before each attention and feed-forward.
    LayerNorm,
    /// The feed-forward's gate `value · gelu(gate)` between its two linear layers.
    GegluGate,
}

impl Op {
    /// A short name for tables and JSON keys.
    pub fn name(self) -> &'static str {
        match self {
            Op::Convolution3x3 => "convolution 3×3",
            Op::Convolution1x1 => "convolution 1×1",
            Op::Linear => "linear",
            Op::Attention => "attention (scores, softmax, values)",
            Op::GroupNorm => "group norm (+ SiLU)",
            Op::LayerNorm => "layer norm",
            Op::GegluGate => "GEGLU gate",
        }
    }

    /// The kind of a convolution with a `kernel`×`kernel` filter (1×1 or 3×3; other sizes count as 3×3).
    pub fn convolution(kernel: usize) -> Op {
        if kernel == 1 { Op::Convolution1x1 } else { Op::Convolution3x3 }
    }
}

thread_local! {
    /// The open recording's windows, while [`record`] runs.
    static WINDOWS: RefCell<Option<Vec<(Op, ProfileDuration)>>> = const { RefCell::new(None) };
    /// Whether a window is open (a window inside it would be charged to both).
    static INSIDE: Cell<bool> = const { Cell::new(false) };
    /// Operations that ran without a measurement because the device refused to open or close their window.
    static UNTIMED: Cell<usize> = const { Cell::new(0) };
}

/// Runs `f` (an operation of kind `op` on `device`) in a profiling window of its own while [`record`] runs on
/// this thread; otherwise just runs it.
pub(crate) fn timed<O: Send>(op: Op, device: &Device, f: impl FnOnce() -> O + Send) -> O {
    let recording = WINDOWS.with_borrow(Option::is_some);
    if !recording || INSIDE.get() {
        return f();
    }
    let (mut f, mut out) = (Some(f), None);
    INSIDE.set(true);
    let profiled = device.profile(|| out = f.take().map(|f| f()));
    INSIDE.set(false);
    match (profiled, out) {
        (Ok(((), window)), Some(out)) => {
            WINDOWS.with_borrow_mut(|windows| windows.as_mut().expect("recording").push((op, window)));
            out
        }
        // The device refused to open the window (the operation has not run) or to close it: untimed.
        (_, out) => {
            UNTIMED.set(UNTIMED.get() + 1);
            out.unwrap_or_else(|| f.take().expect("an operation the device did not run")())
        }
    }
}

/// `layer.forward(x)`, timed as [`Op::Linear`].
pub(crate) fn linear<const D: usize>(layer: &Linear, x: Tensor<D>) -> Tensor<D> {
    let device = x.device();
    timed(Op::Linear, &device, || layer.forward(x))
}

/// Runs `f` with the layers timing their operations; returns its output and the windows, to be resolved once the
/// device has run them ([`Recording::resolve`]).
pub fn record<O>(f: impl FnOnce() -> O) -> (O, Recording) {
    /// Ends the recording however `f` ends, a panic included, so that a later [`record`] can start.
    struct Open;
    impl Drop for Open {
        fn drop(&mut self) {
            WINDOWS.with_borrow_mut(|windows| *windows = None);
            INSIDE.set(false);
        }
    }
    WINDOWS.with_borrow_mut(|windows| {
        assert!(windows.is_none(), "profile::record does not nest");
        *windows = Some(Vec::new());
    });
    let open = Open;
    UNTIMED.set(0);
    let out = f();
    let windows = WINDOWS.with_borrow_mut(Option::take).unwrap_or_default();
    drop(open);
    (out, Recording { windows, untimed: UNTIMED.take() })
}

/// The profiling windows of one [`record`]ed run.
pub struct Recording {
    windows: Vec<(Op, ProfileDuration)>,
    untimed: usize,
}

impl Recording {
    /// Waits for the device's measurements and sums them by kind of operation.
    pub async fn resolve(self) -> OpTimes {
        let mut rows: Vec<OpTime> = Vec::new();
        let mut empty = 0;
        for (op, window) in self.windows {
            let Some(ticks) = window.resolve().await else {
                empty += 1;
                continue;
            };
            let seconds = ticks.duration().as_secs_f64();
            match rows.iter_mut().find(|row| row.op == op) {
                Some(row) => {
                    row.count += 1;
                    row.seconds += seconds;
                }
                None => rows.push(OpTime { op, count: 1, seconds }),
            }
        }
        rows.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        OpTimes { rows, untimed: self.untimed + empty }
    }
}

/// Device time of one kind of operation over a run.
#[derive(Debug, Clone, PartialEq)]
pub struct OpTime {
    /// The kind.
    pub op: Op,
    /// Operations of this kind that were timed.
    pub count: usize,
    /// Their device time, summed.
    pub seconds: f64,
}

/// Device time by kind of operation, largest first.
#[derive(Debug, Clone, PartialEq)]
pub struct OpTimes {
    /// One row per kind that ran.
    pub rows: Vec<OpTime>,
    /// Operations that ran without a measurement (the device refused a window, or it carried no work).
    pub untimed: usize,
}

impl OpTimes {
    /// The device time of all timed operations.
    pub fn timed_seconds(&self) -> f64 {
        self.rows.iter().map(|row| row.seconds).sum()
    }
}

/// A step's time by operation: the timed kinds against the whole step measured in one window; the rest (residual
/// additions, concatenations, upsampling, layout copies, and the device waiting between operations) is "everything
/// else".
#[derive(Debug, Clone, PartialEq)]
pub struct StepProfile {
    /// The whole step in one profiling window (no window per operation), in seconds.
    pub step_seconds: f64,
    /// The step's operations, each in its own window.
    pub ops: OpTimes,
}

impl StepProfile {
    /// Runs `step` once to warm up (kernels compiled, shapes tuned), once in one window, once with a window per
    /// operation. Fails, in one line, if the device fails or gives no measurement of the whole step.
    pub async fn measure(device: &Device, step: impl Fn() -> Tensor<4> + Send + Sync) -> Result<StepProfile, String> {
        let failed = |e: burn::tensor::ExecutionError| format!("the device failed: {e:?}");
        step().into_data_async().await.map_err(failed)?;
        let (out, whole) = device.profile(&step).map_err(failed)?;
        out.into_data_async().await.map_err(failed)?;
        let whole = whole.resolve().await.ok_or("the device measured nothing for the whole step")?;
        let (out, recording) = record(&step);
        out.into_data_async().await.map_err(failed)?;
        Ok(StepProfile { step_seconds: whole.duration().as_secs_f64(), ops: recording.resolve().await })
    }

    /// The step's time outside the timed operations (never below zero: the windows' own cost can exceed it).
    pub fn other_seconds(&self) -> f64 {
        (self.step_seconds - self.ops.timed_seconds()).max(0.0)
    }
}

impl fmt::Display for StepProfile {
    /// A Markdown table: each kind's count, seconds and share of the step, then the rest.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let share = |seconds: f64| 100.0 * seconds / self.step_seconds.max(f64::MIN_POSITIVE);
        writeln!(f, "| operation | count | seconds | share of the step |")?;
        writeln!(f, "| --- | ---: | ---: | ---: |")?;
        for row in &self.ops.rows {
            writeln!(f, "| {} | {} | {:.4} | {:.1} % |", row.op.name(), row.count, row.seconds, share(row.seconds))?;
        }
        let other = self.other_seconds();
        writeln!(
            f,
            "| everything else (additions, concatenations, copies, waiting) | | {other:.4} | {:.1} % |",
            share(other)
        )?;
        write!(f, "| whole step (one window) | | {:.4} | 100 % |", self.step_seconds)?;
        if self.ops.untimed > 0 {
            write!(f, "\n\n{} operations ran without a measurement.", self.ops.untimed)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor};

    use super::{Op, record, timed};

    #[test]
    #[allow(deprecated)]
    fn a_panic_inside_a_recording_ends_it() {
        let device = Device::ndarray();
        let panicked = std::panic::catch_unwind(|| record(|| timed(Op::Linear, &Device::ndarray(), || panic!("op"))));
        assert!(panicked.is_err());
        let x = Tensor::<1>::ones([4], &device);
        let (y, recording) = record(|| timed(Op::Linear, &device, || x.clone() * 2.0));
        assert_eq!(y.into_data().to_vec::<f32>().unwrap(), vec![2.0; 4]);
        let times = pollster::block_on(recording.resolve());
        assert_eq!((times.rows.len(), times.rows[0].op, times.rows[0].count, times.untimed), (1, Op::Linear, 1, 0));
    }
}
