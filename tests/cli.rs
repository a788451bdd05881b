//! `fpi` end to end on the tiny model and real photos (scikit-image's astronaut, a JPEG; its camera, a grey PNG):
//! invert, then reconstruct from the seed file; and the errors a user meets. Built as a test of the fpi-cli crate
//! so that the `fpi` binary is at hand; runs on `FPI_TEST_DEVICE` (ndarray by default).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use fpi_core::seed::Seed;
use fpi_core::settings::{InvertSettings, Method};

fn fpi(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_fpi")).args(args).output().expect("fpi runs");
    eprintln!(
        "fpi {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn device_name() -> String {
    std::env::var("FPI_TEST_DEVICE").unwrap_or_else(|_| "ndarray".into())
}

/// `fpi invert --quiet` on the tiny model writing `output`, with small valid options, some replaced or added by
/// `changes` (flag, value pairs).
fn invert(output: &Path, changes: &[&str]) -> Output {
    let (model, photo) = (tiny_model(), fixtures().join("photos/astronaut.jpg"));
    let mut options = vec![
        ("--model", path(&model).to_owned()),
        ("--image", path(&photo).to_owned()),
        ("--prompt", "x".into()),
        ("--steps", "2".into()),
        ("--size", "32".into()),
        ("--device", device_name()),
        ("--output", path(output).to_owned()),
    ];
    for change in changes.chunks(2) {
        match options.iter_mut().find(|(flag, _)| *flag == change[0]) {
            Some(option) => option.1 = change[1].to_owned(),
            None => options.push((change[0], change[1].to_owned())),
        }
    }
    let mut args = vec!["invert", "--quiet"];
    for (flag, value) in &options {
        args.extend([*flag, value.as_str()]);
    }
    fpi(&args)
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// What `fpi invert --reconstruct` prints: (PSNR, the VAE's PSNR bound, latent relative error).
fn printed_quality(stdout: &str) -> (f64, f64, f64) {
    let line = stdout.lines().find(|l| l.starts_with("PSNR")).expect("a PSNR line");
    let numbers: Vec<f64> = line.split_whitespace().filter_map(|w| w.trim_end_matches(':').parse().ok()).collect();
    (numbers[0], numbers[1], numbers[2])
}

#[test]
fn invert_then_reconstruct_a_photo() {
    let dir = tempfile::tempdir().unwrap();
    let (seed, trace, rec, rec2) = (
        dir.path().join("seed.safetensors"),
        dir.path().join("trace.json"),
        dir.path().join("rec.png"),
        dir.path().join("rec2.png"),
    );
    let (model, device) = (tiny_model(), device_name());
    let out = invert(
        &seed,
        &[
            "--prompt",
            "a photograph of an astronaut",
            "--steps",
            "20",
            "--method",
            "fpi",
            "--iterations",
            "8",
            "--guidance",
            "1",
            "--adjust",
            "1",
            "--trace",
            path(&trace),
            "--reconstruct",
            path(&rec),
        ],
    );
    assert!(out.status.success());

    let file = Seed::from_bytes(&std::fs::read(&seed).unwrap()).unwrap();
    assert_eq!(file.shape, [1, 4, 16, 16]);
    let info = file.info.expect("a seed records its settings");
    let expected = InvertSettings {
        prompt: "a photograph of an astronaut".into(),
        size: 32,
        steps: 20,
        guidance: 1.0,
        method: Method::FixedPoint { iterations: 8, tolerance: None },
        adjust: 1,
    };
    assert_eq!(info.settings, expected);
    // The model's name, not the local path of its folder.
    assert_eq!(info.model, "tiny-sd");
    assert!(file.latents.iter().all(|v| v.is_finite()));

    let trace: serde_json::Value = serde_json::from_slice(&std::fs::read(&trace).unwrap()).unwrap();
    let steps = trace.as_array().unwrap();
    assert_eq!(steps.len(), 20);
    assert_eq!(steps[0]["timestep"], 1);
    assert_eq!(steps[19]["timestep"], 951);
    assert_eq!(steps[0]["residuals"].as_array().unwrap().len(), 8);

    // The tiny random VAE is a poor autoencoder (its bound is ~10 dB); the inversion itself must be near exact in
    // latent space, and the image as good as the VAE allows.
    let (psnr, bound, latent_error) = printed_quality(&String::from_utf8_lossy(&out.stdout));
    assert!(latent_error < 0.02, "latent error {latent_error}");
    assert!(psnr > bound - 0.5, "PSNR {psnr} dB, VAE bound {bound} dB");

    // Reconstructing from the seed file with its stored settings gives the same image.
    let out = fpi(&[
        "reconstruct",
        "--model",
        path(&model),
        "--seed",
        path(&seed),
        "--device",
        &device,
        "--output",
        path(&rec2),
        "--quiet",
    ]);
    assert!(out.status.success());
    let (a, b) = (image_pixels(&rec), image_pixels(&rec2));
    let max_diff = a.iter().zip(&b).map(|(x, y)| x.abs_diff(*y)).max().unwrap();
    assert!(max_diff <= 1, "reconstructions differ by {max_diff}");
}

fn image_pixels(p: &Path) -> Vec<u8> {
    fpi_pipeline::image_io::decode(&std::fs::read(p).unwrap()).unwrap().into_raw()
}

#[test]
fn fixed_point_inverts_more_exactly_than_ddim() {
    let dir = tempfile::tempdir().unwrap();
    let photo = fixtures().join("photos/camera.png");
    let latent_error = |method: &str, iterations: &str| {
        let (seed, rec) = (dir.path().join(format!("{method}.safetensors")), dir.path().join(format!("{method}.png")));
        let out = invert(
            &seed,
            &[
                "--image",
                path(&photo),
                "--prompt",
                "a man with a camera",
                "--steps",
                "20",
                "--method",
                method,
                "--iterations",
                iterations,
                "--guidance",
                "1",
                "--adjust",
                "0",
                "--reconstruct",
                path(&rec),
            ],
        );
        assert!(out.status.success());
        printed_quality(&String::from_utf8_lossy(&out.stdout)).2
    };
    let (ddim, fixed_point) = (latent_error("ddim", "1"), latent_error("fpi", "5"));
    assert!(fixed_point * 10.0 < ddim, "latent error: fpi {fixed_point} vs ddim {ddim}");
}

#[test]
fn bad_input_is_one_clear_error_and_leaves_outputs_alone() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("seed.safetensors");
    std::fs::write(&output, b"keep me").unwrap();
    let (model, photo, device) = (tiny_model(), fixtures().join("photos/astronaut.jpg"), device_name());
    let (model, photo, out) = (path(&model), path(&photo), path(&output));
    // A seed whose latents cannot fit the tiny UNet (15 is not a multiple of its 2× downsampling).
    let odd = dir.path().join("odd.safetensors");
    let seed = Seed { latents: vec![0.0; 4 * 15 * 15], shape: [1, 4, 15, 15], info: None };
    std::fs::write(&odd, seed.to_bytes()).unwrap();
    let invert_with = |changes: &[&str]| invert(&output, changes);
    // A seed whose own settings are out of range: the error is the seed's, not an option's.
    let bad_guidance = dir.path().join("bad-guidance.safetensors");
    let settings = InvertSettings { guidance: 0.5, size: 32, ..InvertSettings::default() };
    let info = Some(fpi_core::seed::SeedInfo::new(settings, "tiny-sd"));
    std::fs::write(&bad_guidance, Seed { latents: vec![0.0; 4 * 16 * 16], shape: [1, 4, 16, 16], info }.to_bytes())
        .unwrap();
    // A folder nobody may create files in, root included (CI runs as root, which ignores permission bits).
    let unwritable = Path::new("/proc/seed.safetensors");
    // A VAE that does not take RGB images (it used to load, then panic at the first encode).
    let grey_vae = copy_model();
    edit_config(&copied_model(&grey_vae), "vae", |config| config["in_channels"] = 1.into());
    let cases = [
        (invert_with(&["--size", "42"]), "--size must be a positive multiple of 4, got 42"),
        (invert_with(&["--image", "/no/such/photo.png"]), "/no/such/photo.png"),
        (invert_with(&["--image", &format!("{model}/unet/config.json")]), "cannot read the image"),
        (invert_with(&["--model", "/no/such/model"]), "/no/such/model"),
        (invert_with(&["--guidance", "0.5"]), "--guidance must be a number ≥ 1, got 0.5"),
        (invert_with(&["--steps", "1000", "--adjust", "0"]), "--steps must be between 1 and 999"),
        (invert_with(&["--adjust", "3"]), "--adjust 3 is more than --steps 2"),
        (invert_with(&["--iterations", "0"]), "--iterations must be at least 1, got 0"),
        (invert_with(&["--tolerance", "-1"]), "--tolerance must be a positive number, got -1"),
        (invert_with(&["--output", path(unwritable)]), "cannot write in /proc"),
        (invert_with(&["--model", path(&copied_model(&grey_vae))]), "in_channels"),
        (
            invert_with(&["--device", "ndarray", "--precision", "f16"]),
            "f16 needs a wgpu adapter with shader-f16, which this device lacks",
        ),
        (
            fpi(&[
                "reconstruct",
                "--model",
                model,
                "--seed",
                path(&odd),
                "--device",
                &device,
                "--output",
                out,
                "--quiet",
            ]),
            "do not fit this model",
        ),
        (
            fpi(&["reconstruct", "--model", model, "--seed", photo, "--device", &device, "--output", out, "--quiet"]),
            "not a safetensors file",
        ),
        (
            fpi(&["reconstruct", "--model", model, "--seed", path(&bad_guidance), "--output", out, "--quiet"]),
            "bad-guidance.safetensors: metadata guidance must be a number ≥ 1, got 0.5",
        ),
        // Refused before any device is opened or model built.
        (
            fpi(&[
                "bench",
                "--random",
                "--device",
                "wgpu",
                "--size",
                "1024",
                "--parts",
                "group_norm",
                "--no-inversion",
            ]),
            "--parts group_norm at --size 1024 needs a map of 256 MiB",
        ),
    ];
    for (out, needle) in cases {
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(needle), "{needle}: {stderr}");
    }
    assert_eq!(std::fs::read(&output).unwrap(), b"keep me");
}

