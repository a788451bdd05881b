//! `--model ORG/NAME[@REV]`: the hub cache read offline (a cache built here in huggingface_hub's layout from the
//! tiny model), downloads from a local HTTP server that answers as the hub does, and the errors of both. No test
//! touches the network or the environment.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use burn::tensor::{Tensor, TensorData};
use common::{model_references, tiny_model, values};
use fpi_models::ModelFolder;
use fpi_models::device::Backend;
use fpi_models::hub::{HubError, HubId, HubOptions, RepoKind, resolve};
use sha2::{Digest, Sha256};

const ORG_NAME: &str = "test-org/tiny-sd";
const FOLDER: &str = "models--test-org--tiny-sd";
const COMMIT1: &str = "1111111111111111111111111111111111111111";
const COMMIT2: &str = "2222222222222222222222222222222222222222";
const SERVED: &str = "0123456789abcdef0123456789abcdef01234567";

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// The files under `dir`, as (`/`-separated path, contents), sorted.
fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    fn walk(dir: &Path, prefix: &str, out: &mut Vec<(String, Vec<u8>)>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let name = format!("{prefix}{}", entry.file_name().to_str().unwrap());
            match entry.file_type().unwrap().is_dir() {
                true => walk(&entry.path(), &format!("{name}/"), out),
                false => out.push((name, std::fs::read(entry.path()).unwrap())),
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, "", &mut out);
    out.sort();
    out
}

/// Options for the cache `cache` and the hub `endpoint`.
fn options(cache: &Path, endpoint: &str, offline: bool) -> HubOptions {
    HubOptions { cache: cache.to_owned(), endpoint: endpoint.into(), offline, token: None }
}

fn id(text: &str) -> HubId {
    HubId::parse(text).unwrap()
}

fn quiet(_: &str, _: u64, _: u64) {}

/// An endpoint nothing listens on.
fn closed_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", listener.local_addr().unwrap())
}

/// `error`'s message, asserted to be one line.
fn one_line(error: &HubError) -> String {
    let message = error.to_string();
    assert!(!message.contains('\n'), "more than one line: {message}");
    eprintln!("{message}");
    message
}

/// The tiny model's UNet output (the reference inputs of batch 1) from the model folder `dir`, on ndarray.
fn unet_output(dir: &Path) -> Vec<f32> {
    let device = Backend::NdArray.open().unwrap();
    let folder = ModelFolder::open(dir).unwrap();
    let unet = pollster::block_on(folder.load_unet(&device, &mut |_, _, _| {})).unwrap();
    let refs = model_references();
    let sample: Tensor<4> = refs.tensor("unet.b1.sample", &device);
    let context: Tensor<3> = refs.tensor("unet.b1.context", &device);
    let t = refs.ints("unet.b1.timestep")[0] as f32;
    let timesteps = Tensor::<1>::from_data(TensorData::new(vec![t; sample.dims()[0]], [sample.dims()[0]]), &device);
    values(unet.forward(sample, timesteps, &context))
}

fn assert_same_unet(dir: &Path) {
    let (found, expected) = (unet_output(dir), unet_output(&tiny_model()));
    assert!(found.iter().zip(&expected).all(|(a, b)| a.to_bits() == b.to_bits()), "UNet outputs differ");
}

// ---- A cache in huggingface_hub's layout ----

/// Puts `bytes` into `blobs/<sha256>` of the repository folder `repo` and links `snapshots/<commit>/<path>` to it.
fn add_file(repo: &Path, commit: &str, path: &str, bytes: &[u8]) -> String {
    let etag = sha256(bytes);
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::write(repo.join("blobs").join(&etag), bytes).unwrap();
    let link = repo.join("snapshots").join(commit).join(path);
    std::fs::create_dir_all(link.parent().unwrap()).unwrap();
    let target = format!("{}blobs/{etag}", "../".repeat(path.split('/').count() + 1));
    #[cfg(unix)]
    std::os::unix::fs::symlink(target, &link).unwrap();
    #[cfg(not(unix))]
    std::fs::write(&link, bytes).unwrap();
    etag
}

