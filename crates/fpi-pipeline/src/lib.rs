//! The SD1.5 inversion pipeline behind the `fpi` command: it joins the models (`fpi-models`) to the inversion core
//! (`fpi-core`) and handles images. It is async where it reads results back, as a browser build will need.

pub mod image_io;
pub mod pipeline;
pub mod predictor;

pub use pipeline::{Inversion, InvertSettings, Phase, Pipeline, PipelineError};
