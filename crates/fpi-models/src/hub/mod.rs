//! Models from the Hugging Face hub: `ORG/NAME[@REV]` resolved to a snapshot folder of the local hub cache (the
//! layout huggingface_hub and diffusers share, so each finds what the other fetched), downloaded into it first
//! when it is not complete there (feature `download`). A complete snapshot is used without touching the network.

use std::fmt;
use std::path::PathBuf;

mod cache;
#[cfg(feature = "download")]
mod download;

use cache::{Need, Repo};

/// The revision of an id that names none.
const MAIN: &str = "main";

/// A model repository on the hub and a revision of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubId {
    /// `ORG/NAME`.
    pub repo: String,
    /// A branch, a tag or a 40-hex commit (`main` unless named).
    pub revision: String,
}

impl HubId {
    /// `ORG/NAME` or `ORG/NAME@REV`; None for anything else (a path such as `./x`, `/x` or `a/b/c`). Names hold
    /// `A-Z a-z 0-9 . _ -`, and neither start nor end with `.` or `-`; REV is a branch or tag (which may hold `/`)
    /// or a commit. A folder on disk of the same name should be looked for first.
    pub fn parse(text: &str) -> Option<HubId> {
        let (repo, revision) = text.split_once('@').unwrap_or((text, MAIN));
        let (org, name) = repo.split_once('/')?;
        if !(is_name(org) && is_name(name) && is_revision(revision)) {
            return None;
        }
        let revision =
            if is_commit(&revision.to_ascii_lowercase()) { revision.to_ascii_lowercase() } else { revision.into() };
        Some(HubId { repo: repo.into(), revision })
    }
}

impl fmt::Display for HubId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.revision.as_str() {
            MAIN => f.write_str(&self.repo),
            revision => write!(f, "{}@{revision}", self.repo),
        }
    }
}

/// An organisation's or a model's name as the hub allows it.
fn is_name(name: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    let edge = |c: Option<char>| c.is_some_and(|c| c != '.' && c != '-');
    (1..=96).contains(&name.len())
        && name.chars().all(allowed)
        && edge(name.chars().next())
        && edge(name.chars().last())
        && !name.contains("--")
        && !name.contains("..")
}

/// A branch or tag name (parts separated by `/`, none empty or starting with `.`), or a commit.
fn is_revision(revision: &str) -> bool {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    revision.len() <= 255
        && !revision.contains("..")
        && revision.split('/').all(|part| !part.is_empty() && !part.starts_with('.') && part.chars().all(allowed))
}

/// A full commit sha: 40 lowercase hex digits.
fn is_commit(text: &str) -> bool {
    text.len() == 40 && text.chars().all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
}

/// What a complete snapshot must hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepoKind {
    /// A diffusers Stable Diffusion pipeline: `unet/`, `vae/`, `text_encoder/`, `tokenizer/`, `scheduler/`.
    Pipeline,
    /// A diffusers VAE alone (such as `stabilityai/sd-vae-ft-mse`): `config.json` and its weights at the root.
    Vae,
}

impl fmt::Display for RepoKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RepoKind::Pipeline => "a diffusers Stable Diffusion pipeline",
            RepoKind::Vae => "a diffusers VAE",
        })
    }
}

/// Where the cache is, which hub to ask, and whether to ask it at all.
#[derive(Clone)]
pub struct HubOptions {
    /// The hub cache folder (holding `models--ORG--NAME/`).
    pub cache: PathBuf,
    /// The hub's base URL, without a trailing `/`.
    pub endpoint: String,
    /// Never use the network: only the cache.
    pub offline: bool,
    /// An access token for private and gated repositories.
    pub token: Option<String>,
}

impl fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HubOptions")
            .field("cache", &self.cache)
            .field("endpoint", &self.endpoint)
            .field("offline", &self.offline)
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .finish()
    }
}

impl HubOptions {
    /// huggingface_hub's settings: the cache `HF_HUB_CACHE`, else `$HF_HOME/hub` (`HF_HOME` defaulting to
    /// `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`); the hub `HF_ENDPOINT`, else
    /// `https://huggingface.co`; offline when `HF_HUB_OFFLINE` is 1, ON, YES or TRUE; the token `HF_TOKEN`, else
    /// the file `HF_TOKEN_PATH`, else `$HF_HOME/token`.
    pub fn from_env() -> Self {
        Self::from_lookup(&|name| std::env::var(name).ok(), std::env::home_dir())
    }