#[test]
fn help_explains_the_commands() {
    let out = fpi(&["--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["invert", "reconstruct", "generate", "info", "bench"] {
        assert!(text.contains(word), "{text}");
    }
    let out = fpi(&["invert", "--help"]);
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in ["--iterations", "--tolerance", "--adjust", "--guidance", "--trace", "--reconstruct", "--device"] {
        assert!(text.contains(flag), "{text}");
    }
}

/// Image sides follow the model: the tiny model halves latents once in its UNet and pixels once in its VAE, so any
/// multiple of 4 works (the size step used to be a hard-coded 8 × the VAE's factor, 16 here). Final latents written
/// by `--latents-out` carry no seed metadata, and generation reads them back.
#[test]
fn sizes_follow_the_models_depth_and_latents_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let (model, photo, device) = (tiny_model(), fixtures().join("photos/camera.png"), device_name());
    let (seed, image, latents, again) = (
        dir.path().join("seed.safetensors"),
        dir.path().join("image.png"),
        dir.path().join("latents.safetensors"),
        dir.path().join("again.png"),
    );
    let common = ["--model", path(&model), "--device", &device, "--quiet"];
    let mut args = vec!["invert", "--image", path(&photo), "--prompt", "a man", "--size", "36", "--steps", "2"];
    args.extend(["--adjust", "0", "--method", "ddim", "--output", path(&seed)]);
    assert!(fpi(&[&args[..], &common].concat()).status.success());
    assert_eq!(Seed::from_bytes(&std::fs::read(&seed).unwrap()).unwrap().shape, [1, 4, 18, 18]);

    let args = ["generate", "--prompt", "a man", "--random-seed", "3", "--size", "36", "--steps", "2"];
    let out = fpi(&[&args[..], &["--output", path(&image), "--latents-out", path(&latents)], &common].concat());
    assert!(out.status.success());
    let file = Seed::from_bytes(&std::fs::read(&latents).unwrap()).unwrap();
    assert_eq!((file.shape, file.info), ([1, 4, 18, 18], None));

    let args = ["generate", "--prompt", "a man", "--init-latents", path(&latents), "--steps", "1"];
    assert!(fpi(&[&args[..], &["--output", path(&again)], &common].concat()).status.success());
    assert_eq!(image_pixels(&again).len(), 36 * 36 * 3);
}

