//! `fpi interpolate` and `fpi centroid` end to end on the tiny model: the end frames of an interpolation are the
//! reconstructions of its seeds, every seed written records how it was made, and bad input is one line that writes
//! nothing. (The seed-space arithmetic itself is checked against the authors' NAO in `tests/seed_space.rs`.)

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::*;
use fpi_core::seed::{Derivation, Seed};
use fpi_core::seed_space::{self, CentroidMethod, PathMethod};

fn fpi(args: &[&str]) -> Output {
    let output = Command::new(env!("CARGO_BIN_EXE_fpi")).args(args).output().expect("fpi runs");
    eprintln!("fpi {}\n{}", args.join(" "), String::from_utf8_lossy(&output.stderr));
    output
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn read_seed(p: &Path) -> Seed {
    Seed::from_bytes(&std::fs::read(p).unwrap()).unwrap()
}

fn png(p: &Path) -> fpi_pipeline::image_io::RgbImage {
    fpi_pipeline::image_io::decode(&std::fs::read(p).unwrap()).unwrap()
}

fn pixels(p: &Path) -> Vec<u8> {
    png(p).into_raw()
}

/// Two seeds inverted from the test photos on the tiny model, in `dir`.
fn two_seeds(dir: &Path) -> [std::path::PathBuf; 2] {
    let model = tiny_model();
    ["astronaut.jpg", "camera.png"].map(|photo| {
        let seed = dir.join(photo.replace('.', "-") + ".safetensors");
        let image = fixtures().join("photos").join(photo);
        let args = ["invert", "--quiet", "--model", path(&model), "--device", "ndarray", "--image", path(&image)];
        let settings = ["--prompt", "a photo", "--size", "32", "--steps", "2", "--output", path(&seed)];
        assert!(fpi(&[&args[..], &settings].concat()).status.success());
        seed
    })
}

fn model_args(model: &Path) -> [&str; 5] {
    ["--model", path(model), "--device", "ndarray", "--quiet"]
}

#[test]
fn interpolation_frames_end_at_the_seeds_reconstructions_and_record_how_they_were_made() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b] = two_seeds(dir.path());
    let (model, frames) = (tiny_model(), dir.path().join("frames"));
    let args = ["interpolate", "--from", path(&a), "--to", path(&b), "--points", "4", "--output-dir", path(&frames)];
    assert!(fpi(&[&args[..], &model_args(&model)].concat()).status.success());
    for (seed, png) in [(&a, "a.png"), (&b, "b.png")] {
        let out = dir.path().join(png);
        let args = ["reconstruct", "--seed", path(seed), "--output", path(&out)];
        assert!(fpi(&[&args[..], &model_args(&model)].concat()).status.success());
    }
    assert_eq!(pixels(&frames.join("000.png")), pixels(&dir.path().join("a.png")), "frame 0 is A's reconstruction");
    assert_eq!(pixels(&frames.join("003.png")), pixels(&dir.path().join("b.png")), "the last frame is B's");
    assert_ne!(pixels(&frames.join("001.png")), pixels(&frames.join("000.png")));
    let strip = png(&frames.join("strip.png"));
    assert_eq!((strip.width(), strip.height()), (4 * 32, 32));

    let (a_seed, b_seed) = (read_seed(&a), read_seed(&b));
    let expected = seed_space::interpolate(&a_seed.latents, &b_seed.latents, 4, PathMethod::Nao);
    for (i, latents) in expected.iter().enumerate() {
        assert_eq!(&read_seed(&frames.join(format!("{i:03}.safetensors"))).latents, latents, "frame {i}");
    }
    assert_eq!(expected[0], a_seed.latents);
    for i in 0..4 {
        let info = read_seed(&frames.join(format!("{i:03}.safetensors"))).info.expect("a derived seed has metadata");
        let expected = Derivation::Interpolation {
            method: PathMethod::Nao,
            sources: ["astronaut-jpg.safetensors".into(), "camera-png.safetensors".into()],
            frame: i,
            frames: 4,
        };
        assert_eq!(info.derivation, Some(expected));
        assert_eq!(
            (info.settings.prompt.as_str(), info.settings.steps, info.model.as_str()),
            ("a photo", 2, "tiny-sd")
        );
    }
}

#[test]
fn a_centroid_is_written_with_its_sources_and_image() {
    let dir = tempfile::tempdir().unwrap();
    let [a, b] = two_seeds(dir.path());
    let model = tiny_model();
    let (a_seed, b_seed) = (read_seed(&a), read_seed(&b));
    for name in ["nao", "mean", "shell"] {
        let (out, image) = (dir.path().join(format!("{name}.safetensors")), dir.path().join(format!("{name}.png")));
        let args = ["centroid", path(&a), path(&b), "--method", name, "--output", path(&out), "--image", path(&image)];
        assert!(fpi(&[&args[..], &model_args(&model)].concat()).status.success());
        let seed = read_seed(&out);
        let method = name.parse::<CentroidMethod>().unwrap();
        assert_eq!(seed.latents, seed_space::centroid(&[&a_seed.latents, &b_seed.latents], method));
        let sources = vec!["astronaut-jpg.safetensors".into(), "camera-png.safetensors".into()];
        assert_eq!(seed.info.unwrap().derivation, Some(Derivation::Centroid { method, sources }));
        assert_eq!(png(&image).width(), 32);
    }
}

#[test]
fn bad_input_is_one_line_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let model = tiny_model();
    let seed = |name: &str, side: usize| {
        let p = dir.path().join(name);
        let latents = (0..4 * side * side).map(|i| (i as f32 * 0.37).sin()).collect();
        std::fs::write(&p, Seed { latents, shape: [1, 4, side, side], info: None }.to_bytes()).unwrap();
        p
    };
    let (small, large) = (seed("small.safetensors", 4), seed("large.safetensors", 8));
    let frames = dir.path().join("frames");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["interpolate", "--from", path(&small), "--to", path(&large), "--output-dir", path(&frames)],
            "different sizes",
        ),
        (
            vec![
                "interpolate",
                "--from",
                path(&small),
                "--to",
                path(&small),
                "--points",
                "1",
                "--output-dir",
                path(&frames),
            ],
            "--points must be at least 2",
        ),
        (vec!["centroid", path(&small), "--output", path(&frames)], "at least 2 seeds, got 1"),
        (vec!["centroid", path(&small), path(&large), "--output", path(&frames)], "different sizes"),
    ];
    for (args, expected) in cases {
        let out = fpi(&[&args[..], &model_args(&model)].concat());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.lines().count() == 1 && stderr.contains(expected), "{stderr}");
        assert!(!frames.exists(), "nothing is written");
    }
}
