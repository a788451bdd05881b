//! A model's files in whichever form the user has them (a diffusers folder, or one checkpoint file), optionally
//! with another VAE (a VAE folder, a model folder, or a checkpoint), seen as one diffusers folder: the
//! [`ModelSource`] that [`crate::ModelFolder`] loads from.

use std::ops::Range;
use std::path::PathBuf;

use crate::checkpoint::Checkpoint;
use crate::error::{Error, Result};
#[cfg(not(target_family = "wasm"))]
use crate::source::Directory;
use crate::source::ModelSource;

/// The files of a model, or of its replacement VAE, in one of their forms.
#[derive(Debug)]
pub enum Form<S> {
    /// A diffusers folder (`unet/`, `vae/`, …).
    Folder(S),
    /// A VAE's own diffusers folder: `config.json` and its weights at the root (read as a folder's `vae/`).
    VaeFolder(S),
    /// One LDM checkpoint file.
    Checkpoint(Checkpoint<S>),
}

impl<S: ModelSource> Form<S> {
    /// `source` as a model folder, or as a VAE's folder when it has no `vae/` but a `config.json`.
    pub fn folder(source: S) -> Self {
        if !source.exists("vae") && source.exists("config.json") {
            Form::VaeFolder(source)
        } else {
            Form::Folder(source)
        }
    }

    /// The path of `path` (a diffusers folder's) in this form's source.
    fn inner<'p>(&self, path: &'p str) -> &'p str {
        match self {
            Form::VaeFolder(_) => path.strip_prefix("vae/").or_else(|| path.strip_prefix("vae")).unwrap_or(path),
            _ => path,
        }
    }
}

impl<S: ModelSource> ModelSource for Form<S> {
    fn display(&self, path: &str) -> PathBuf {
        match self {
            Form::Folder(s) | Form::VaeFolder(s) => s.display(self.inner(path)),
            Form::Checkpoint(c) => c.display(path),
        }
    }

    fn exists(&self, path: &str) -> bool {
        match self {
            Form::Folder(s) => s.exists(path),
            Form::VaeFolder(s) => path == "vae" || (path.starts_with("vae/") && s.exists(self.inner(path))),
            Form::Checkpoint(c) => c.exists(path),
        }
    }

    fn len(&self, path: &str) -> Result<u64> {
        match self {
            Form::Folder(s) | Form::VaeFolder(s) => s.len(self.inner(path)),
            Form::Checkpoint(c) => c.len(path),
        }
    }

    async fn read(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>> {
        match self {
            Form::Folder(s) | Form::VaeFolder(s) => s.read(self.inner(path), range).await,
            Form::Checkpoint(c) => c.read(path, range).await,
        }
    }
}

/// A model's files, with its `vae/` taken from another form when one is given.
#[derive(Debug)]
pub struct ModelFiles<S> {
    model: Form<S>,
    vae: Option<Form<S>>,
}

impl<S: ModelSource> ModelFiles<S> {
    /// The model `model`, with the VAE of `vae` instead of its own; refuses forms that lack what they are for
    /// (a VAE-only checkpoint as the model, a replacement without a VAE).
    pub fn new(model: Form<S>, vae: Option<Form<S>>) -> Result<Self> {
        if let Form::Checkpoint(c) = &model {
            let parts = c.parts();
            if !(parts.unet && parts.clip && (parts.vae || vae.is_some())) {
                let what = if parts.vae && !parts.unet {
                    "holds only a VAE (give it as the replacement VAE, --vae)"
                } else {
                    "lacks a part of the model (a checkpoint needs the UNet, CLIP's text encoder and a VAE, or \
                     a replacement VAE)"
                };
                return Err(Error::UnsupportedModel { path: c.display(""), what: what.into() });
            }
        }
        if let Some(form) = vae.as_ref().filter(|form| !form.exists("vae")) {
            return Err(Error::MissingFile {
                path: form.display("vae"),
                needed: "a replacement VAE is a VAE folder (config.json and its weights), a model folder with vae/, \
                         or a checkpoint holding a VAE"
                    .into(),
            });
        }
        Ok(Self { model, vae })
    }

    /// The form that holds `path`.
    fn form(&self, path: &str) -> &Form<S> {
        match &self.vae {
            Some(vae) if path == "vae" || path.starts_with("vae/") => vae,
            _ => &self.model,
        }
    }
}

impl<S: ModelSource> ModelSource for ModelFiles<S> {
    fn display(&self, path: &str) -> PathBuf {
        self.form(path).display(path)
    }

    fn exists(&self, path: &str) -> bool {
        self.form(path).exists(path)
    }

    fn len(&self, path: &str) -> Result<u64> {
        self.form(path).len(path)
    }

    async fn read(&self, path: &str, range: Range<u64>) -> Result<Vec<u8>> {
        self.form(path).read(path, range).await
    }
}

#[cfg(not(target_family = "wasm"))]
impl Form<Directory> {
    /// The folder or checkpoint file at `path`; a checkpoint's configs come from the folder `configs` when given.
    pub async fn open(path: &std::path::Path, configs: Option<&std::path::Path>) -> Result<Self> {
        if path.is_dir() {
            return Ok(Form::folder(Directory { root: path.to_owned() }));
        }
        let (Some(name), true) = (path.file_name().and_then(|n| n.to_str()), path.is_file()) else {
            return Err(Error::MissingFile {
                path: path.to_owned(),
                needed: "a model is a diffusers folder or a .safetensors checkpoint file".into(),
            });
        };
        let parent = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(".".as_ref());
        let configs = match configs {
            Some(dir) if !dir.is_dir() => return Err(Error::NotAFolder { path: dir.to_owned() }),
            Some(dir) => Some(Directory { root: dir.to_owned() }),
            None => None,
        };
        let checkpoint = Checkpoint::open(Directory { root: parent.to_owned() }, name, configs.as_ref()).await?;
        Ok(Form::Checkpoint(checkpoint))
    }
}

#[cfg(not(target_family = "wasm"))]
impl ModelFiles<Directory> {
    /// The model at `model` (a diffusers folder or a checkpoint file) with the VAE at `vae` instead of its own;
    /// checkpoints take their configs from the diffusers folder `configs` when given, else SD1.x's.
    pub async fn open(
        model: &std::path::Path,
        vae: Option<&std::path::Path>,
        configs: Option<&std::path::Path>,
    ) -> Result<Self> {
        let model = Form::open(model, configs).await?;
        let vae = match vae {
            Some(path) => Some(Form::open(path, configs).await?),
            None => None,
        };
        Self::new(model, vae)
    }
}