/// The second revision's scheduler config: the tiny model's with another `steps_offset`.
fn scheduler_v2() -> Vec<u8> {
    let text = std::fs::read_to_string(tiny_model().join("scheduler/scheduler_config.json")).unwrap();
    text.replace("\"steps_offset\": 1", "\"steps_offset\": 0").into_bytes()
}

/// A cache in `cache` holding the tiny model at COMMIT1 (`refs/main`) and, with another scheduler config, at
/// COMMIT2 (`refs/v2`); the blobs both share are stored once.
fn build_cache(cache: &Path) -> PathBuf {
    let repo = cache.join(FOLDER);
    for (path, bytes) in files_of(&tiny_model()) {
        add_file(&repo, COMMIT1, &path, &bytes);
        let bytes = if path == "scheduler/scheduler_config.json" { scheduler_v2() } else { bytes };
        add_file(&repo, COMMIT2, &path, &bytes);
    }
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT1).unwrap();
    std::fs::write(repo.join("refs/v2"), COMMIT2).unwrap();
    repo
}

#[test]
fn cached_revisions_resolve_offline_to_their_snapshots() {
    let cache = tempfile::tempdir().unwrap();
    let repo = build_cache(cache.path());
    let offline = options(cache.path(), &closed_endpoint(), true);
    for (text, commit) in [
        (ORG_NAME.to_owned(), COMMIT1),
        (format!("{ORG_NAME}@main"), COMMIT1),
        (format!("{ORG_NAME}@v2"), COMMIT2),
        (format!("{ORG_NAME}@{COMMIT2}"), COMMIT2),
        (format!("{ORG_NAME}@{COMMIT1}"), COMMIT1),
    ] {
        let dir = resolve(&id(&text), RepoKind::Pipeline, &offline, &mut quiet).unwrap();
        assert_eq!(dir, repo.join("snapshots").join(commit), "{text}");
    }
    let v2 = resolve(&id(&format!("{ORG_NAME}@v2")), RepoKind::Pipeline, &offline, &mut quiet).unwrap();
    assert_eq!(std::fs::read(v2.join("scheduler/scheduler_config.json")).unwrap(), scheduler_v2());

    // Complete in the cache: the network is not asked even when it may be (this endpoint would refuse).
    let online = options(cache.path(), &closed_endpoint(), false);
    let main = resolve(&id(ORG_NAME), RepoKind::Pipeline, &online, &mut quiet).unwrap();
    assert_eq!(main, repo.join("snapshots").join(COMMIT1));
    assert_same_unet(&main);
}

#[test]
fn a_cached_vae_repository_resolves() {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--test-org--tiny-vae");
    for (path, bytes) in files_of(&tiny_model().join("vae")) {
        add_file(&repo, COMMIT1, &path, &bytes);
    }
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), COMMIT1).unwrap();
    let offline = options(cache.path(), &closed_endpoint(), true);
    let dir = resolve(&id("test-org/tiny-vae"), RepoKind::Vae, &offline, &mut quiet).unwrap();
    assert_eq!(dir, repo.join("snapshots").join(COMMIT1));
    // A VAE repository is no pipeline.
    let error = resolve(&id("test-org/tiny-vae"), RepoKind::Pipeline, &offline, &mut quiet).unwrap_err();
    assert!(one_line(&error).contains("unet/config.json"));
}

// ---- A local hub ----

/// One answer of the server.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    /// Send only this many bytes of the body (Content-Length still announces all).
    cut: Option<usize>,
}

impl Reply {
    fn ok(body: Vec<u8>, headers: &[(&str, &str)]) -> Self {
        let headers = headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Reply { status: 200, headers, body, cut: None }
    }
}

/// Each request's path and header lines, in order.
type Log = Mutex<Vec<(String, Vec<String>)>>;

