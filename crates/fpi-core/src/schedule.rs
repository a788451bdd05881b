//! diffusers' `DDIMScheduler` under SD1.5's settings: the ā values of the training steps and the sampling timesteps.

use serde::Deserialize;

use crate::settings::SettingsError;

/// The fields of `scheduler_config.json` that the DDIM schedule uses (SD1.5 ships a PNDM config; its betas apply).
/// Missing fields take SD1.5's values (which differ from `DDIMScheduler`'s own defaults for `steps_offset` and
/// `set_alpha_to_one`); options that change the sampler's arithmetic must be off.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// β of the first training step.
    pub beta_start: f64,
    /// β of the last training step.
    pub beta_end: f64,
    /// How β runs from `beta_start` to `beta_end`.
    pub beta_schedule: BetaSchedule,
    /// Training steps (SD1.5: 1000).
    pub num_train_timesteps: usize,
    /// Added to every sampling timestep (SD1.5: 1).
    pub steps_offset: usize,
    /// Whether ā before the first step is 1 (SD1.5: false, so ā_0 is used).
    pub set_alpha_to_one: bool,
    /// How sampling timesteps are spaced; SD1.5's `leading` only.
    pub timestep_spacing: TimestepSpacing,
    /// What the UNet predicts; ε only.
    pub prediction_type: PredictionType,
    /// Not supported: must be false.
    pub clip_sample: bool,
    /// Not supported: must be false.
    pub thresholding: bool,
    /// Not supported: must be false.
    pub rescale_betas_zero_snr: bool,
    /// Not supported: must be null.
    pub trained_betas: Option<Vec<f64>>,
}

/// diffusers' `beta_schedule` values that fpi implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BetaSchedule {
    /// β linear in √β (SD1.5).
    ScaledLinear,
    /// β linear.
    Linear,
}

/// diffusers' `timestep_spacing` values that fpi implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestepSpacing {
    /// `i · (train steps / steps) + steps_offset` (SD1.5).
    Leading,
}

/// diffusers' `prediction_type` values that fpi implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PredictionType {
    /// The UNet predicts the noise ε (SD1.x).
    Epsilon,
}

impl Default for SchedulerConfig {
    /// SD1.5's settings.
    fn default() -> Self {
        Self {
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            num_train_timesteps: 1000,
            steps_offset: 1,
            set_alpha_to_one: false,
            timestep_spacing: TimestepSpacing::Leading,
            prediction_type: PredictionType::Epsilon,
            clip_sample: false,
            thresholding: false,
            rescale_betas_zero_snr: false,
            trained_betas: None,
        }
    }
}

/// Why a `scheduler_config.json` cannot drive the DDIM schedule.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerConfigError {
    /// Not JSON, a value of the wrong type, or an unsupported choice (serde lists the supported ones).
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    /// An option that changes the sampler's arithmetic, which fpi does not implement.
    #[error("{option} = {value} is not supported (only {supported})")]
    Unsupported {
        /// The option's key.
        option: &'static str,
        /// Its value in the file.
        value: String,
        /// The value fpi implements.
        supported: &'static str,
    },
    /// No training steps.
    #[error("num_train_timesteps must be at least 1")]
    NoTrainingSteps,
    /// An offset that puts even one sampling step past the training steps.
    #[error("steps_offset = {offset} must be less than num_train_timesteps = {train}")]
    Offset {
        /// `steps_offset`.
        offset: usize,
        /// `num_train_timesteps`.
        train: usize,
    },
}

impl SchedulerConfig {
    /// Parses and checks the text of a `scheduler_config.json`.
    pub fn parse(text: &str) -> Result<Self, SchedulerConfigError> {
        let config: Self = serde_json::from_str(text)?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), SchedulerConfigError> {
        let unsupported = |option, value: &dyn std::fmt::Debug, supported| {
            Err(SchedulerConfigError::Unsupported { option, value: format!("{value:?}"), supported })
        };
        for (option, on) in [
            ("clip_sample", self.clip_sample),
            ("thresholding", self.thresholding),
            ("rescale_betas_zero_snr", self.rescale_betas_zero_snr),
        ] {
            if on {
                return unsupported(option, &on, "false");
            }
        }
        if let Some(betas) = &self.trained_betas {
            return unsupported("trained_betas", &betas.len(), "null");
        }
        if self.num_train_timesteps == 0 {
            return Err(SchedulerConfigError::NoTrainingSteps);
        }
        if self.max_steps() == 0 {
            return Err(SchedulerConfigError::Offset { offset: self.steps_offset, train: self.num_train_timesteps });
        }
        Ok(())
    }

