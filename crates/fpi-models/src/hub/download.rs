//! Downloads from the hub into its cache, as huggingface_hub does: the revision's commit and file list from the
//! API, then each needed file from `resolve/<commit>/<path>` into `blobs/<etag>`, linked from the snapshot.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};
use ureq::http::Response;
use ureq::{Agent, Body};

use super::cache::{Need, Repo, is_file};
use super::{CacheGap, HubError, HubId, HubOptions, RepoKind, is_commit};

/// Files a pipeline snapshot gets too, when the repository has them: diffusers reads them from the same cache.
const PIPELINE_EXTRAS: &[&str] =
    &["model_index.json", "tokenizer/special_tokens_map.json", "tokenizer/tokenizer_config.json"];

/// Redirects followed before giving up.
const MAX_REDIRECTS: usize = 10;

/// The API's answer about a revision.
#[derive(serde::Deserialize)]
struct ModelInfo {
    /// The commit.
    sha: String,
    /// The files.
    #[serde(default)]
    siblings: Vec<Sibling>,
}

#[derive(serde::Deserialize)]
struct Sibling {
    rfilename: String,
}

/// Fetches into `repo` what a complete model of `kind` at `id`'s revision lacks there (`gap`) and returns its
/// snapshot folder.
pub(super) fn download(
    id: &HubId,
    kind: RepoKind,
    options: &HubOptions,
    repo: &Repo,
    gap: CacheGap,
    progress: &mut dyn FnMut(&str, u64, u64),
) -> Result<PathBuf, HubError> {
    let client = Client { id, options, repo, gap, agent: agent() };
    let info = client.model_info()?;
    let snapshot = repo.snapshot_dir(&info.sha);
    let listed: HashSet<&str> = info.siblings.iter().map(|s| s.rfilename.as_str()).collect();
    let files = client.plan(kind, &info.sha, &listed, &snapshot)?;
    if id.revision != info.sha {
        repo.write_ref(&id.revision, &info.sha)?;
    }
    for path in &files {
        client.fetch(&info.sha, path, progress)?;
    }
    let missing: Vec<String> =
        kind.needs().iter().filter(|need| !need.present(&snapshot)).map(Need::describe).collect();
    if !missing.is_empty() {
        return Err(client.bad(&client.api_url(), format!("{} still missing after the download", missing.join(", "))));
    }
    Ok(snapshot)
}

/// A download session of one model.
struct Client<'a> {
    id: &'a HubId,
    options: &'a HubOptions,
    repo: &'a Repo,
    /// What the cache lacked, for the message when the hub cannot be reached.
    gap: CacheGap,
    agent: Agent,
}