/// A tiny HTTP/1.1 server on 127.0.0.1 answering GETs from a fixed table (404 elsewhere), one connection at a
/// time, counting requests per path and keeping their headers.
struct Server {
    addr: SocketAddr,
    requests: Arc<Log>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn start(routes: HashMap<String, Reply>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (log, stopped) = (requests.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for stream in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(stream) = stream {
                    answer(stream, &routes, &log);
                }
            }
        });
        Server { addr, requests, stop, thread: Some(thread) }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests so far of `path`.
    fn count(&self, path: &str) -> usize {
        self.requests.lock().unwrap().iter().filter(|(p, _)| p == path).count()
    }

    fn total(&self) -> usize {
        self.requests.lock().unwrap().len()
    }

    fn stop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(self.addr);
            thread.join().unwrap();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn answer(mut stream: TcpStream, routes: &HashMap<String, Reply>, log: &Log) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
    let mut headers = Vec::new();
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
            break;
        }
        headers.push(header.trim().to_owned());
    }
    log.lock().unwrap().push((path.clone(), headers));
    let not_found = Reply { status: 404, headers: vec![], body: b"Repository not found".to_vec(), cut: None };
    let reply = routes.get(&path).unwrap_or(&not_found);
    let reason = match reply.status {
        200 => "OK",
        302 => "Found",
        307 => "Temporary Redirect",
        _ => "Not Found",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", reply.status);
    for (name, value) in &reply.headers {
        head += &format!("{name}: {value}\r\n");
    }
    if !reply.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("content-length")) {
        head += &format!("Content-Length: {}\r\n", reply.body.len());
    }
    head += "Connection: close\r\n\r\n";
    let body = &reply.body[..reply.cut.unwrap_or(reply.body.len())];
    let _ = stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body));
    let _ = stream.flush();
}

/// A real f16 copy of the f32 safetensors file `bytes`.
fn to_f16(bytes: &[u8]) -> Vec<u8> {
    use safetensors::{Dtype, SafeTensors, tensor::TensorView};
    let file = SafeTensors::deserialize(bytes).unwrap();
    let converted: Vec<(String, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), Dtype::F32, "{name}");
            let data = view
                .data()
                .chunks_exact(4)
                .flat_map(|b| burn::tensor::f16::from_f32(f32::from_le_bytes(b.try_into().unwrap())).to_le_bytes())
                .collect();
            (name, view.shape().to_vec(), data)
        })
        .collect();
    let views = converted
        .iter()
        .map(|(name, shape, data)| (name.as_str(), TensorView::new(Dtype::F16, shape.clone(), data).unwrap()));
    safetensors::serialize(views, None).unwrap()
}

/// Files the hub lists that fpi must never fetch.
const UNWANTED: &[&str] = &[
    "v1-5-pruned-emaonly.safetensors",
    "v1-5-pruned-emaonly.ckpt",
    "unet/diffusion_pytorch_model.bin",
    "unet/diffusion_pytorch_model.non_ema.safetensors",
    "safety_checker/config.json",
    "safety_checker/model.safetensors",
    "feature_extractor/preprocessor_config.json",
    "README.md",
    ".gitattributes",
    // The f32 VAE: its fp16 variant is listed too, and is the one to fetch.
    "vae/diffusion_pytorch_model.safetensors",
];

/// The served repository: the tiny model, an fp16 variant of its VAE, and the unwanted files.
fn served_files() -> Vec<(String, Vec<u8>)> {
    let mut files = files_of(&tiny_model());
    let vae = std::fs::read(tiny_model().join("vae/diffusion_pytorch_model.safetensors")).unwrap();
    files.push(("vae/diffusion_pytorch_model.fp16.safetensors".into(), to_f16(&vae)));
    let absent: Vec<&str> = UNWANTED.iter().copied().filter(|path| !files.iter().any(|(p, _)| p == path)).collect();
    for path in absent {
        files.push((path.into(), format!("{path}: never fetched").into_bytes()));
    }
    files
}

fn resolve_path(path: &str) -> String {
    format!("/{ORG_NAME}/resolve/{SERVED}/{path}")
}

