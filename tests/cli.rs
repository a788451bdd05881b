//! `fpi` end to end on the tiny model and real photos (scikit-image's astronaut, a JPEG; its camera, a grey PNG):
//! invert, then reconstruct from the seed file; and the errors a user meets. Built as a test of the fpi-cli crate
//! so that the `fpi` binary is at hand; runs on `FPI_TEST_DEVICE` (ndarray by default).

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use fpi_core::seed::Seed;

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
    let model = tiny_model();
    let photo = fixtures().join("photos/astronaut.jpg");
    let device = device_name();
    let out = fpi(&[
        "invert",
        "--model",
        path(&model),
        "--image",
        path(&photo),
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
        "--size",
        "32",
        "--device",
        &device,
        "--output",
        path(&seed),
        "--trace",
        path(&trace),
        "--reconstruct",
        path(&rec),
        "--quiet",
    ]);
    assert!(out.status.success());

    let file = Seed::from_bytes(&std::fs::read(&seed).unwrap()).unwrap();
    assert_eq!(file.shape, [1, 4, 16, 16]);
    assert_eq!(file.info.prompt, "a photograph of an astronaut");
    assert_eq!((file.info.steps, file.info.iterations, file.info.adjust, file.info.size), (20, 8, 1, 32));
    assert_eq!(file.info.method, "fpi");
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
    let model = tiny_model();
    let photo = fixtures().join("photos/camera.png");
    let device = device_name();
    let latent_error = |method: &str, iterations: &str| {
        let (seed, rec) = (dir.path().join(format!("{method}.safetensors")), dir.path().join(format!("{method}.png")));
        let out = fpi(&[
            "invert",
            "--model",
            path(&model),
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
            "--size",
            "32",
            "--device",
            &device,
            "--output",
            path(&seed),
            "--reconstruct",
            path(&rec),
            "--quiet",
        ]);
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
    let seed = Seed { latents: vec![0.0; 4 * 15 * 15], shape: [1, 4, 15, 15], info: Default::default() };
    std::fs::write(&odd, seed.to_bytes()).unwrap();
    // `fpi invert` with valid options, some replaced by `changes` (flag, value) pairs.
    let invert = |changes: &[&str]| {
        let mut options = vec![
            ("--model", model.to_owned()),
            ("--image", photo.to_owned()),
            ("--prompt", "x".into()),
            ("--steps", "2".into()),
            ("--size", "32".into()),
            ("--device", device.clone()),
            ("--output", out.to_owned()),
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
    };
    let cases = [
        (invert(&["--size", "40"]), "multiple of 16"),
        (invert(&["--image", "/no/such/photo.png"]), "/no/such/photo.png"),
        (invert(&["--image", &format!("{model}/unet/config.json")]), "cannot read the image"),
        (invert(&["--model", "/no/such/model"]), "/no/such/model"),
        (invert(&["--guidance", "0.5"]), "--guidance"),
        (invert(&["--steps", "1000", "--adjust", "0"]), "past the 1000 training steps"),
        (invert(&["--adjust", "3"]), "--adjust 3 is more than --steps 2"),
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