impl Client<'_> {
    fn api_url(&self) -> String {
        format!(
            "{}/api/models/{}/revision/{}",
            self.options.endpoint,
            self.id.repo,
            self.id.revision.replace('/', "%2F")
        )
    }

    /// The revision's commit and files.
    fn model_info(&self) -> Result<ModelInfo, HubError> {
        let url = self.api_url();
        let response = self.get(&url)?;
        let mut response = self.follow(&url, response)?;
        let text = response.body_mut().read_to_string().map_err(|e| self.transfer(&url, e))?;
        let info: ModelInfo = serde_json::from_str(&text).map_err(|e| self.bad(&url, format!("bad JSON: {e}")))?;
        match is_commit(&info.sha) {
            true => Ok(info),
            false => Err(self.bad(&url, format!("{:?} is not a commit", info.sha))),
        }
    }

    /// The files to fetch: for each need the snapshot lacks, the first of its alternatives the repository has
    /// (fp16 weights over f32), less the files the snapshot has; then the extras the repository has.
    fn plan(
        &self,
        kind: RepoKind,
        commit: &str,
        listed: &HashSet<&str>,
        snapshot: &Path,
    ) -> Result<Vec<String>, HubError> {
        let mut files = Vec::new();
        let mut unavailable = Vec::new();
        for need in kind.needs().iter().filter(|need| !need.present(snapshot)) {
            match need.alternatives().into_iter().find(|alt| alt.iter().all(|file| listed.contains(file.as_str()))) {
                Some(alt) => files.extend(alt.into_iter().filter(|file| !is_file(snapshot, file))),
                None => unavailable.push(need),
            }
        }
        for need in &unavailable {
            if let Need::Weights(stem) = need {
                let (part, folder) = match stem.rsplit_once('/') {
                    Some((part, _)) => (format!("{part}/"), format!("{part}/")),
                    None => ("the repository's root".to_owned(), String::new()),
                };
                let pickles: Vec<&str> = listed
                    .iter()
                    .copied()
                    .filter(|file| file.strip_prefix(folder.as_str()).is_some_and(|name| !name.contains('/')))
                    .filter(|file| file.ends_with(".bin") || file.ends_with(".ckpt"))
                    .collect();
                if !pickles.is_empty() {
                    return Err(HubError::NoSafetensors { id: self.id.clone(), part, found: pickles.join(", ") });
                }
            }
        }
        if !unavailable.is_empty() {
            return Err(HubError::NotAvailable {
                id: self.id.clone(),
                commit: commit.to_owned(),
                missing: unavailable.iter().map(|need| need.describe()).collect::<Vec<_>>().join(", "),
                kind,
            });
        }
        if kind == RepoKind::Pipeline {
            files.extend(
                PIPELINE_EXTRAS.iter().filter(|f| listed.contains(*f) && !is_file(snapshot, f)).map(|f| f.to_string()),
            );
        }
        Ok(files)
    }

    /// Downloads `path` at `commit` into `blobs/<etag>` (unless there) and links it from the snapshot.
    fn fetch(&self, commit: &str, path: &str, progress: &mut dyn FnMut(&str, u64, u64)) -> Result<(), HubError> {
        let mut url = format!("{}/{}/resolve/{commit}/{path}", self.options.endpoint, self.id.repo);
        let mut response = self.get(&url)?;
        // Redirects without the file's metadata (a renamed repository) lead to the answer that has it.
        for _ in 0..MAX_REDIRECTS {
            if !(response.status().is_redirection() && etag(&response).is_none()) {
                break;
            }
            url = self.location(&url, &response)?;
            response = self.get(&url)?;
        }
        self.check_status(&url, &response)?;
        let etag = etag(&response).ok_or_else(|| self.bad(&url, format!("no ETag for {path}")))?;
        if !etag.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(self.bad(&url, format!("ETag {etag:?} of {path} is not a file name")));
        }
        if let Some(found) = header(&response, "x-repo-commit").filter(|found| found != commit) {
            return Err(self.bad(&url, format!("{path} is at commit {found}, expected {commit}")));
        }
        let size = header(&response, "x-linked-size").or_else(|| header(&response, "content-length"));
        let size = size.map(|size| size.parse::<u64>().map_err(|_| self.bad(&url, format!("bad size {size:?}"))));
        let size = size.transpose()?;
        let blob = self.repo.dir.join("blobs").join(&etag);
        if !blob.is_file() {
            if response.status().is_redirection() {
                response = self.follow(&url, response)?;
            }
            self.save(response, path, &etag, size, &blob, progress)?;
        }
        self.repo.link(commit, path, &etag)
    }

    /// The final answer of the redirects starting at `response` (to `url`).
    fn follow(&self, url: &str, mut response: Response<Body>) -> Result<Response<Body>, HubError> {
        let mut url = url.to_owned();
        for _ in 0..MAX_REDIRECTS {
            if !response.status().is_redirection() {
                self.check_status(&url, &response)?;
                return Ok(response);
            }
            url = self.location(&url, &response)?;
            response = self.get(&url)?;
        }
        Err(self.bad(&url, format!("more than {MAX_REDIRECTS} redirects")))
    }

    /// Streams `response`'s body (the file `path`, `size` bytes when known) into `blob`: through
    /// `<blob>.incomplete`, checked against the size and (for an LFS file, whose ETag is its sha256) the hash.
    fn save(
        &self,
        response: Response<Body>,
        path: &str,
        etag: &str,
        size: Option<u64>,
        blob: &Path,
        progress: &mut dyn FnMut(&str, u64, u64),
    ) -> Result<(), HubError> {
        let partial = partial_path(blob);
        let folder = blob.parent().unwrap_or(blob);
        std::fs::create_dir_all(folder).map_err(|e| HubError::io(folder, e))?;
        let mut file = std::fs::File::create(&partial).map_err(|e| HubError::io(&partial, e))?;
        let guard = RemoveOnDrop(&partial);
        let total = size.unwrap_or(0);
        let mut hasher = (etag.len() == 64 && etag.chars().all(|c| c.is_ascii_hexdigit())).then(Sha256::new);
        let mut reader = response.into_body().into_reader().take(size.map_or(u64::MAX, |size| size.saturating_add(1)));
        let mut buffer = vec![0u8; 1 << 20];
        let mut done = 0u64;
        progress(path, 0, total);
        loop {
            let n = match reader.read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(self.incomplete(path, done, total, one_line(e.to_string()))),
            };
            file.write_all(&buffer[..n]).map_err(|e| HubError::io(&partial, e))?;
            if let Some(hasher) = &mut hasher {
                hasher.update(&buffer[..n]);
            }
            done += n as u64;
            progress(path, done, total);
        }
        file.flush().map_err(|e| HubError::io(&partial, e))?;
        drop(file);
        if let Some(size) = size.filter(|&size| size != done) {
            let reason = if done < size { "the connection closed early" } else { "the server sent more" };
            return Err(self.incomplete(path, done, size, reason.into()));
        }
        if let Some(hasher) = hasher {
            let found: String = hasher.finalize().iter().map(|b| format!("{b:02x}")).collect();
            if !found.eq_ignore_ascii_case(etag) {
                let (path, expected) = (path.to_owned(), etag.to_owned());
                return Err(HubError::Checksum { id: self.id.clone(), path, expected, found });
            }
        }
        std::fs::rename(&partial, blob).map_err(|e| HubError::io(blob, e))?;
        std::mem::forget(guard);
        Ok(())
    }

    /// A GET of `url`, redirects not followed, with the token when `url` is on the hub.
    fn get(&self, url: &str) -> Result<Response<Body>, HubError> {
        let mut request = self.agent.get(url);
        if let Some(token) = self.options.token.as_ref().filter(|_| origin(url) == origin(&self.options.endpoint)) {
            request = request.header("Authorization", format!("Bearer {token}"));
        }
        request.call().map_err(|e| match e {
            ureq::Error::HostNotFound
            | ureq::Error::ConnectionFailed
            | ureq::Error::Io(_)
            | ureq::Error::Timeout(_)
            | ureq::Error::Tls(_)
            | ureq::Error::Rustls(_)
            | ureq::Error::ConnectProxyFailed(_) => HubError::Unreachable {
                id: self.id.clone(),
                endpoint: match url.starts_with(&self.options.endpoint) {
                    true => self.options.endpoint.clone(),
                    false => origin(url).to_owned(),
                },
                reason: one_line(e.to_string()),
                gap: Box::new(self.gap.clone()),
            },
            e => self.transfer(url, e),
        })
    }

    /// Errors for answers other than success and redirects.
    fn check_status(&self, url: &str, response: &Response<Body>) -> Result<(), HubError> {
        match response.status().as_u16() {
            200..=399 => Ok(()),
            status @ (401 | 403 | 404) => {
                Err(HubError::NoAccess { id: self.id.clone(), endpoint: self.options.endpoint.clone(), status })
            }
            status => Err(HubError::Http {
                id: self.id.clone(),
                url: url.to_owned(),
                status,
                folder: self.gap.folder.clone(),
            }),
        }
    }

    /// Where a redirect from `url` leads.
    fn location(&self, url: &str, response: &Response<Body>) -> Result<String, HubError> {
        let location =
            header(response, "location").ok_or_else(|| self.bad(url, "a redirect without Location".into()))?;
        Ok(if location.starts_with("http://") || location.starts_with("https://") {
            location
        } else if location.starts_with('/') {
            format!("{}{location}", origin(url))
        } else {
            format!("{}/{location}", url.rsplit_once('/').map_or(url, |(dir, _)| dir))
        })
    }

    fn bad(&self, url: &str, message: String) -> HubError {
        HubError::BadResponse { id: self.id.clone(), url: url.to_owned(), message }
    }

    fn transfer(&self, url: &str, error: ureq::Error) -> HubError {
        HubError::Transfer { id: self.id.clone(), url: url.to_owned(), reason: one_line(error.to_string()) }
    }

    fn incomplete(&self, path: &str, done: u64, total: u64, reason: String) -> HubError {
        HubError::Incomplete { id: self.id.clone(), path: path.to_owned(), done, total, reason }
    }
}