/// The hub's answers for `files` at SERVED, which is `main`: the API's listing, each file at
/// `resolve/<commit>/<path>` (`.safetensors` files as LFS files: a redirect to `/cdn/<sha256>` with the metadata,
/// and another `ETag` that must not be used), `cut` (a path) sent short.
fn routes(files: &[(String, Vec<u8>)], cut: Option<&str>) -> HashMap<String, Reply> {
    let siblings: Vec<_> = files.iter().map(|(path, _)| serde_json::json!({ "rfilename": path })).collect();
    let api = serde_json::json!({ "id": ORG_NAME, "sha": SERVED, "siblings": siblings });
    let mut routes = HashMap::new();
    routes.insert(
        format!("/api/models/{ORG_NAME}/revision/main"),
        Reply::ok(api.to_string().into_bytes(), &[("Content-Type", "application/json")]),
    );
    for (path, bytes) in files {
        let sha = sha256(bytes);
        if path.ends_with(".safetensors") {
            let size = bytes.len().to_string();
            let redirect = Reply {
                status: 302,
                headers: [
                    ("Location", format!("/cdn/{sha}")),
                    ("X-Repo-Commit", SERVED.into()),
                    ("X-Linked-Etag", format!("\"{sha}\"")),
                    ("X-Linked-Size", size),
                    ("ETag", "\"git-pointer-etag\"".into()),
                ]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
                body: vec![],
                cut: None,
            };
            routes.insert(resolve_path(path), redirect);
            let mut blob = Reply::ok(bytes.clone(), &[("ETag", "\"s3-etag-1\"")]);
            if cut == Some(path.as_str()) {
                blob.cut = Some(bytes.len() / 2);
            }
            routes.insert(format!("/cdn/{sha}"), blob);
        } else {
            let etag = format!("W/\"{}\"", &sha[..40]);
            routes.insert(resolve_path(path), Reply::ok(bytes.clone(), &[("ETag", &etag), ("X-Repo-Commit", SERVED)]));
        }
    }
    routes
}

/// The files fpi fetches of the served repository: the tiny model with the fp16 VAE, and the diffusers extras.
fn wanted(files: &[(String, Vec<u8>)]) -> Vec<&(String, Vec<u8>)> {
    files.iter().filter(|(path, _)| !UNWANTED.contains(&path.as_str())).collect()
}

