//! How to invert an image: the one settings type that the CLI's options and the page's form build, that the
//! pipeline runs, and that a seed file records as its metadata.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How each inversion step solves its implicit equation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "MethodFields", into = "MethodFields")]
pub enum Method {
    /// One evaluation of f from z_prev (ε taken at z_prev).
    Ddim,
    /// Up to `iterations` evaluations of f from z_prev, stopping early once the relative residual
    /// ‖f(z) − z‖/‖z‖ falls below `tolerance`. One iteration is exactly [`Method::Ddim`].
    FixedPoint {
        /// The most evaluations of f per step (≥ 1).
        iterations: usize,
        /// The early-stop residual, if any (> 0).
        tolerance: Option<f64>,
    },
}

impl Method {
    /// The methods' names, as the CLI, the page and seed files spell them.
    pub const NAMES: [&'static str; 2] = ["fpi", "ddim"];

    /// The method called `name` (one of [`Method::NAMES`]); `iterations` and `tolerance` apply to `fpi` only.
    pub fn from_name(name: &str, iterations: usize, tolerance: Option<f64>) -> Result<Self, SettingsError> {
        match name {
            "fpi" => Ok(Method::FixedPoint { iterations, tolerance }),
            "ddim" => Ok(Method::Ddim),
            other => Err(SettingsError::UnknownMethod(other.to_owned())),
        }
    }

    /// `fpi` or `ddim`.
    pub fn name(&self) -> &'static str {
        match self {
            Method::Ddim => "ddim",
            Method::FixedPoint { .. } => "fpi",
        }
    }

    /// The most evaluations of f per step.
    pub fn iterations(&self) -> usize {
        match *self {
            Method::Ddim => 1,
            Method::FixedPoint { iterations, .. } => iterations,
        }
    }

    /// The early-stop residual, if any.
    pub fn tolerance(&self) -> Option<f64> {
        match *self {
            Method::Ddim => None,
            Method::FixedPoint { tolerance, .. } => tolerance,
        }
    }
}

/// A method as its three flat fields (`method`, `iterations`, `tolerance`): its form in JSON and seed metadata.
#[derive(Serialize, Deserialize)]
struct MethodFields {
    method: String,
    #[serde(default = "default_iterations")]
    iterations: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    tolerance: Option<f64>,
}

fn default_iterations() -> usize {
    InvertSettings::default().method.iterations()
}

impl TryFrom<MethodFields> for Method {
    type Error = SettingsError;

    fn try_from(fields: MethodFields) -> Result<Self, SettingsError> {
        Method::from_name(&fields.method, fields.iterations, fields.tolerance)
    }
}

impl From<Method> for MethodFields {
    fn from(method: Method) -> Self {
        MethodFields { method: method.name().into(), iterations: method.iterations(), tolerance: method.tolerance() }
    }
}

/// Everything that decides how an image becomes a seed. Serialised flat (`prompt`, `size`, `steps`, `guidance`,
/// `method`, `iterations`, `tolerance`, `adjust`): the page sends it as JSON and a seed file stores it as metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvertSettings {
    /// The prompt that describes the image.
    pub prompt: String,
    /// Image side in pixels (the image is centre-cropped to a square and resized to it).
    pub size: usize,
    /// DDIM steps.
    pub steps: usize,
    /// Classifier-free guidance scale (≥ 1; 1 turns guidance off).
    pub guidance: f64,
    /// The solver of each inversion step.
    #[serde(flatten)]
    pub method: Method,
    /// Steps of the prompt-aware adjustment (0: none).
    pub adjust: usize,
}

impl Default for InvertSettings {
    /// The paper's settings for real images: 50 steps, guidance 2, five fixed-point iterations, two adjustment
    /// steps, at SD1.5's 512 pixels.
    fn default() -> Self {
        Self {
            prompt: String::new(),
            size: 512,
            steps: 50,
            guidance: 2.0,
            method: Method::FixedPoint { iterations: 5, tolerance: None },
            adjust: 2,
        }
    }
}

