//! The SD1.5 inversion pipeline behind the `fpi` command and the web page: it joins the models (`fpi-models`) to the
//! inversion core (`fpi-core`) and handles images. It is async where it reads results back, as the browser build
//! needs.
#![warn(missing_docs)]

pub mod edit;
pub mod image_io;
pub mod pipeline;
pub mod predictor;

pub use pipeline::{InvertedImage, LatentInversion, Phase, PhaseObserver, Pipeline, PipelineError, Reconstruction};
