//! `fpi interpolate` and `fpi centroid`: seeds made from other seeds (`fpi_core::seed_space`), sampled with the
//! model into images.

use std::path::{Path, PathBuf};

use fpi_core::seed::{Derivation, Sampling, Seed, SeedInfo};
use fpi_core::seed_space;
use fpi_pipeline::Pipeline;
use fpi_pipeline::image_io::{self, RgbImage};

use crate::args::{CentroidArgs, InterpolateArgs};
use crate::commands::{check_outputs, check_sampling, load, read_seed, sampling_of, write_png};
use crate::failure::{AtPath, Failure};
use crate::files::write_atomic;
use crate::progress::Bars;

/// Reads `paths` as seeds of one shape.
fn read_seeds(paths: &[&Path]) -> Result<Vec<Seed>, Failure> {
    let seeds = paths.iter().map(|p| read_seed(p)).collect::<Result<Vec<_>, _>>()?;
    if let Some(i) = seeds.iter().position(|s| s.shape != seeds[0].shape) {
        return Err(Failure::from(format!(
            "{} has latents {:?} and {} {:?}: seeds of different sizes cannot be combined",
            paths[0].display(),
            seeds[0].shape,
            paths[i].display(),
            seeds[i].shape
        )));
    }
    Ok(seeds)
}

/// A file's name, as derived seeds record their sources.
fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// Refuses latents that are not finite (the shell mean of seeds that sum to zero).
fn finite(latents: Vec<f32>, what: &str) -> Result<Vec<f32>, Failure> {
    if latents.iter().all(|x| x.is_finite()) {
        Ok(latents)
    } else {
        Err(Failure::from(format!("{what} is not finite (the seeds cancel out); try another --method")))
    }
}

/// Samples `seed` into an image.
fn render(
    pipeline: &Pipeline,
    seed: &Seed,
    path: &Path,
    sampling: &Sampling,
    quiet: bool,
) -> Result<RgbImage, Failure> {
    let latents = pipeline.seed_tensor(seed).at(path)?;
    let mut bars = Bars::new(quiet);
    let z0 = pollster::block_on(pipeline.sample(
        latents,
        &sampling.prompt,
        sampling.steps,
        sampling.guidance,
        &mut |ph, p| bars.observe(ph, p),
    ))?;
    bars.finish();
    Ok(pollster::block_on(pipeline.decode(z0))?)
}

/// `fpi interpolate`.
pub fn interpolate(args: InterpolateArgs) -> Result<(), Failure> {
    if args.points < 2 {
        return Err(Failure::from(format!("--points must be at least 2 (both seeds are frames), got {}", args.points)));
    }
    if args.output_dir.is_file() {
        return Err(Failure::from(format!("{}: --output-dir is a file", args.output_dir.display())));
    }
    let seeds = read_seeds(&[&args.from, &args.to])?;
    let (first, second) = (&seeds[0], &seeds[1]);
    let sampling = sampling_of(first, &args.from, &args.sampling)?;
    let other_prompt = second.info.as_ref().map(|info| info.settings.prompt.as_str());
    if args.sampling.prompt.is_none() && other_prompt.is_some_and(|p| p != sampling.prompt) {
        eprintln!(
            "warning: the seeds were inverted with different prompts; every frame is sampled with the first's, {:?} \
             (--prompt sets another)",
            sampling.prompt
        );
    }
    let dir = &args.output_dir;
    std::fs::create_dir_all(dir).map_err(|e| Failure::from(format!("{}: {e}", dir.display())))?;
    let named = |i: usize, ext: &str| dir.join(format!("{i:03}.{ext}"));
    check_outputs([dir.join("strip.png").as_path()])?;
    let (pipeline, model) = load(&args.common)?;
    check_sampling(&sampling, &pipeline, &args.from, &args.sampling)?;
    pipeline.check_latents(first.shape).at(&args.from)?;

    let frames = seed_space::interpolate(&first.latents, &second.latents, args.points, args.method);
    let frames = frames.into_iter().map(|f| finite(f, "a frame")).collect::<Result<Vec<_>, _>>()?;
    let factor = pipeline.vae().downsampling_factor();
    let settings = SeedInfo::derived_settings(first, factor, &sampling.prompt, sampling.steps, sampling.guidance);
    let sources = [file_name(&args.from), file_name(&args.to)];
    let mut images = Vec::new();
    for (i, latents) in frames.into_iter().enumerate() {
        if !args.common.run.quiet {
            eprintln!("frame {} of {}", i + 1, args.points);
        }
        let derivation =
            Derivation::Interpolation { method: args.method, sources: sources.clone(), frame: i, frames: args.points };
        let seed =
            Seed { latents, shape: first.shape, info: Some(SeedInfo::derived(settings.clone(), &model, derivation)) };
        write_atomic(&named(i, "safetensors"), &seed.to_bytes())?;
        let image = render(&pipeline, &seed, &named(i, "safetensors"), &sampling, args.common.run.quiet)?;
        write_png(&named(i, "png"), &image)?;
        images.push(image);
    }
    write_png(&dir.join("strip.png"), &image_io::strip(&images))?;
    if !args.common.run.quiet {
        eprintln!("wrote {} frames and strip.png to {}", images.len(), dir.display());
    }
    Ok(())
}

/// `fpi centroid`.
pub fn centroid(args: CentroidArgs) -> Result<(), Failure> {
    if args.seeds.len() < 2 {
        return Err(Failure::from(format!("a centroid needs at least 2 seeds, got {}", args.seeds.len())));
    }
    check_outputs([Some(args.output.as_path()), args.image.as_deref()].into_iter().flatten())?;
    let paths: Vec<&Path> = args.seeds.iter().map(PathBuf::as_path).collect();
    let seeds = read_seeds(&paths)?;
    let sampling = sampling_of(&seeds[0], paths[0], &args.sampling)?;
    let (pipeline, model) = load(&args.common)?;
    check_sampling(&sampling, &pipeline, paths[0], &args.sampling)?;
    pipeline.check_latents(seeds[0].shape).at(paths[0])?;

    let vectors: Vec<&[f32]> = seeds.iter().map(|s| s.latents.as_slice()).collect();
    let latents = finite(seed_space::centroid(&vectors, args.method), "the centroid")?;
    let derivation =
        Derivation::Centroid { method: args.method, sources: paths.iter().map(|p| file_name(p)).collect() };
    let factor = pipeline.vae().downsampling_factor();
    let settings = SeedInfo::derived_settings(&seeds[0], factor, &sampling.prompt, sampling.steps, sampling.guidance);
    let seed = Seed { latents, shape: seeds[0].shape, info: Some(SeedInfo::derived(settings, &model, derivation)) };
    write_atomic(&args.output, &seed.to_bytes())?;
    if let Some(image) = &args.image {
        write_png(image, &render(&pipeline, &seed, &args.output, &sampling, args.common.run.quiet)?)?;
    }
    if !args.common.run.quiet {
        eprintln!("wrote {}", args.output.display());
    }
    Ok(())
}
