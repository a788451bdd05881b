//! diffusers' `DDIMScheduler` under SD1.5's settings: the ā values of the training steps and the sampling timesteps.

use std::path::Path;

use serde::Deserialize;

/// The fields of `scheduler_config.json` that the DDIM schedule uses (SD1.5 ships a PNDM config; its betas apply).
/// Missing fields take SD1.5's values (which differ from `DDIMScheduler`'s own defaults for `steps_offset` and
/// `set_alpha_to_one`); options that change the sampler's arithmetic must be off.
#[allow(missing_docs)]
#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerConfig {
    #[serde(default = "default_beta_start")]
    pub beta_start: f64,
    #[serde(default = "default_beta_end")]
    pub beta_end: f64,
    #[serde(default = "default_beta_schedule")]
    pub beta_schedule: String,
    #[serde(default = "default_train_steps")]
    pub num_train_timesteps: usize,
    #[serde(default = "default_steps_offset")]
    pub steps_offset: usize,
    #[serde(default)]
    pub set_alpha_to_one: bool,
    #[serde(default = "default_spacing")]
    pub timestep_spacing: String,
    #[serde(default = "default_prediction_type")]
    pub prediction_type: String,
    #[serde(default)]
    pub clip_sample: bool,
    #[serde(default)]
    pub thresholding: bool,
    #[serde(default)]
    pub rescale_betas_zero_snr: bool,
    #[serde(default)]
    pub trained_betas: Option<Vec<f64>>,
}

impl Default for SchedulerConfig {
    /// SD1.5's settings.
    fn default() -> Self {
        serde_json::from_str("{}").expect("all fields have defaults")
    }
}

impl SchedulerConfig {
    /// Reads and checks a `scheduler_config.json`.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text, path)
    }

    /// Parses and checks the text of a `scheduler_config.json` (read from `path`, named in messages).
    pub fn parse(text: &str, path: &Path) -> Result<Self, String> {
        let config: Self = serde_json::from_str(text).map_err(|e| format!("{}: {e}", path.display()))?;
        config.validate().map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        if self.clip_sample || self.thresholding || self.rescale_betas_zero_snr || self.trained_betas.is_some() {
            return Err("clip_sample, thresholding, rescale_betas_zero_snr and trained_betas are not supported".into());
        }
        if !matches!(self.beta_schedule.as_str(), "scaled_linear" | "linear") {
            return Err(format!("unsupported beta_schedule {:?}", self.beta_schedule));
        }
        if self.timestep_spacing != "leading" {
            return Err(format!("unsupported timestep_spacing {:?} (SD1.5 uses leading)", self.timestep_spacing));
        }
        if self.prediction_type != "epsilon" {
            return Err(format!("unsupported prediction_type {:?} (SD1.5 predicts epsilon)", self.prediction_type));
        }
        Ok(())
    }
}

fn default_beta_start() -> f64 {
    0.00085
}
fn default_beta_end() -> f64 {
    0.012
}
fn default_beta_schedule() -> String {
    "scaled_linear".into()
}
fn default_train_steps() -> usize {
    1000
}
fn default_steps_offset() -> usize {
    1
}
fn default_spacing() -> String {
    "leading".into()
}
fn default_prediction_type() -> String {
    "epsilon".into()
}

/// The DDIM schedule for a number of sampling steps.
#[derive(Debug, Clone)]
pub struct DdimSchedule {
    /// ā of every training timestep.
    pub alphas_cumprod: Vec<f64>,
    /// ā before the first training step: 1 with `set_alpha_to_one`, else ā_0 (SD1.5: 0.99915).
    pub final_alpha_cumprod: f64,
    /// Sampling timesteps, noisiest first (SD1.5, 50 steps: 981, 961, …, 1).
    pub timesteps: Vec<usize>,
}

impl DdimSchedule {
    /// The schedule of `config` with `steps` sampling steps (1 ≤ steps ≤ training steps).
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, String> {
        let n = config.num_train_timesteps;
        if steps == 0 || steps > n {
            return Err(format!("steps must be between 1 and {n}, got {steps}"));
        }
        // In f32, as diffusers computes and accumulates them.
        let betas: Vec<f64> = match config.beta_schedule.as_str() {
            "scaled_linear" => {
                linspace(config.beta_start.sqrt(), config.beta_end.sqrt(), n).map(|b| (b * b) as f64).collect()
            }
            _ => linspace(config.beta_start, config.beta_end, n).map(f64::from).collect(),
        };
        let mut alphas_cumprod = Vec::with_capacity(n);
        let mut product = 1.0f32;
        for beta in betas {
            product *= 1.0 - beta as f32;
            alphas_cumprod.push(product as f64);
        }
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { alphas_cumprod[0] };
        let ratio = n / steps;
        let timesteps: Vec<usize> = (0..steps).rev().map(|i| i * ratio + config.steps_offset).collect();
        if timesteps[0] >= n {
            return Err(format!(
                "{steps} steps with steps_offset {} reach timestep {}, past the {n} training steps",
                config.steps_offset, timesteps[0]
            ));
        }
        Ok(Self { alphas_cumprod, final_alpha_cumprod, timesteps })
    }

    /// ā of the step before `timesteps[i]` in sampling order (the destination of a sampling step from it).
    pub fn alpha_cumprod_prev(&self, i: usize) -> f64 {
        match self.timesteps.get(i + 1) {
            Some(&t) => self.alphas_cumprod[t],
            None => self.final_alpha_cumprod,
        }
    }
}

fn linspace(start: f64, end: f64, n: usize) -> impl Iterator<Item = f32> {
    let (start, end) = (start as f32, end as f32);
    let step = if n > 1 { (end - start) / (n - 1) as f32 } else { 0.0 };
    // torch.linspace fills the first half from the start and the second half from the end.
    (0..n).map(move |i| if i < n / 2 { start + step * i as f32 } else { end - step * (n - 1 - i) as f32 })
}

/// ψ(ā) = √(1/ā − 1): the noise-to-signal ratio of DDIM's ODE.
pub fn psi(alpha_cumprod: f64) -> f64 {
    (1.0 / alpha_cumprod - 1.0).sqrt()
}

/// The coefficients of a DDIM step from ā_from to ā_to: `z_to = a·z_from + b·ε`.
pub fn ddim_coefficients(alpha_from: f64, alpha_to: f64) -> (f64, f64) {
    ((alpha_to / alpha_from).sqrt(), alpha_to.sqrt() * (psi(alpha_to) - psi(alpha_from)))
}
