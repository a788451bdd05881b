//! `--model`, `--vae` and `--config`: a path on disk (a diffusers folder or a checkpoint file) or a hub id, turned
//! into the files a model loads from, and the name seed files record for it.

use std::path::{Path, PathBuf};

use fpi_models::ModelFiles;
use fpi_models::hub::{HubId, HubOptions, RepoKind, resolve};
use fpi_models::source::Directory;

use crate::args::Common;
use crate::failure::Failure;
use crate::progress::Bars;

/// A model ready to load, and its name for seed files.
pub struct ChosenModel {
    /// Its files.
    pub files: ModelFiles<Directory>,
    /// `ORG/NAME` for a hub model, else the folder's or file's name; with the replacement VAE's after a `+`.
    pub name: String,
}

/// The files `common` names: hub ids are looked up in the Hugging Face cache and downloaded into it when missing.
pub fn choose(common: &Common) -> Result<ChosenModel, Failure> {
    let hub = HubOptions::from_env();
    let (model, mut name) = locate(&common.choice.model, RepoKind::Pipeline, &hub, common.run.quiet)?;
    let vae = match &common.choice.vae {
        Some(vae) => {
            let (path, vae_name) = locate(vae, RepoKind::Vae, &hub, common.run.quiet)?;
            name = format!("{name} + {vae_name}");
            Some(path)
        }
        None => None,
    };
    if let Some(config) = &common.choice.config
        && model.is_dir()
        && vae.as_deref().is_none_or(Path::is_dir)
    {
        let message = "--config gives the configs of a single-file checkpoint; --model and --vae are folders";
        return Err(Failure::from(format!("{}: {message}", config.display())));
    }
    let files = pollster::block_on(ModelFiles::open(&model, vae.as_deref(), common.choice.config.as_deref()))?;
    Ok(ChosenModel { files, name })
}

/// Where `text` is on disk: the path itself when it exists, else a hub id's snapshot folder in the cache.
fn locate(text: &str, kind: RepoKind, hub: &HubOptions, quiet: bool) -> Result<(PathBuf, String), Failure> {
    let path = Path::new(text);
    if path.exists() {
        return Ok((path.to_owned(), name_of(path)));
    }
    let Some(id) = HubId::parse(text) else {
        return Err(Failure::from(format!(
            "{text}: no such folder or file, and not a hub id (ORG/NAME or ORG/NAME@REVISION)"
        )));
    };
    let mut bars = Bars::new(quiet);
    let snapshot = resolve(&id, kind, hub, &mut |file, done, total| bars.load(file, done, total))
        .map_err(|e| Failure::from(e.to_string()))?;
    Ok((snapshot, id.to_string()))
}

/// What a seed file records as the model at `path`: a hub id for a folder in the Hugging Face cache
/// (`…/models--ORG--NAME/snapshots/REV`), else the folder's name or the file's stem; never the local path, as
/// seeds are shared.
fn name_of(path: &Path) -> String {
    let path = path.canonicalize().unwrap_or_else(|_| path.to_owned());
    let hub_id = path.iter().filter_map(|c| c.to_str()?.strip_prefix("models--")).next_back();
    match hub_id {
        Some(id) => id.replacen("--", "/", 1),
        None if path.is_file() => path.file_stem().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        None => path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
    }
}