/// `fpi bench --by-op --json` reports one guided UNet step by operation: every kind the tiny UNet has, each timed,
/// nothing left untimed (`tests/profile.rs` checks the counts against the model's layers).
#[test]
fn bench_profiles_a_unet_step_by_operation() {
    let (model, device) = (tiny_model(), device_name());
    let args = ["bench", "--model", path(&model), "--device", &device, "--size", "32", "--steps", "2"];
    let out = fpi(&[&args[..], &["--no-inversion", "--parts", "clip", "--by-op", "--json"]].concat());
    assert!(out.status.success());
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let by_op = &report["by_op"];
    let ops = by_op["ops"].as_array().unwrap();
    let names: std::collections::BTreeSet<&str> = ops.iter().map(|op| op["op"].as_str().unwrap()).collect();
    let kinds = [
        "convolution 3×3",
        "convolution 1×1",
        "linear",
        "attention (scores, softmax, values)",
        "group norm (+ SiLU)",
        "layer norm",
        "GEGLU gate",
    ];
    assert_eq!(names, kinds.into_iter().collect());
    assert!(ops.iter().all(|op| op["count"].as_u64().unwrap() > 0 && op["seconds"].as_f64().unwrap() > 0.0));
    assert!(by_op["step_s"].as_f64().unwrap() > 0.0 && by_op["other_s"].as_f64().unwrap() >= 0.0);
    assert_eq!(by_op["untimed"], 0);
}

