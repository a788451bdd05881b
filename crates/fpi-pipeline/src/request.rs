//! Inversion settings as plain data: what the web page sends (JSON), and the browser test case. One reading of
//! them, so the browser and native builds invert alike.

use fpi_core::solver::Method;
use serde::Deserialize;

use crate::pipeline::InvertSettings;

/// An inversion request: the image side and the settings, as named in the CLI's options.
#[derive(Debug, Clone, Deserialize)]
pub struct InvertRequest {
    pub prompt: String,
    /// Image side in pixels.
    pub size: usize,
    pub steps: usize,
    /// `fpi` or `ddim`.
    pub method: String,
    /// Evaluations per step (fixed-point only).
    pub iterations: usize,
    /// Early stop of a fixed-point step (optional).
    #[serde(default)]
    pub tolerance: Option<f64>,
    pub guidance: f64,
    /// Steps of the prompt-aware adjustment.
    pub adjust: usize,
}

impl InvertRequest {
    /// The pipeline's settings, checked.
    pub fn settings(&self) -> Result<InvertSettings, String> {
        let method = match self.method.as_str() {
            "fpi" => Method::FixedPoint { iterations: self.iterations, tolerance: self.tolerance },
            "ddim" => Method::Ddim,
            other => return Err(format!("unknown method {other:?} (expected fpi or ddim)")),
        };
        let settings = InvertSettings {
            prompt: self.prompt.clone(),
            steps: self.steps,
            guidance: self.guidance,
            method,
            adjust: self.adjust,
        };
        settings.validate()?;
        Ok(settings)
    }
}