impl HubError {
    fn io(path: &Path, source: std::io::Error) -> Self {
        HubError::Io { path: path.to_owned(), source }
    }
}

impl Repo {
    /// Writes `refs/<revision>` = `commit`.
    fn write_ref(&self, revision: &str, commit: &str) -> Result<(), HubError> {
        let file = self.ref_file(revision);
        if let Some(folder) = file.parent() {
            std::fs::create_dir_all(folder).map_err(|e| HubError::io(folder, e))?;
        }
        std::fs::write(&file, commit).map_err(|e| HubError::io(&file, e))
    }

    /// Makes `snapshots/<commit>/<path>` a relative symlink to `blobs/<etag>` (a copy where there are no
    /// symlinks).
    fn link(&self, commit: &str, path: &str, etag: &str) -> Result<(), HubError> {
        let file = self.snapshot_dir(commit).join(path);
        if let Some(folder) = file.parent() {
            std::fs::create_dir_all(folder).map_err(|e| HubError::io(folder, e))?;
        }
        if std::fs::symlink_metadata(&file).is_ok() {
            std::fs::remove_file(&file).map_err(|e| HubError::io(&file, e))?;
        }
        #[cfg(unix)]
        {
            let target = format!("{}blobs/{etag}", "../".repeat(path.split('/').count() + 1));
            std::os::unix::fs::symlink(target, &file).map_err(|e| HubError::io(&file, e))
        }
        #[cfg(not(unix))]
        {
            let blob = self.dir.join("blobs").join(etag);
            let partial = partial_path(&file);
            let guard = RemoveOnDrop(&partial);
            std::fs::copy(&blob, &partial).map_err(|e| HubError::io(&partial, e))?;
            std::fs::rename(&partial, &file).map_err(|e| HubError::io(&file, e))?;
            std::mem::forget(guard);
            Ok(())
        }
    }
}