/// `fpi edit` from a photo (inverting it first, keeping the seed), then from that seed: the source branch is the
/// seed's reconstruction, and a word that is in neither prompt is a one-line error that writes nothing.
#[test]
fn edit_a_photo_and_its_seed() {
    let dir = tempfile::tempdir().unwrap();
    let (model, photo, device) = (tiny_model(), fixtures().join("photos/camera.png"), device_name());
    let file = |name: &str| dir.path().join(name);
    let common = ["--model", path(&model), "--device", &device, "--quiet"];
    let edit = ["edit", "--prompt", "a man with a guitar", "--steps", "4", "--size", "32", "--adjust", "1"];
    let out = fpi(&[
        &edit[..],
        &["--image", path(&photo), "--source-prompt", "a man with a camera", "--iterations", "2"],
        &["--seed-out", path(&file("seed.safetensors")), "--output", path(&file("edit.png"))],
        &common,
    ]
    .concat());
    assert!(out.status.success());
    let seed = Seed::from_bytes(&std::fs::read(file("seed.safetensors")).unwrap()).unwrap();
    assert_eq!(seed.info.unwrap().settings.prompt, "a man with a camera");

    let out = fpi(&[
        &["edit", "--seed", path(&file("seed.safetensors")), "--prompt", "a man with a red camera"][..],
        &["--blend", "red", "camera", "--output", path(&file("edit2.png"))],
        &["--source-output", path(&file("source.png"))],
        &common,
    ]
    .concat());
    assert!(out.status.success());
    let (seed_file, rec) = (file("seed.safetensors"), file("rec.png"));
    let reconstruct = ["reconstruct", "--seed", path(&seed_file), "--output", path(&rec)];
    assert!(fpi(&[&reconstruct[..], &common].concat()).status.success());
    let (a, b) = (image_pixels(&file("source.png")), image_pixels(&file("rec.png")));
    assert!(a.iter().zip(&b).all(|(x, y)| x.abs_diff(*y) <= 1), "the source branch is the reconstruction");
    assert_ne!(image_pixels(&file("edit2.png")), a, "the edit changes the image");

    let out = fpi(&[
        &["edit", "--seed", path(&file("seed.safetensors")), "--prompt", "a man with a guitar"][..],
        &["--blend", "dog", "--output", path(&file("none.png"))],
        &common,
    ]
    .concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.lines().count() == 1, "{stderr}");
    assert!(stderr.contains("blend word \"dog\" is in neither prompt"), "{stderr}");
    assert!(!file("none.png").exists());

    // From a photo, a bad edit is found before the inversion: no seed is written either.
    let out = fpi(&[
        &edit[..],
        &["--image", path(&photo), "--source-prompt", "a man with a camera", "--blend", "dog"],
        &["--seed-out", path(&file("unused.safetensors")), "--output", path(&file("none.png"))],
        &common,
    ]
    .concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && stderr.contains("blend word \"dog\""), "{stderr}");
    assert!(!file("unused.safetensors").exists());
}