    /// [`Self::from_env`] with the variables from `env` and the home folder `home`.
    fn from_lookup(env: &dyn Fn(&str) -> Option<String>, home: Option<PathBuf>) -> Self {
        let var = |name: &str| env(name).map(|value| value.trim().to_owned()).filter(|value| !value.is_empty());
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            let cache = var("XDG_CACHE_HOME").map(PathBuf::from);
            cache.unwrap_or_else(|| home.unwrap_or_default().join(".cache")).join("huggingface")
        });
        let cache = var("HF_HUB_CACHE").map(PathBuf::from).unwrap_or_else(|| hf_home.join("hub"));
        let endpoint = var("HF_ENDPOINT").map(|url| url.trim_end_matches('/').to_owned());
        let offline = var("HF_HUB_OFFLINE")
            .is_some_and(|value| ["1", "ON", "YES", "TRUE"].iter().any(|yes| value.eq_ignore_ascii_case(yes)));
        let token = var("HF_TOKEN").or_else(|| {
            let file = var("HF_TOKEN_PATH").map(PathBuf::from).unwrap_or_else(|| hf_home.join("token"));
            std::fs::read_to_string(file).ok().map(|text| text.trim().to_owned()).filter(|text| !text.is_empty())
        });
        HubOptions { cache, endpoint: endpoint.unwrap_or_else(|| "https://huggingface.co".into()), offline, token }
    }
}

/// Why a model could not be found in the cache or fetched into it. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The cache lacks files and the network may not be used.
    #[error(
        "{id}: the Hugging Face cache {} lacks {} and HF_HUB_OFFLINE is set: unset it to download, or fetch it with \
         `{}`",
        .gap.folder.display(), .gap.missing, .gap.hint
    )]
    Offline {
        /// The model.
        id: HubId,
        /// What the cache lacks.
        gap: Box<CacheGap>,
    },
    /// The cache lacks files and this build cannot download.
    #[error(
        "{id}: the Hugging Face cache {} lacks {} and this fpi was built without downloads: fetch it with `{}`",
        .gap.folder.display(), .gap.missing, .gap.hint
    )]
    NoDownloads {
        /// The model.
        id: HubId,
        /// What the cache lacks.
        gap: Box<CacheGap>,
    },
    /// The hub could not be connected to.
    #[error(
        "{id}: could not reach {endpoint} ({reason}) to download what the Hugging Face cache {} lacks ({}): run \
         again with network, or fetch it with `{}`",
        .gap.folder.display(), .gap.missing, .gap.hint
    )]
    Unreachable {
        /// The model.
        id: HubId,
        /// The hub (or the server it redirected to).
        endpoint: String,
        /// What the connection said.
        reason: String,
        /// What the cache lacks.
        gap: Box<CacheGap>,
    },
    /// The hub answered 401, 403 or 404.
    #[error(
        "{id} is not on the hub {endpoint}, or is private or gated (HTTP {status}): set HF_TOKEN to a token with access"
    )]
    NoAccess {
        /// The model.
        id: HubId,
        /// The hub.
        endpoint: String,
        /// The HTTP status.
        status: u16,
    },
    /// The repository lacks files a model of its kind needs.
    #[error("{id}: commit {commit} on the hub has no {missing}, so it is not {kind}")]
    NotAvailable {
        /// The model.
        id: HubId,
        /// The commit the revision is at.
        commit: String,
        /// What it lacks.
        missing: String,
        /// What it was expected to be.
        kind: RepoKind,
    },
    /// A part's weights are only in pickle files.
    #[error(
        "{id}: the hub has no safetensors weights for {part} (only {found}), and fpi never unpickles .bin/.ckpt files"
    )]
    NoSafetensors {
        /// The model.
        id: HubId,
        /// The part (`unet/`), or the repository's root.
        part: String,
        /// The pickle files there.
        found: String,
    },
    /// The hub or its file server answered another HTTP error.
    #[error("{url}: HTTP {status} while downloading {id} into {folder}")]
    Http {
        /// The model.
        id: HubId,
        /// The URL asked.
        url: String,
        /// The HTTP status.
        status: u16,
        /// Its folder in the cache.
        folder: PathBuf,
    },
    /// An answer is not what the hub sends (bad JSON, no ETag, a redirect without a location).
    #[error("{url}: unexpected answer while downloading {id}: {message}")]
    BadResponse {
        /// The model.
        id: HubId,
        /// The URL asked.
        url: String,
        /// What is wrong with it.
        message: String,
    },
    /// A file's download broke off, or brought another number of bytes than announced.
    #[error("{id}: the download of {path} broke off after {done} of {total} bytes ({reason}); run again to retry")]
    Incomplete {
        /// The model.
        id: HubId,
        /// The file in the repository.
        path: String,
        /// Bytes received.
        done: u64,
        /// Bytes announced.
        total: u64,
        /// What the connection said.
        reason: String,
    },
    /// A downloaded file's sha256 is not its ETag.
    #[error("{id}: {path} arrived with sha256 {found}, expected {expected}; run again to retry")]
    Checksum {
        /// The model.
        id: HubId,
        /// The file in the repository.
        path: String,
        /// The ETag (the file's sha256).
        expected: String,
        /// The sha256 of what arrived.
        found: String,
    },
    /// A transfer failed after the connection was made.
    #[error("{url}: downloading {id} failed: {reason}")]
    Transfer {
        /// The model.
        id: HubId,
        /// The URL asked.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// A file or folder of the cache could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
}