impl InvertSettings {
    /// Checks the settings that do not depend on the model (the pipeline checks the size and the number of steps
    /// against the model's schedule).
    pub fn validate(&self) -> Result<(), SettingsError> {
        check_guidance(self.guidance)?;
        if self.size == 0 {
            return Err(SettingsError::Size { size: 0, multiple: 1 });
        }
        if self.steps == 0 {
            return Err(SettingsError::Steps { steps: 0, max: None });
        }
        if self.adjust > self.steps {
            return Err(SettingsError::AdjustPastSteps { adjust: self.adjust, steps: self.steps });
        }
        if let Method::FixedPoint { iterations, tolerance } = self.method {
            if iterations == 0 {
                return Err(SettingsError::Iterations(iterations));
            }
            if let Some(t) = tolerance.filter(|t| !(*t > 0.0 && t.is_finite())) {
                return Err(SettingsError::Tolerance(t));
            }
        }
        Ok(())
    }
}

/// Guidance must be finite and at least 1 (below 1 diffusers turns guidance off, so seeds would not transfer).
pub fn check_guidance(guidance: f64) -> Result<(), SettingsError> {
    if guidance.is_finite() && guidance >= 1.0 { Ok(()) } else { Err(SettingsError::Guidance(guidance)) }
}

/// One of the settings, for messages: each front end names it its own way (`--steps`, "Steps").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Setting {
    /// [`InvertSettings::size`].
    Size,
    /// [`InvertSettings::steps`].
    Steps,
    /// [`InvertSettings::guidance`].
    Guidance,
    /// The method's name.
    Method,
    /// [`Method::FixedPoint`]'s `iterations`.
    Iterations,
    /// [`Method::FixedPoint`]'s `tolerance`.
    Tolerance,
    /// [`InvertSettings::adjust`].
    Adjust,
}

impl Setting {
    /// The field's name in [`InvertSettings`]' serialisation (and the CLI's option without `--`).
    pub fn name(self) -> &'static str {
        match self {
            Setting::Size => "size",
            Setting::Steps => "steps",
            Setting::Guidance => "guidance",
            Setting::Method => "method",
            Setting::Iterations => "iterations",
            Setting::Tolerance => "tolerance",
            Setting::Adjust => "adjust",
        }
    }
}

/// A setting out of range. [`SettingsError::describe`] words it with the caller's names for the settings; `Display`
/// uses [`Setting::name`].
#[derive(Debug, Clone, PartialEq)]
pub enum SettingsError {
    /// The image side is not a positive multiple of what the model can halve.
    Size {
        /// The side asked for.
        size: usize,
        /// What it must be a multiple of.
        multiple: usize,
    },
    /// Fewer than 1 step, or more than the schedule has.
    Steps {
        /// The steps asked for.
        steps: usize,
        /// The most the model's schedule allows, when known.
        max: Option<usize>,
    },
    /// More adjustment steps than steps.
    AdjustPastSteps {
        /// The adjustment steps asked for.
        adjust: usize,
        /// The steps.
        steps: usize,
    },
    /// Guidance below 1 or not finite.
    Guidance(f64),
    /// Zero fixed-point iterations.
    Iterations(usize),
    /// A tolerance that is not a positive number.
    Tolerance(f64),
    /// A method name other than [`Method::NAMES`].
    UnknownMethod(String),
}

impl SettingsError {
    /// The setting at fault.
    pub fn setting(&self) -> Setting {
        match self {
            SettingsError::Size { .. } => Setting::Size,
            SettingsError::Steps { .. } => Setting::Steps,
            SettingsError::AdjustPastSteps { .. } => Setting::Adjust,
            SettingsError::Guidance(_) => Setting::Guidance,
            SettingsError::Iterations(_) => Setting::Iterations,
            SettingsError::Tolerance(_) => Setting::Tolerance,
            SettingsError::UnknownMethod(_) => Setting::Method,
        }
    }

    /// The message, naming each setting as `name` does (the CLI passes `--steps`, the page its form labels).
    pub fn describe(&self, name: impl Fn(Setting) -> String) -> String {
        let own = name(self.setting());
        match self {
            SettingsError::Size { size, multiple: 1 } => format!("{own} must be positive, got {size}"),
            SettingsError::Size { size, multiple } => {
                format!("{own} must be a positive multiple of {multiple}, got {size}")
            }
            SettingsError::Steps { steps, max: Some(max) } => {
                format!("{own} must be between 1 and {max} for this model's schedule, got {steps}")
            }
            SettingsError::Steps { steps, max: None } => format!("{own} must be at least 1, got {steps}"),
            SettingsError::AdjustPastSteps { adjust, steps } => {
                format!("{own} {adjust} is more than {} {steps}", name(Setting::Steps))
            }
            SettingsError::Guidance(g) => format!("{own} must be a number ≥ 1, got {g}"),
            SettingsError::Iterations(n) => format!("{own} must be at least 1, got {n}"),
            SettingsError::Tolerance(t) => format!("{own} must be a positive number, got {t}"),
            SettingsError::UnknownMethod(m) => {
                format!("{own} must be {}, got {m:?}", Method::NAMES.join(" or "))
            }
        }
    }
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe(|s| s.name().to_owned()))
    }
}

