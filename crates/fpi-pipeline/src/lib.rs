//! The SD1.5 inversion pipeline shared by the `fpi` command and the web page: it joins the models
//! (`fpi-models`) to the inversion core (`fpi-core`) and handles images.

pub mod image_io;
pub mod pipeline;
pub mod predictor;

pub use pipeline::{Inversion, InvertSettings, Phase, Pipeline, PipelineError};
