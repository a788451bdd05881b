//! The inversion core: the settings, DDIM schedules, sampling, fixed-point inversion, the prompt-aware adjustment,
//! seed files and metrics. It knows the model only through [`predictor::NoisePredictor`], so an analytic predictor
//! tests it against closed-form answers.
#![warn(missing_docs)]

pub mod adjust;
pub mod metrics;
pub mod predictor;
pub mod schedule;
pub mod seed;
pub mod seed_space;
pub mod settings;
pub mod solver;