/// A Hugging Face cache holding the tiny model as `org/tiny` at `main` (refs/main → snapshots/<commit>/, files
/// linked from blobs/ as huggingface_hub writes them).
fn hub_cache() -> tempfile::TempDir {
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--org--tiny");
    let commit = "0123456789abcdef0123456789abcdef01234567";
    std::fs::create_dir_all(repo.join("blobs")).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), commit).unwrap();
    for (i, part) in ["scheduler", "text_encoder", "tokenizer", "unet", "vae"].into_iter().enumerate() {
        let folder = repo.join("snapshots").join(commit).join(part);
        std::fs::create_dir_all(&folder).unwrap();
        for (j, entry) in std::fs::read_dir(tiny_model().join(part)).unwrap().enumerate() {
            let entry = entry.unwrap();
            let blob = format!("blob{i}{j}");
            std::fs::copy(entry.path(), repo.join("blobs").join(&blob)).unwrap();
            std::os::unix::fs::symlink(format!("../../../blobs/{blob}"), folder.join(entry.file_name())).unwrap();
        }
    }
    cache
}

/// `fpi invert` with `model_args` (and the cache `cache` offline): the seed file it writes.
fn invert_with(model_args: &[&str], cache: &Path, dir: &Path, name: &str) -> Seed {
    let (photo, output) = (fixtures().join("photos/camera.png"), dir.join(name));
    let mut args = vec!["invert", "--quiet", "--image", path(&photo), "--prompt", "a man", "--size", "32"];
    args.extend(["--steps", "2", "--device", "ndarray", "--output", path(&output)]);
    args.extend(model_args);
    let out = Command::new(env!("CARGO_BIN_EXE_fpi"))
        .args(&args)
        .env("HF_HUB_CACHE", cache)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("fpi runs");
    assert!(out.status.success(), "fpi {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
    Seed::from_bytes(&std::fs::read(&output).unwrap()).unwrap()
}

/// The model as a folder, a hub id in the cache (offline) and a single checkpoint file gives the same seed; seeds
/// record the model's name (never a local path; a pinned revision with it); a replacement VAE changes the seed and
/// is named too.
#[test]
fn a_model_from_the_hub_cache_or_one_checkpoint_inverts_as_its_folder_does() {
    let (cache, dir) = (hub_cache(), tempfile::tempdir().unwrap());
    let (tiny, file) = (tiny_model(), fixtures().join("single-file/tiny-sd.safetensors"));
    let run = |args: &[&str], name: &str| invert_with(args, cache.path(), dir.path(), name);
    let folder = run(&["--model", path(&tiny)], "folder.safetensors");
    let hub = run(&["--model", "org/tiny"], "hub.safetensors");
    let pinned = run(&["--model", "org/tiny@0123456789abcdef0123456789abcdef01234567"], "pinned.safetensors");
    let single = run(&["--model", path(&file), "--config", path(&tiny)], "file.safetensors");
    let vae = fixtures().join("single-file/tiny-vae");
    let swapped = run(&["--model", "org/tiny", "--vae", path(&vae)], "vae.safetensors");
    let name = |seed: &Seed| seed.info.as_ref().unwrap().model.clone();
    assert_eq!(
        [name(&folder), name(&hub), name(&pinned), name(&single)],
        ["tiny-sd", "org/tiny", "org/tiny@0123456789abcdef0123456789abcdef01234567", "tiny-sd"]
    );
    assert_eq!(name(&swapped), "org/tiny + tiny-vae");
    for (what, seed) in [("hub id", &hub), ("pinned revision", &pinned), ("checkpoint file", &single)] {
        let err = fpi_core::metrics::relative_error(&seed.latents, &folder.latents);
        assert!(err <= 1e-6, "{what}: seed differs from the folder's by {err:.2e}");
    }
    assert!(fpi_core::metrics::relative_error(&swapped.latents, &folder.latents) > 1e-3, "the VAE encodes the photo");
}

/// A hub id the cache lacks, offline: one line naming the cache, what is missing and how to fetch it.
#[test]
fn a_hub_id_not_in_the_cache_is_one_line_offline() {
    let (cache, dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let output = dir.path().join("seed.safetensors");
    let photo = fixtures().join("photos/camera.png");
    let out = Command::new(env!("CARGO_BIN_EXE_fpi"))
        .args(["invert", "--model", "org/absent", "--image", path(&photo), "--prompt", "x", "--output", path(&output)])
        .env("HF_HUB_CACHE", cache.path())
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && !output.exists());
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("org/absent") && stderr.contains("HF_HUB_OFFLINE") && stderr.contains("hf download"),
        "{stderr}"
    );
}