#[test]
fn downloads_only_the_needed_files_into_the_hub_layout() {
    let files = served_files();
    let mut server = Server::start(routes(&files, None));
    let cache = tempfile::tempdir().unwrap();
    let online = HubOptions { token: Some("hf_test".into()), ..options(cache.path(), &server.url(), false) };
    let mut heard: HashMap<String, (u64, u64)> = HashMap::new();
    let dir = resolve(&id(ORG_NAME), RepoKind::Pipeline, &online, &mut |path, done, total| {
        heard.insert(path.to_owned(), (done, total));
    })
    .unwrap();

    let repo = cache.path().join(FOLDER);
    assert_eq!(dir, repo.join("snapshots").join(SERVED));
    assert_eq!(std::fs::read_to_string(repo.join("refs/main")).unwrap(), SERVED);
    let api = format!("/api/models/{ORG_NAME}/revision/main");
    assert_eq!(server.count(&api), 1);
    let headers = server.requests.lock().unwrap()[0].1.join("\n").to_ascii_lowercase();
    assert!(headers.contains("authorization: bearer hf_test"), "{headers}");
    assert!(headers.contains(&format!("user-agent: fpi/{}", env!("CARGO_PKG_VERSION"))), "{headers}");

    let wanted = wanted(&files);
    assert!(wanted.iter().any(|(path, _)| path == "model_index.json"));
    for (path, bytes) in &wanted {
        let sha = sha256(bytes);
        let lfs = path.ends_with(".safetensors");
        let etag = if lfs { sha.clone() } else { sha[..40].to_owned() };
        let link = dir.join(path);
        assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "{path}: not a symlink");
        let target = std::fs::read_link(&link).unwrap();
        assert_eq!(target, Path::new(&"../".repeat(path.split('/').count() + 1)).join("blobs").join(&etag), "{path}");
        assert_eq!(&std::fs::read(repo.join("blobs").join(&etag)).unwrap(), bytes, "{path}: blob");
        assert_eq!(&std::fs::read(&link).unwrap(), bytes, "{path}: through the link");
        assert_eq!(server.count(&resolve_path(path)), 1, "{path}");
        if lfs {
            assert_eq!(server.count(&format!("/cdn/{sha}")), 1, "{path}: blob");
        }
        assert_eq!(heard.get(path.as_str()), Some(&(bytes.len() as u64, bytes.len() as u64)), "{path}: progress");
    }
    for path in UNWANTED {
        assert_eq!(server.count(&resolve_path(path)), 0, "{path} was fetched");
        assert!(std::fs::symlink_metadata(dir.join(path)).is_err(), "{path} is in the snapshot");
    }
    let blobs: Vec<String> =
        std::fs::read_dir(repo.join("blobs")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(blobs.len(), wanted.len(), "{blobs:?}");
    assert!(blobs.iter().all(|name| !name.ends_with(".incomplete")), "{blobs:?}");

    // Complete now: resolving again asks nothing, even with the network allowed.
    let requests = server.total();
    assert_eq!(resolve(&id(ORG_NAME), RepoKind::Pipeline, &online, &mut quiet).unwrap(), dir);
    assert_eq!(server.total(), requests);

    // A file gone from the snapshot is fetched again, alone (its blob is still there).
    std::fs::remove_file(dir.join("scheduler/scheduler_config.json")).unwrap();
    assert_eq!(resolve(&id(ORG_NAME), RepoKind::Pipeline, &online, &mut quiet).unwrap(), dir);
    assert_eq!(server.total(), requests + 2, "the API and the file");
    assert_eq!(server.count(&resolve_path("scheduler/scheduler_config.json")), 2);

    // Later runs are offline.
    server.stop();
    let offline = options(cache.path(), &server.url(), true);
    assert_eq!(resolve(&id(ORG_NAME), RepoKind::Pipeline, &offline, &mut quiet).unwrap(), dir);
    assert_eq!(server.total(), requests + 2);
    assert_same_unet(&dir);
    let vae = ModelFolder::open(&dir).unwrap();
    pollster::block_on(vae.load_vae(&Backend::NdArray.open().unwrap(), &mut |_, _, _| {})).unwrap();
}

#[test]
fn a_vae_repository_downloads_its_config_and_weights_only() {
    let mut files = files_of(&tiny_model().join("vae"));
    files.push(("diffusion_pytorch_model.bin".into(), b"a pickle".to_vec()));
    files.push(("README.md".into(), b"# A VAE".to_vec()));
    let server = Server::start(routes(&files, None));
    let cache = tempfile::tempdir().unwrap();
    let online = options(cache.path(), &server.url(), false);
    let dir = resolve(&id(ORG_NAME), RepoKind::Vae, &online, &mut quiet).unwrap();
    assert_eq!(dir, cache.path().join(FOLDER).join("snapshots").join(SERVED));
    for (path, bytes) in &files {
        let wanted = path == "config.json" || path == "diffusion_pytorch_model.safetensors";
        assert_eq!(server.count(&resolve_path(path)), wanted as usize, "{path}");
        if wanted {
            assert_eq!(&std::fs::read(dir.join(path)).unwrap(), bytes, "{path}");
        }
    }
}

// ---- Errors ----

#[test]
fn a_model_not_in_the_cache_offline_says_what_to_fetch() {
    let cache = tempfile::tempdir().unwrap();
    let offline = options(cache.path(), &closed_endpoint(), true);
    let error = resolve(&id("test-org/absent@v3"), RepoKind::Pipeline, &offline, &mut quiet).unwrap_err();
    let message = one_line(&error);
    assert!(matches!(error, HubError::Offline { .. }), "{message}");
    for needed in [
        "test-org/absent@v3",
        "HF_HUB_OFFLINE",
        &cache.path().join("models--test-org--absent").display().to_string(),
        "refs/v3",
        "hf download test-org/absent --revision v3 unet/config.json unet/diffusion_pytorch_model.safetensors",
    ] {
        assert!(message.contains(needed), "{needed:?} not in: {message}");
    }
    // A ref to a commit whose snapshot is gone.
    let repo = cache.path().join("models--test-org--absent");
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/v3"), COMMIT1).unwrap();
    let message = one_line(&resolve(&id("test-org/absent@v3"), RepoKind::Pipeline, &offline, &mut quiet).unwrap_err());
    assert!(message.contains(&format!("refs/v3 is {COMMIT1}, no snapshots/{COMMIT1}")), "{message}");
}