impl std::error::Error for SettingsError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(change: impl FnOnce(&mut InvertSettings)) -> InvertSettings {
        let mut settings = InvertSettings { prompt: "a cat".into(), ..InvertSettings::default() };
        change(&mut settings);
        settings
    }

    #[test]
    fn the_defaults_are_the_papers_and_valid() {
        let settings = InvertSettings::default();
        assert_eq!((settings.size, settings.steps, settings.guidance, settings.adjust), (512, 50, 2.0, 2));
        assert_eq!(settings.method, Method::FixedPoint { iterations: 5, tolerance: None });
        settings.validate().unwrap();
    }

    #[test]
    fn each_bad_setting_is_named() {
        let cases = [
            (with(|s| s.steps = 0), Setting::Steps, "steps must be at least 1, got 0"),
            (with(|s| s.size = 0), Setting::Size, "size must be positive, got 0"),
            (with(|s| s.adjust = 51), Setting::Adjust, "adjust 51 is more than steps 50"),
            (with(|s| s.guidance = 0.5), Setting::Guidance, "guidance must be a number ≥ 1, got 0.5"),
            (with(|s| s.guidance = f64::NAN), Setting::Guidance, "guidance must be a number ≥ 1, got NaN"),
            (
                with(|s| s.method = Method::FixedPoint { iterations: 0, tolerance: None }),
                Setting::Iterations,
                "iterations must be at least 1, got 0",
            ),
            (
                with(|s| s.method = Method::FixedPoint { iterations: 5, tolerance: Some(-1.0) }),
                Setting::Tolerance,
                "tolerance must be a positive number, got -1",
            ),
        ];
        for (settings, setting, message) in cases {
            let err = settings.validate().unwrap_err();
            assert_eq!((err.setting(), err.to_string()), (setting, message.to_owned()));
        }
    }

    #[test]
    fn messages_use_the_callers_names() {
        let err = with(|s| s.adjust = 60).validate().unwrap_err();
        assert_eq!(err.describe(|s| format!("--{}", s.name())), "--adjust 60 is more than --steps 50");
    }

    #[test]
    fn ddim_ignores_iterations_and_tolerance() {
        let settings = with(|s| s.method = Method::from_name("ddim", 0, Some(-1.0)).unwrap());
        settings.validate().unwrap();
        assert_eq!(settings.method.iterations(), 1);
    }

    #[test]
    fn json_is_flat_and_reads_back() {
        let settings = with(|s| s.method = Method::FixedPoint { iterations: 3, tolerance: Some(1e-3) });
        let json = serde_json::to_value(&settings).unwrap();
        let expected = serde_json::json!({
            "prompt": "a cat", "size": 512, "steps": 50, "guidance": 2.0,
            "method": "fpi", "iterations": 3, "tolerance": 1e-3, "adjust": 2
        });
        assert_eq!(json, expected);
        assert_eq!(serde_json::from_value::<InvertSettings>(json).unwrap(), settings);
        let ddim = with(|s| s.method = Method::Ddim);
        let json = serde_json::to_value(&ddim).unwrap();
        assert_eq!(
            (json["method"].as_str(), json["iterations"].as_u64(), json.get("tolerance")),
            (Some("ddim"), Some(1), None)
        );
        assert_eq!(serde_json::from_value::<InvertSettings>(json).unwrap(), ddim);
    }

    #[test]
    fn an_unknown_method_is_an_error_naming_the_known_ones() {
        let mut json = serde_json::to_value(with(|_| {})).unwrap();
        json["method"] = "edict".into();
        let err = serde_json::from_value::<InvertSettings>(json).unwrap_err().to_string();
        assert!(err.contains("method must be fpi or ddim, got \"edict\""), "{err}");
    }
}
