//! The CLI's one-line error: library errors in the user's terms (settings named by their `--flags`).

use std::fmt;
use std::path::Path;

use fpi_core::seed::SeedError;
use fpi_core::settings::SettingsError;
use fpi_models::device::NoAdapter;
use fpi_models::precision::NoHalfPrecision;
use fpi_pipeline::PipelineError;

/// A message for the user, shown after `error: `.
#[derive(Debug)]
pub struct Failure(String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `problem` with the file it concerns.
pub fn at(path: &Path, problem: impl fmt::Display) -> Failure {
    Failure(format!("{}: {problem}", path.display()))
}

impl From<String> for Failure {
    fn from(message: String) -> Self {
        Failure(message)
    }
}

impl From<SettingsError> for Failure {
    fn from(e: SettingsError) -> Self {
        Failure(e.describe(|setting| format!("--{}", setting.name())))
    }
}

impl From<PipelineError> for Failure {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Settings(e) => e.into(),
            other => Failure(other.to_string()),
        }
    }
}

impl From<fpi_core::solver::RunError> for Failure {
    fn from(e: fpi_core::solver::RunError) -> Self {
        Failure(e.to_string())
    }
}

impl From<fpi_models::Error> for Failure {
    fn from(e: fpi_models::Error) -> Self {
        Failure(e.to_string())
    }
}

impl From<NoAdapter> for Failure {
    fn from(e: NoAdapter) -> Self {
        Failure(e.to_string())
    }
}

impl From<NoHalfPrecision> for Failure {
    fn from(e: NoHalfPrecision) -> Self {
        Failure(e.to_string())
    }
}

/// Extends results with the file they concern.
pub trait AtPath<T> {
    /// The error, prefixed with `path`.
    fn at(self, path: &Path) -> Result<T, Failure>;
}

impl<T> AtPath<T> for Result<T, SeedError> {
    fn at(self, path: &Path) -> Result<T, Failure> {
        self.map_err(|e| at(path, e))
    }
}

impl<T> AtPath<T> for Result<T, PipelineError> {
    fn at(self, path: &Path) -> Result<T, Failure> {
        self.map_err(|e| at(path, Failure::from(e)))
    }
}