#[test]
fn a_partial_snapshot_offline_names_the_missing_file() {
    let cache = tempfile::tempdir().unwrap();
    let repo = build_cache(cache.path());
    let offline = options(cache.path(), &closed_endpoint(), true);
    let weights = "unet/diffusion_pytorch_model.safetensors";
    // The link gone, then (with the link back) its blob gone: a dangling link is no file either.
    std::fs::remove_file(repo.join("snapshots").join(COMMIT1).join(weights)).unwrap();
    let error = resolve(&id(ORG_NAME), RepoKind::Pipeline, &offline, &mut quiet).unwrap_err();
    let message = one_line(&error);
    for needed in [ORG_NAME, "HF_HUB_OFFLINE", &repo.display().to_string(), weights, "--revision main"] {
        assert!(message.contains(needed), "{needed:?} not in: {message}");
    }
    assert!(!message.contains("vae/"), "{message}");
    let bytes = std::fs::read(tiny_model().join(weights)).unwrap();
    let etag = add_file(&repo, COMMIT1, weights, &bytes);
    assert!(resolve(&id(ORG_NAME), RepoKind::Pipeline, &offline, &mut quiet).is_ok());
    std::fs::remove_file(repo.join("blobs").join(etag)).unwrap();
    let message = one_line(&resolve(&id(ORG_NAME), RepoKind::Pipeline, &offline, &mut quiet).unwrap_err());
    assert!(message.contains(weights), "{message}");
    // Revision v2 shares that blob: it is incomplete too, and says so.
    let message =
        one_line(&resolve(&id(&format!("{ORG_NAME}@v2")), RepoKind::Pipeline, &offline, &mut quiet).unwrap_err());
    assert!(message.contains(weights) && message.contains("--revision v2"), "{message}");
}

#[test]
fn an_unreachable_hub_says_it_could_not_reach_it() {
    let cache = tempfile::tempdir().unwrap();
    let endpoint = closed_endpoint();
    let online = options(cache.path(), &endpoint, false);
    let error = resolve(&id(ORG_NAME), RepoKind::Pipeline, &online, &mut quiet).unwrap_err();
    let message = one_line(&error);
    assert!(matches!(error, HubError::Unreachable { .. }), "{message}");
    for needed in [ORG_NAME, &format!("could not reach {endpoint}"), "run again with network", "hf download"] {
        assert!(message.contains(needed), "{needed:?} not in: {message}");
    }
    assert!(!cache.path().join(FOLDER).join("snapshots").exists());
}

#[test]
fn a_model_the_hub_does_not_have_is_one_line() {
    let server = Server::start(HashMap::new());
    let cache = tempfile::tempdir().unwrap();
    let online = options(cache.path(), &server.url(), false);
    let error = resolve(&id("test-org/nothing@v1"), RepoKind::Pipeline, &online, &mut quiet).unwrap_err();
    let message = one_line(&error);
    assert!(matches!(error, HubError::NoAccess { status: 404, .. }), "{message}");
    for needed in ["test-org/nothing@v1", "not on the hub", "private or gated", "HF_TOKEN", "404"] {
        assert!(message.contains(needed), "{needed:?} not in: {message}");
    }
    assert_eq!(server.count("/api/models/test-org/nothing/revision/v1"), 1);
}