/// The photos of `fixtures/photos`, with a prompt each.
const PHOTOS: [(&str, &str); 2] =
    [("astronaut.jpg", "an astronaut in a white suit"), ("camera.png", "a man with a camera")];

/// A folder holding the photos and a `prompts.jsonl` for them.
fn photo_folder() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let mut lines = String::new();
    for (name, prompt) in PHOTOS {
        std::fs::copy(fixtures().join("photos").join(name), dir.path().join(name)).unwrap();
        lines += &format!("{}\n", serde_json::json!({"file": name, "prompt": prompt}));
    }
    std::fs::write(dir.path().join("prompts.jsonl"), lines).unwrap();
    dir
}

/// The options of `fpi invert --quiet` on the tiny model at 32 pixels and 2 steps, on ndarray (as deterministic as
/// the batch's comparison with single runs needs, in a few seconds an image).
fn batch_options(model: &Path) -> [&str; 10] {
    ["invert", "--quiet", "--model", path(model), "--size", "32", "--steps", "2", "--device", "ndarray"]
}

/// `fpi invert` with [`batch_options`] and `args`.
fn invert_many(args: &[&str]) -> Output {
    let model = tiny_model();
    fpi(&[&batch_options(&model)[..], args].concat())
}

/// `summary.json` in `dir`: its rows by image name.
fn summary(dir: &Path) -> std::collections::HashMap<String, serde_json::Value> {
    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(dir.join("summary.json")).unwrap()).unwrap();
    rows.into_iter().map(|row| (row["image"].as_str().unwrap().to_owned(), row)).collect()
}