/// Removes a partly written file unless forgotten.
struct RemoveOnDrop<'a>(&'a Path);

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(self.0);
    }
}

/// The agent for every request: no redirects followed (the first answer holds a file's metadata), statuses as
/// answers, fpi's User-Agent, and timeouts for connecting and for each read.
fn agent() -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .user_agent(format!("fpi/{}", env!("CARGO_PKG_VERSION")))
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// Where `file` is written before it is complete.
fn partial_path(file: &Path) -> PathBuf {
    // This process's own partial file: two fpi processes fetching one blob must not write into the same file.
    let mut name = file.as_os_str().to_owned();
    name.push(format!(".{}.incomplete", std::process::id()));
    name.into()
}

/// `text` on one line.
fn one_line(text: String) -> String {
    text.replace(['\r', '\n'], " ")
}

/// `scheme://host[:port]` of `url`.
fn origin(url: &str) -> &str {
    let start = url.find("://").map_or(0, |i| i + 3);
    url[start..].find('/').map_or(url, |end| &url[..start + end])
}

/// A header's value as text.
fn header(response: &Response<Body>, name: &str) -> Option<String> {
    response.headers().get(name)?.to_str().ok().map(str::to_owned)
}

/// A file's ETag: `X-Linked-Etag` (an LFS file's sha256, on the redirect to its storage), else `ETag`, without
/// `W/` and quotes.
fn etag(response: &Response<Body>) -> Option<String> {
    let raw = header(response, "x-linked-etag").or_else(|| header(response, "etag"))?;
    let etag = raw.trim().trim_start_matches("W/").trim_matches('"');
    (!etag.is_empty()).then(|| etag.to_owned())
}
