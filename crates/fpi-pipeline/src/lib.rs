//! The SD1.5 inversion pipeline behind the `fpi` command: it joins the models (`fpi-models`) to the inversion core
//! (`fpi-core`) and handles images. It is async where it reads results back, as the browser build needs.

pub mod image_io;
pub mod pipeline;
pub mod predictor;
pub mod request;

pub use pipeline::{Inversion, InvertSettings, Phase, Pipeline, PipelineError};
pub use request::InvertRequest;
