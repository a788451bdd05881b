//! Errors of loading and running the models: each names the file and, for weights, the key and shapes.

use std::path::PathBuf;

/// What went wrong while loading a model folder.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A config file is not valid JSON, lacks a field, or holds a value the models do not support.
    #[error("{path}: bad config: {message}")]
    Config { path: PathBuf, message: String },
    /// A weights file is not a readable safetensors file (truncated, corrupt, or another format).
    #[error("{path}: not a valid safetensors file: {message}")]
    NotSafetensors { path: PathBuf, message: String },
    /// A tensor the model needs is not in the file.
    #[error("{path}: missing tensor {key:?} (expected shape {expected:?})")]
    MissingTensor { path: PathBuf, key: String, expected: Vec<usize> },
    /// The file holds a tensor the model has no place for.
    #[error("{path}: unexpected tensor {key:?} with shape {shape:?}")]
    UnexpectedTensor { path: PathBuf, key: String, shape: Vec<usize> },
    /// A tensor has another shape than the config implies.
    #[error("{path}: tensor {key:?} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch { path: PathBuf, key: String, expected: Vec<usize>, found: Vec<usize> },
    /// A tensor is stored in a type the loader does not read.
    #[error("{path}: tensor {key:?} has unsupported dtype {dtype}")]
    UnsupportedDtype { path: PathBuf, key: String, dtype: String },
    /// A model folder lacks a part.
    #[error("{0}")]
    MissingFile(String),
    /// The tokenizer files could not be read.
    #[error("{path}: bad tokenizer: {message}")]
    Tokenizer { path: PathBuf, message: String },
}

impl Error {
    #[cfg(not(target_family = "wasm"))]
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_owned(), source }
    }
}

/// The models crate's result type.
pub type Result<T> = std::result::Result<T, Error>;