/// A folder of photos with their prompts in `prompts.jsonl`, inverted in one run: each seed and reconstruction is
/// what `fpi invert` makes of that photo alone, and the summary holds its numbers.
#[test]
fn a_folder_of_photos_inverts_as_each_photo_alone() {
    let (photos, out) = (photo_folder(), tempfile::tempdir().unwrap());
    let dir = out.path().join("seeds");
    let run = invert_many(&["--image", path(photos.path()), "--output-dir", path(&dir)]);
    assert!(run.status.success());
    let rows = summary(&dir);
    assert_eq!(rows.len(), 2);
    for (name, prompt) in PHOTOS {
        let stem = name.split('.').next().unwrap();
        let (single, single_png) =
            (out.path().join(format!("{stem}.safetensors")), out.path().join(format!("{stem}.png")));
        let photo = photos.path().join(name);
        let alone = invert(
            &single,
            &["--image", path(&photo), "--prompt", prompt, "--device", "ndarray", "--reconstruct", path(&single_png)],
        );
        assert!(alone.status.success());
        let batch = Seed::from_bytes(&std::fs::read(dir.join(format!("{stem}.safetensors"))).unwrap()).unwrap();
        let single = Seed::from_bytes(&std::fs::read(&single).unwrap()).unwrap();
        assert_eq!(batch.info, single.info, "{name}: the same settings, prompt and model");
        let err = fpi_core::metrics::relative_error(&batch.latents, &single.latents);
        assert!(err <= 1e-6, "{name}: the batch's seed differs from the single run's by {err:.2e}");
        let (a, b) = (image_pixels(&dir.join(format!("{stem}.png"))), image_pixels(&single_png));
        assert!(a.iter().zip(&b).all(|(x, y)| x.abs_diff(*y) <= 1), "{name}: reconstructions differ");

        let row = &rows[name];
        let (psnr, bound, latent_error) = printed_quality(&String::from_utf8_lossy(&alone.stdout));
        assert_eq!((row["status"].as_str(), row["prompt"].as_str()), (Some("done"), Some(prompt)), "{row}");
        assert!((row["psnr_db"].as_f64().unwrap() - psnr).abs() < 0.01, "{row}");
        assert!((row["vae_psnr_db"].as_f64().unwrap() - bound).abs() < 0.01, "{row}");
        assert!((row["latent_error"].as_f64().unwrap() / latent_error - 1.0).abs() < 1e-3, "{row}");
        assert!(row["seconds"].as_f64().unwrap() > 0.0, "{row}");
    }
    let table = String::from_utf8_lossy(&run.stdout);
    assert!(table.lines().any(|l| l.starts_with("image") && l.contains("PSNR dB") && l.contains("status")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("camera.png") && l.ends_with("done")), "{table}");

    // A rerun skips both; a reconstruction gone missing is sampled again from its seed, and the numbers stay.
    let camera = image_pixels(&dir.join("camera.png"));
    std::fs::remove_file(dir.join("camera.png")).unwrap();
    let rerun = invert_many(&["--image", path(photos.path()), "--output-dir", path(&dir)]);
    assert!(rerun.status.success());
    let stderr = String::from_utf8_lossy(&rerun.stderr);
    assert!(stderr.contains("astronaut.jpg: skipped") && stderr.contains("camera.png: skipped"), "{stderr}");
    assert_eq!(image_pixels(&dir.join("camera.png")), camera);
    for (name, row) in summary(&dir) {
        assert_eq!(row["status"], "skipped");
        assert_eq!(row["psnr_db"], rows[&name]["psnr_db"], "{name}: the earlier run's numbers");
    }
}

