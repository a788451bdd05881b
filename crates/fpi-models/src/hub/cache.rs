//! The hub cache's layout, as huggingface_hub writes it: `models--ORG--NAME/` holds `blobs/<etag>` (the files'
//! contents), `snapshots/<commit>/<path>` (relative symlinks into `blobs/`) and `refs/<revision>` (the commit a
//! branch or tag was at when last downloaded).

use std::path::{Path, PathBuf};

use super::{RepoKind, is_commit};

/// One thing a complete snapshot holds.
pub(super) enum Need {
    /// A file.
    File(&'static str),
    /// Weights: `<stem>.safetensors` or `<stem>.fp16.safetensors`.
    Weights(&'static str),
    /// The tokenizer: `vocab.json` and `merges.txt`, or `tokenizer.json`.
    Tokenizer,
}

const PIPELINE: &[Need] = &[
    Need::File("unet/config.json"),
    Need::Weights("unet/diffusion_pytorch_model"),
    Need::File("vae/config.json"),
    Need::Weights("vae/diffusion_pytorch_model"),
    Need::File("text_encoder/config.json"),
    Need::Weights("text_encoder/model"),
    Need::Tokenizer,
    Need::File("scheduler/scheduler_config.json"),
];

const VAE: &[Need] = &[Need::File("config.json"), Need::Weights("diffusion_pytorch_model")];

impl RepoKind {
    /// What a complete snapshot of this kind holds.
    pub(super) fn needs(self) -> &'static [Need] {
        match self {
            RepoKind::Pipeline => PIPELINE,
            RepoKind::Vae => VAE,
        }
    }
}

impl Need {
    /// The sets of files that each satisfy this need, the one to download first.
    pub(super) fn alternatives(&self) -> Vec<Vec<String>> {
        match self {
            Need::File(path) => vec![vec![path.to_string()]],
            Need::Weights(stem) => vec![vec![format!("{stem}.fp16.safetensors")], vec![format!("{stem}.safetensors")]],
            Need::Tokenizer => vec![
                vec!["tokenizer/vocab.json".into(), "tokenizer/merges.txt".into()],
                vec!["tokenizer/tokenizer.json".into()],
            ],
        }
    }

    /// Whether the snapshot `dir` satisfies it (a dangling symlink is no file).
    pub(super) fn present(&self, dir: &Path) -> bool {
        self.alternatives().iter().any(|files| files.iter().all(|file| is_file(dir, file)))
    }

    /// The need in messages.
    pub(super) fn describe(&self) -> String {
        match self {
            Need::File(path) => path.to_string(),
            Need::Weights(stem) => format!("{stem}.safetensors (or .fp16.safetensors)"),
            Need::Tokenizer => "tokenizer/vocab.json + tokenizer/merges.txt (or tokenizer/tokenizer.json)".into(),
        }
    }

    /// The files an `hf download` command names for it: for weights the f32 file, which most repositories have
    /// (an fp16-only one needs `.fp16` in the name instead; the message lists both).
    pub(super) fn hint_files(&self) -> Vec<String> {
        let mut alternatives = self.alternatives();
        match self {
            Need::Weights(_) => alternatives.pop(),
            _ => alternatives.into_iter().next(),
        }
        .unwrap_or_default()
    }
}

/// Whether `path` (`/`-separated) in the folder `dir` is a file, following symlinks.
pub(super) fn is_file(dir: &Path, path: &str) -> bool {
    std::fs::metadata(dir.join(path)).is_ok_and(|meta| meta.is_file())
}

/// A repository's folder in the cache.
pub(super) struct Repo {
    /// `<cache>/models--ORG--NAME`.
    pub(super) dir: PathBuf,
}

impl Repo {
    /// The folder of `repo` (`ORG/NAME`) in the cache `cache`.
    pub(super) fn new(cache: &Path, repo: &str) -> Self {
        Repo { dir: cache.join(format!("models--{}", repo.replace('/', "--"))) }
    }

    /// `refs/<revision>`: the commit a branch or tag was at when last downloaded.
    pub(super) fn ref_file(&self, revision: &str) -> PathBuf {
        self.dir.join("refs").join(revision)
    }

    /// The snapshot folder of `commit`.
    pub(super) fn snapshot_dir(&self, commit: &str) -> PathBuf {
        self.dir.join("snapshots").join(commit)
    }

    /// The commit `revision` is (a commit) or was at when last downloaded (a branch or tag), when known.
    pub(super) fn commit(&self, revision: &str) -> Option<String> {
        let commit = match is_commit(revision) {
            true => revision.to_owned(),
            false => std::fs::read_to_string(self.ref_file(revision)).ok()?.trim().to_owned(),
        };
        is_commit(&commit).then_some(commit)
    }
}
