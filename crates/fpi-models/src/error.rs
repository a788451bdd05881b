//! Errors of loading and running the models: each names the file and, for weights, the key and shapes.

use std::path::PathBuf;

use crate::config::ConfigError;

/// What went wrong while loading a model folder or feeding a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A config file is not valid JSON, lacks a field, or holds a value the models do not support; or the parts'
    /// configs do not fit together (then `path` is the model folder).
    #[error("{path}: bad config: {source}")]
    Config {
        /// The config file, or the model folder.
        path: PathBuf,
        /// Which option, and why.
        #[source]
        source: ConfigError,
    },
    /// A weights file is not a readable safetensors file (truncated, corrupt, or another format).
    #[error("{path}: not a valid safetensors file: {message}")]
    NotSafetensors {
        /// The weights file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// burn-store failed to put checked tensors into the model (a loader fault, not the file's).
    #[error("{path}: the weights could not be put into the model: {message}")]
    WeightsNotApplied {
        /// The weights file.
        path: PathBuf,
        /// burn-store's report, or the parameter left unset.
        message: String,
    },
    /// A tensor the model needs is not in the file.
    #[error("{path}: missing tensor {key:?} (expected shape {expected:?})")]
    MissingTensor {
        /// The weights file.
        path: PathBuf,
        /// The tensor's key, in the model's naming.
        key: String,
        /// The shape the config implies.
        expected: Vec<usize>,
    },
    /// The file holds a tensor the model has no place for.
    #[error("{path}: unexpected tensor {key:?} with shape {shape:?}")]
    UnexpectedTensor {
        /// The weights file.
        path: PathBuf,
        /// The tensor's key in the file.
        key: String,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// A tensor has another shape than the config implies.
    #[error("{path}: tensor {key:?} has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The weights file.
        path: PathBuf,
        /// The tensor's key in the file.
        key: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A tensor is stored in a type the loader does not read.
    #[error("{path}: tensor {key:?} has unsupported dtype {dtype}")]
    UnsupportedDtype {
        /// The weights file.
        path: PathBuf,
        /// The tensor's key in the file.
        key: String,
        /// safetensors' name of its type.
        dtype: String,
    },
    /// The path given as a model folder is not a directory.
    #[error("{path}: not a directory (expected a diffusers model folder with unet/, vae/, text_encoder/, tokenizer/)")]
    NotAFolder {
        /// The path given.
        path: PathBuf,
    },
    /// A file or folder the model folder needs is not there.
    #[error("{path}: not found ({needed})")]
    MissingFile {
        /// The file or folder.
        path: PathBuf,
        /// What needs it, or what would do instead.
        needed: String,
    },
    /// A part's folder has no weights file under any of the names the loader reads.
    #[error("{path}: no weights file (looked for {tried}; .bin/.ckpt files are not read, convert them to safetensors)")]
    NoWeights {
        /// The part's folder.
        path: PathBuf,
        /// The file names looked for, comma-separated.
        tried: String,
    },
    /// A PyTorch pickle (`.ckpt`, `.pt`, `.bin`): never loaded, as unpickling can run code.
    #[error(
        "{path}: a PyTorch pickle, which fpi never loads (unpickling can run code); convert it to .safetensors once: \
         python -c \"import torch, safetensors.torch as st; sd = torch.load('IN.ckpt', map_location='cpu', \
         weights_only=True); sd = sd.get('state_dict', sd); st.save_file({{k: v.contiguous() for k, v in sd.items() \
         if isinstance(v, torch.Tensor)}}, 'OUT.safetensors')\""
    )]
    Pickle {
        /// The file.
        path: PathBuf,
    },
    /// A checkpoint of a model fpi does not run (SD2.x, SDXL, inpainting, …).
    #[error("{path}: {what}; fpi runs Stable Diffusion 1.x text-to-image models")]
    UnsupportedModel {
        /// The checkpoint.
        path: PathBuf,
        /// What the file is.
        what: String,
    },
    /// A checkpoint holds tensors that belong to no part of SD1.x.
    #[error("{path}: {count} tensors that are not Stable Diffusion 1.x's, e.g. {}", first.join(", "))]
    UnknownKeys {
        /// The checkpoint.
        path: PathBuf,
        /// How many.
        count: usize,
        /// The first few keys.
        first: Vec<String>,
    },
    /// A text file (config, tokenizer) is not UTF-8.
    #[error("{path}: not UTF-8 text")]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// The tokenizer files could not be read.
    #[error("{path}: bad tokenizer: {message}")]
    Tokenizer {
        /// The tokenizer file at fault.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The tokenizer failed on a prompt.
    #[error("the prompt could not be tokenized: {message}")]
    Tokenize {
        /// The tokenizer's message.
        message: String,
    },
    /// A token id is past the end of CLIP's token table.
    #[error("token id {id} is outside the vocabulary of {vocab}")]
    TokenOutOfRange {
        /// The token id.
        id: u32,
        /// The number of rows in the table.
        vocab: usize,
    },
    /// A row of token ids given to CLIP is not as long as its position table.
    #[error("expected {expected} token ids per prompt, got {found}")]
    TokenCount {
        /// CLIP's positions (77 for SD).
        expected: usize,
        /// The row's length.
        found: usize,
    },
}

impl Error {
    #[cfg(not(target_family = "wasm"))]
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        Error::Io { path: path.to_owned(), source }
    }
}

/// The models crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
