//! The inversion core: DDIM schedules, sampling, fixed-point inversion, the prompt-aware adjustment, seed files and
//! metrics. It knows the model only through [`predictor::NoisePredictor`], so an analytic predictor can test it
//! against closed-form answers.

pub mod adjust;
pub mod metrics;
pub mod predictor;
pub mod schedule;
pub mod seed;
pub mod solver;