/// What the cache lacks of a model, as errors tell it.
#[derive(Debug, Clone)]
pub struct CacheGap {
    /// The model's folder in the cache (`<cache>/models--ORG--NAME`).
    pub folder: PathBuf,
    /// The missing files, or the missing revision.
    pub missing: String,
    /// An `hf download` command that fetches them.
    pub hint: String,
}

/// The snapshot folder (`<cache>/models--ORG--NAME/snapshots/<commit>/`) holding a complete model of `kind` at
/// `id`'s revision: from the cache without touching the network when it is complete there, else downloaded into
/// the cache first (only the files fpi reads, fp16 weights when the repository has them). `progress` hears each
/// file's path in the repository, its bytes downloaded so far and in all.
pub fn resolve(
    id: &HubId,
    kind: RepoKind,
    options: &HubOptions,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<PathBuf, HubError> {
    let repo = Repo::new(&options.cache, &id.repo);
    let commit = repo.commit(&id.revision);
    let snapshot = commit.as_deref().map(|commit| repo.snapshot_dir(commit)).filter(|dir| dir.is_dir());
    let missing: Vec<&Need> = match &snapshot {
        Some(dir) => kind.needs().iter().filter(|need| !need.present(dir)).collect(),
        None => kind.needs().iter().collect(),
    };
    if let Some(dir) = snapshot.as_ref().filter(|_| missing.is_empty()) {
        return Ok(dir.clone());
    }
    let hint = std::iter::once(format!("hf download {} --revision {}", id.repo, id.revision))
        .chain(missing.iter().flat_map(|need| need.hint_files()))
        .collect::<Vec<_>>()
        .join(" ");
    let described = match (&snapshot, commit) {
        (Some(_), _) => missing.iter().map(|need| need.describe()).collect::<Vec<_>>().join(", "),
        (None, Some(commit)) if commit == id.revision => format!("commit {commit} (no snapshots/{commit})"),
        (None, Some(commit)) => format!("revision {} (refs/{0} is {commit}, no snapshots/{commit})", id.revision),
        (None, None) => format!("revision {} (no refs/{0})", id.revision),
    };
    let gap = CacheGap { folder: repo.dir.clone(), missing: described, hint };
    if options.offline {
        return Err(HubError::Offline { id: id.clone(), gap: Box::new(gap) });
    }
    fetch(id, kind, options, &repo, gap, progress)
}

#[cfg(feature = "download")]
fn fetch(
    id: &HubId,
    kind: RepoKind,
    options: &HubOptions,
    repo: &Repo,
    gap: CacheGap,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<PathBuf, HubError> {
    download::download(id, kind, options, repo, gap, progress)
}

#[cfg(not(feature = "download"))]
fn fetch(
    id: &HubId,
    _: RepoKind,
    _: &HubOptions,
    _: &Repo,
    gap: CacheGap,
    _: &mut dyn FnMut(&str, u64, u64),
) -> Result<PathBuf, HubError> {
    Err(HubError::NoDownloads { id: id.clone(), gap: Box::new(gap) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn options(vars: &[(&str, &str)]) -> HubOptions {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let lookup = move |name: &str| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        HubOptions::from_lookup(&lookup, Some(PathBuf::from("/home/me")))
    }

    #[test]
    fn defaults_follow_huggingface_hub() {
        let o = options(&[]);
        assert_eq!(o.cache, Path::new("/home/me/.cache/huggingface/hub"));
        assert_eq!(o.endpoint, "https://huggingface.co");
        assert!(!o.offline);
        assert_eq!(o.token, None);
        assert_eq!(options(&[("XDG_CACHE_HOME", "/xdg")]).cache, Path::new("/xdg/huggingface/hub"));
    }

    #[test]
    fn variables_override_the_defaults() {
        let o = options(&[("HF_HOME", "/hf"), ("HF_ENDPOINT", "http://mirror:8080/"), ("HF_TOKEN", " hf_x\n")]);
        assert_eq!(o.cache, Path::new("/hf/hub"));
        assert_eq!(o.endpoint, "http://mirror:8080");
        assert_eq!(o.token.as_deref(), Some("hf_x"));
        assert!(!format!("{o:?}").contains("hf_x"), "Debug shows the token");
        assert_eq!(options(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/c")]).cache, Path::new("/c"));
        for (value, offline) in [("1", true), ("on", true), ("Yes", true), ("TRUE", true), ("0", false), ("no", false)]
        {
            assert_eq!(options(&[("HF_HUB_OFFLINE", value)]).offline, offline, "HF_HUB_OFFLINE={value}");
        }
    }

    #[test]
    fn the_token_file_is_read_when_hf_token_is_unset() {
        let dir = std::env::temp_dir().join(format!("fpi-hub-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "hf_file\n").unwrap();
        let home = dir.to_str().unwrap();
        assert_eq!(options(&[("HF_HOME", home)]).token.as_deref(), Some("hf_file"));
        assert_eq!(options(&[("HF_HOME", home), ("HF_TOKEN", "hf_env")]).token.as_deref(), Some("hf_env"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