    /// The sampling timesteps of `steps` steps, noisiest first.
    fn timesteps(&self, steps: usize) -> Vec<usize> {
        let ratio = self.num_train_timesteps / steps;
        (0..steps).rev().map(|i| i * ratio + self.steps_offset).collect()
    }

    /// The most sampling steps whose timesteps stay within the training steps (SD1.5: 999, as 1000 steps with
    /// `steps_offset` 1 would reach timestep 1000).
    pub fn max_steps(&self) -> usize {
        let n = self.num_train_timesteps;
        (1..=n).rev().find(|&steps| (steps - 1) * (n / steps) + self.steps_offset < n).unwrap_or(0)
    }
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
    /// The schedule of `config` with `steps` sampling steps (1 ≤ steps ≤ [`SchedulerConfig::max_steps`]).
    pub fn new(config: &SchedulerConfig, steps: usize) -> Result<Self, SettingsError> {
        let n = config.num_train_timesteps;
        let max = config.max_steps();
        if steps == 0 || steps > max {
            return Err(SettingsError::Steps { steps, max: Some(max) });
        }
        // In f32, as diffusers computes and accumulates them.
        let betas: Vec<f64> = match config.beta_schedule {
            BetaSchedule::ScaledLinear => {
                linspace(config.beta_start.sqrt(), config.beta_end.sqrt(), n).map(|b| (b * b) as f64).collect()
            }
            BetaSchedule::Linear => linspace(config.beta_start, config.beta_end, n).map(f64::from).collect(),
        };
        let mut alphas_cumprod = Vec::with_capacity(n);
        let mut product = 1.0f32;
        for beta in betas {
            product *= 1.0 - beta as f32;
            alphas_cumprod.push(product as f64);
        }
        let final_alpha_cumprod = if config.set_alpha_to_one { 1.0 } else { alphas_cumprod[0] };
        Ok(Self { alphas_cumprod, final_alpha_cumprod, timesteps: config.timesteps(steps) })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd15_has_50_leading_steps_from_981_and_at_most_999() {
        let config = SchedulerConfig::default();
        let schedule = DdimSchedule::new(&config, 50).unwrap();
        assert_eq!(&schedule.timesteps[..3], &[981, 961, 941]);
        assert_eq!(schedule.timesteps[49], 1);
        assert!((schedule.final_alpha_cumprod - 0.99915).abs() < 1e-6);
        assert_eq!(config.max_steps(), 999);
        assert_eq!(DdimSchedule::new(&config, 999).unwrap().timesteps[0], 999);
        for steps in [0, 1000] {
            let err = DdimSchedule::new(&config, steps).unwrap_err();
            assert_eq!(err, SettingsError::Steps { steps, max: Some(999) });
        }
    }

    #[test]
    fn an_empty_config_is_sd15s() {
        let config = SchedulerConfig::parse("{}").unwrap();
        assert_eq!(DdimSchedule::new(&config, 50).unwrap().alphas_cumprod, {
            DdimSchedule::new(&SchedulerConfig::default(), 50).unwrap().alphas_cumprod
        });
    }

    #[test]
    fn unsupported_options_are_named_with_their_values() {
        let cases = [
            (r#"{"clip_sample": true}"#, "clip_sample = true is not supported (only false)"),
            (r#"{"thresholding": true}"#, "thresholding = true"),
            (r#"{"rescale_betas_zero_snr": true}"#, "rescale_betas_zero_snr = true"),
            (r#"{"trained_betas": [0.1, 0.2]}"#, "trained_betas = 2 is not supported (only null)"),
            (
                r#"{"beta_schedule": "squaredcos_cap_v2"}"#,
                "unknown variant `squaredcos_cap_v2`, expected `scaled_linear` or `linear`",
            ),
            (r#"{"timestep_spacing": "trailing"}"#, "unknown variant `trailing`, expected `leading`"),
            (r#"{"prediction_type": "v_prediction"}"#, "unknown variant `v_prediction`, expected `epsilon`"),
            (r#"{"num_train_timesteps": 0}"#, "num_train_timesteps must be at least 1"),
            (r#"{"steps_offset": 1000}"#, "steps_offset = 1000 must be less than num_train_timesteps = 1000"),
            (r#"{"steps_offset": "one"}"#, "invalid type"),
        ];
        for (text, message) in cases {
            let err = SchedulerConfig::parse(text).unwrap_err().to_string();
            assert!(err.contains(message), "{text}: {err}");
        }
    }
}