#[test]
fn a_part_with_only_pickled_weights_is_refused() {
    let files: Vec<_> = served_files()
        .into_iter()
        .filter(|(path, _)| !path.starts_with("unet/") || path.ends_with(".bin") || path.ends_with("config.json"))
        .collect();
    let server = Server::start(routes(&files, None));
    let cache = tempfile::tempdir().unwrap();
    let online = options(cache.path(), &server.url(), false);
    let error = resolve(&id(ORG_NAME), RepoKind::Pipeline, &online, &mut quiet).unwrap_err();
    let message = one_line(&error);
    assert!(matches!(error, HubError::NoSafetensors { .. }), "{message}");
    for needed in [ORG_NAME, "unet/", "unet/diffusion_pytorch_model.bin", "never unpickles"] {
        assert!(message.contains(needed), "{needed:?} not in: {message}");
    }
    assert_eq!(server.total(), 1, "only the API was asked");
}

#[test]
fn a_truncated_download_leaves_no_blob_and_no_snapshot_file() {
    let files = served_files();
    let weights = "unet/diffusion_pytorch_model.safetensors";
    let server = Server::start(routes(&files, Some(weights)));
    let cache = tempfile::tempdir().unwrap();
    let online = options(cache.path(), &server.url(), false);
    let error = resolve(&id(ORG_NAME), RepoKind::Pipeline, &online, &mut quiet).unwrap_err();
    let message = one_line(&error);
    assert!(matches!(error, HubError::Incomplete { .. }), "{message}");
    assert!(message.contains(ORG_NAME) && message.contains(weights), "{message}");
    let repo = cache.path().join(FOLDER);
    let sha = sha256(&files.iter().find(|(path, _)| path == weights).unwrap().1);
    let blobs: Vec<String> =
        std::fs::read_dir(repo.join("blobs")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(blobs.iter().all(|name| !name.starts_with(&sha) && !name.ends_with(".incomplete")), "{blobs:?}");
    assert!(std::fs::symlink_metadata(repo.join("snapshots").join(SERVED).join(weights)).is_err());
    // What did arrive stays, and offline the message names what is still missing.
    let offline = options(cache.path(), &server.url(), true);
    let message = one_line(&resolve(&id(ORG_NAME), RepoKind::Pipeline, &offline, &mut quiet).unwrap_err());
    assert!(message.contains(weights) && !message.contains("unet/config.json"), "{message}");
}

// ---- Ids ----

#[test]
fn hub_ids_parse_and_display() {
    for (text, repo, revision) in [
        ("org/name", "org/name", "main"),
        ("stable-diffusion-v1-5/stable-diffusion-v1-5", "stable-diffusion-v1-5/stable-diffusion-v1-5", "main"),
        ("stabilityai/sd-vae-ft-mse@v1.0", "stabilityai/sd-vae-ft-mse", "v1.0"),
        ("Org_1/model.name@refs/pr/12", "Org_1/model.name", "refs/pr/12"),
        ("a/b@main", "a/b", "main"),
        ("org/name@0123456789ABCDEF0123456789abcdef01234567", "org/name", "0123456789abcdef0123456789abcdef01234567"),
    ] {
        let parsed = HubId::parse(text).unwrap_or_else(|| panic!("{text} did not parse"));
        assert_eq!((parsed.repo.as_str(), parsed.revision.as_str()), (repo, revision), "{text}");
        assert_eq!(HubId::parse(&parsed.to_string()), Some(parsed.clone()), "{text}: round trip");
    }
    assert_eq!(id("org/name").to_string(), "org/name");
    assert_eq!(id("org/name@main").to_string(), "org/name");
    assert_eq!(id("org/name@v2").to_string(), "org/name@v2");
    for text in [
        "",
        "name",
        "./x",
        "/x",
        "x/",
        "../x",
        "./models/sd",
        "a/b/c",
        "/abs/path/model",
        "C:\\models\\sd",
        "org/na me",
        "org /name",
        "org/name@",
        "org/name@v1@v2",
        "org/name@a//b",
        "org/name@/b",
        "org/name@../x",
        "org/name@a..b",
        "org/.name",
        "org/name.",
        "-org/name",
        "org/name-",
        "org--x/name",
        "@v1",
        "org/@v1",
        "org/name@v 1",
    ] {
        assert_eq!(HubId::parse(text), None, "{text:?} parsed");
    }
}