/// A batch killed once its first seed is written resumes: the first image is skipped (its seed untouched), the
/// second done.
#[test]
fn an_interrupted_batch_resumes_where_it_stopped() {
    let (photos, out) = (photo_folder(), tempfile::tempdir().unwrap());
    let dir = out.path().join("seeds");
    let model = tiny_model();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fpi"))
        .args(batch_options(&model))
        .args(["--image", path(photos.path()), "--output-dir", path(&dir)])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (first, second) = (dir.join("astronaut.safetensors"), dir.join("camera.safetensors"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(300);
    while !first.exists() {
        assert!(child.try_wait().unwrap().is_none(), "the batch ended before its first seed");
        assert!(std::time::Instant::now() < deadline, "no first seed in 300 s");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!second.exists(), "killed before the second image");
    let rows = summary(&dir);
    assert_eq!(rows["camera.png"]["status"], "pending", "an interrupted run's summary says what is left");
    let (bytes, modified) = (std::fs::read(&first).unwrap(), std::fs::metadata(&first).unwrap().modified().unwrap());

    let rerun = invert_many(&["--image", path(photos.path()), "--output-dir", path(&dir)]);
    assert!(rerun.status.success());
    let stderr = String::from_utf8_lossy(&rerun.stderr);
    assert!(stderr.contains("astronaut.jpg: skipped"), "{stderr}");
    assert!(!stderr.contains("camera.png: skipped"), "{stderr}");
    assert_eq!(std::fs::read(&first).unwrap(), bytes);
    assert_eq!(std::fs::metadata(&first).unwrap().modified().unwrap(), modified);
    assert!(second.exists() && dir.join("camera.png").exists() && dir.join("astronaut.png").exists());
    let rows = summary(&dir);
    assert_eq!(
        (rows["astronaut.jpg"]["status"].as_str(), rows["camera.png"]["status"].as_str()),
        (Some("skipped"), Some("done"))
    );
}

/// Bad batches: one line and nothing written (no images, an image without a prompt, one-image options, two images
/// of one name); an unreadable image is reported and skipped, the others done, and the run fails at the end. A
/// rerun with other settings inverts again.
#[test]
fn bad_batches_are_one_line_and_unreadable_images_are_skipped() {
    let (photos, out) = (photo_folder(), tempfile::tempdir().unwrap());
    let dir = out.path().join("seeds");
    let fast = ["--method", "ddim", "--adjust", "0"];
    let one_line = |run: Output, needle: &str| {
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(!run.status.success());
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("error: ") && stderr.contains(needle), "{needle}: {stderr}");
        assert!(!dir.exists(), "nothing written");
    };
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("notes.txt"), "not an image").unwrap();
    one_line(invert_many(&["--image", path(empty.path()), "--output-dir", path(&dir)]), "no images in this folder");

    // Found before the model is looked for (it does not exist).
    let unlisted = tempfile::tempdir().unwrap();
    for (name, _) in PHOTOS {
        std::fs::copy(photos.path().join(name), unlisted.path().join(name)).unwrap();
    }
    std::fs::write(unlisted.path().join("captions.txt"), "astronaut.jpg: an astronaut\n").unwrap();
    let run =
        fpi(&["invert", "--model", "/no/such/model", "--image", path(unlisted.path()), "--output-dir", path(&dir)]);
    one_line(run, "camera.png: no prompt");

    let photo = photos.path().join("camera.png");
    let cases: [(&[&str], &str); 5] = [
        (&["--image", path(photos.path()), "--output", path(&dir)], "--output-dir"),
        (&["--image", path(&photo), "--image", path(&photo), "--output-dir", path(&dir)], "rename one"),
        (
            &["--image", path(photos.path()), "--output-dir", path(&dir), "--trace", "t.json"],
            "--trace is for one image",
        ),
        (&["--image", path(&photo), "--output-dir", path(&dir), "--reconstruct", "r.png"], "--reconstruct"),
        (&["--image", path(&photo), "--image", path(&photo), "--prompt", "x"], "need --output-dir"),
    ];
    for (args, needle) in cases {
        one_line(invert_many(args), needle);
    }

    std::fs::write(photos.path().join("broken.png"), b"not a PNG at all").unwrap();
    let run = invert_many(
        &[&["--image", path(photos.path()), "--output-dir", path(&dir), "--prompt", "a photo"][..], &fast].concat(),
    );
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.lines().any(|l| l.contains("broken.png: cannot read the image") && l.ends_with("; skipped")),
        "{stderr}"
    );
    assert!(
        stderr.trim_end().lines().last().unwrap().starts_with("error: 1 of 3 images could not be read"),
        "{stderr}"
    );
    assert!(!dir.join("broken.safetensors").exists());
    let rows = summary(&dir);
    assert_eq!(rows["broken.png"]["status"], "failed");
    for name in ["astronaut", "camera"] {
        assert!(dir.join(format!("{name}.safetensors")).exists() && dir.join(format!("{name}.png")).exists());
    }
    assert_eq!(rows["camera.png"]["status"], "done");

    std::fs::remove_file(photos.path().join("broken.png")).unwrap();
    let guided = [
        &["--image", path(photos.path()), "--output-dir", path(&dir), "--prompt", "a photo"][..],
        &fast,
        &["--guidance", "1.5"],
    ]
    .concat();
    let run = invert_many(&guided);
    assert!(run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(!stderr.contains("skipped") && stderr.contains("is not a seed of these settings"), "{stderr}");
    let seed = Seed::from_bytes(&std::fs::read(dir.join("camera.safetensors")).unwrap()).unwrap();
    assert_eq!(seed.info.unwrap().settings.guidance, 1.5);
}
