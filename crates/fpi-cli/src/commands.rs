//! What each subcommand does.

use std::path::Path;
use std::time::Instant;

use burn::tensor::{Device, Distribution, FloatDType, Tensor};
use fpi_core::seed::{Sampling, Seed};
use fpi_core::settings::{InvertSettings, Setting, SettingsError, check_guidance};
use fpi_core::solver::to_host;
use fpi_models::ModelFolder;
use fpi_models::device::{Backend, adapters};
use fpi_models::precision;
use fpi_models::profile::StepProfile;
use fpi_pipeline::edit::EditSettings;
use fpi_pipeline::image_io::{self, RgbImage};
use fpi_pipeline::{Pipeline, PipelineError};
use rand::SeedableRng;
use rand_distr::{Distribution as _, StandardNormal};

use crate::args::{
    BenchArgs, Cli, Command, Common, EditArgs, GenerateArgs, InvertArgs, ReconstructArgs, RunOptions, SampleOutputs,
    SamplingOptions,
};
use crate::batch::{self, Inverter};
use crate::derived;
use crate::failure::{AtPath, Failure, at};
use crate::files::{check_writable, read_file, write_atomic};
use crate::model::{ChosenModel, choose};
use crate::progress::Bars;

/// Runs a parsed command line; errors are one line for the user.
pub fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Invert(args) => invert(args),
        Command::Reconstruct(args) => reconstruct(args),
        Command::Edit(args) => edit(args),
        Command::Generate(args) => generate(args),
        Command::Interpolate(args) => derived::interpolate(args),
        Command::Centroid(args) => derived::centroid(args),
        Command::Info => info(),
        Command::Bench(args) => bench(args),
    }
}

/// The model `common` names, loaded, and its name for seed files.
pub(crate) fn load(common: &Common) -> Result<(Pipeline, String), Failure> {
    let model = choose(common)?;
    let name = model.name.clone();
    Ok((load_chosen(model, common)?, name))
}

/// Loads a model `choose` found, with `common`'s device and progress bars.
pub(crate) fn load_chosen(model: ChosenModel, common: &Common) -> Result<Pipeline, Failure> {
    let (device, dtype) = open(&common.run)?;
    let started = Instant::now();
    let mut bars = Bars::new(common.run.quiet);
    let mut progress = |part: &str, done, total| bars.load(part, done, total);
    let mut folder = ModelFolder::new(model.files);
    folder.dtype = dtype;
    let pipeline = pollster::block_on(Pipeline::load(&folder, device, &mut progress))?;
    if !common.run.quiet {
        eprintln!("loaded {} in {:.1} s", common.choice.model, started.elapsed().as_secs_f64());
    }
    Ok(pipeline)
}

/// The device and float type `run` asks for, said on stderr unless quiet.
fn open(run: &RunOptions) -> Result<(Device, FloatDType), Failure> {
    let backend = run.device.resolve();
    let device = backend.open()?;
    let dtype = run.precision.resolve(&device)?;
    if !run.quiet {
        eprintln!("device: {backend}, {}", precision::name(dtype));
    }
    Ok((device, dtype))
}

pub(crate) fn read_image(path: &Path) -> Result<RgbImage, Failure> {
    image_io::decode(&read_file(path)?).map_err(|e| at(path, PipelineError::from(e)))
}

pub(crate) fn read_seed(path: &Path) -> Result<Seed, Failure> {
    Seed::from_bytes(&read_file(path)?).at(path)
}

pub(crate) fn write_png(path: &Path, image: &RgbImage) -> Result<(), Failure> {
    write_atomic(path, &image_io::encode_png(image))
}

pub(crate) fn check_outputs<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Result<(), Failure> {
    paths.into_iter().try_for_each(check_writable)
}

/// `fpi invert`: one image into `--output`, or several into `--output-dir`.
fn invert(args: InvertArgs) -> Result<(), Failure> {
    if batch::wanted(&args) { batch::invert_all(args) } else { invert_one(args) }
}

/// `fpi invert --image X --output SEED [--trace T] [--reconstruct PNG]`.
fn invert_one(args: InvertArgs) -> Result<(), Failure> {
    let (image_path, output) = match (&args.image[..], &args.output) {
        ([image], Some(output)) => (image, output),
        _ => return Err(Failure::from("give --output SEED (the seed file to write), or --output-dir DIR".to_owned())),
    };
    check_outputs([Some(output.as_path()), args.trace.as_deref(), args.reconstruct.as_deref()].into_iter().flatten())?;
    let prompts = batch::prompts(std::slice::from_ref(image_path), args.prompt.as_deref())?;
    let settings = batch::settings(&args, &prompts[0])?;
    let image = read_image(image_path)?;
    let (pipeline, model) = load(&args.common)?;
    let inverter = Inverter { pipeline: &pipeline, model: &model, quiet: args.common.run.quiet };
    let inverted = inverter.invert(&image, &settings, output, "")?;
    if let Some(trace) = &args.trace {
        write_atomic(trace, &serde_json::to_vec_pretty(inverted.reports()).expect("plain data"))?;
    }
    if let Some(out) = &args.reconstruct {
        inverter.check(&inverted, out)?;
    }
    Ok(())
}

fn reconstruct(args: ReconstructArgs) -> Result<(), Failure> {
    check_outputs(args.outputs.paths())?;
    let seed = read_seed(&args.seed)?;
    let sampling = sampling_of(&seed, &args.seed, &args.sampling)?;
    let (pipeline, _) = load(&args.common)?;
    check_sampling(&sampling, &pipeline, &args.seed, &args.sampling)?;
    let latents = pipeline.seed_tensor(&seed).at(&args.seed)?;
    let Sampling { prompt, steps, guidance } = sampling;
    sample_and_write(&pipeline, latents, &prompt, steps, guidance, args.common.run.quiet, &args.outputs)
}

/// How to sample `seed` (read from `path`): `options`, else what the seed records ([`Seed::sampling`]), checked.
pub(crate) fn sampling_of(seed: &Seed, path: &Path, options: &SamplingOptions) -> Result<Sampling, Failure> {
    let sampling = seed.sampling(options.prompt.clone(), options.steps, options.guidance);
    check_guidance(sampling.guidance).map_err(|e| blame(e, path, options))?;
    Ok(sampling)
}

/// Checks `sampling`'s steps against the model's schedule.
pub(crate) fn check_sampling(
    sampling: &Sampling,
    pipeline: &Pipeline,
    path: &Path,
    options: &SamplingOptions,
) -> Result<(), Failure> {
    pipeline.check_steps(sampling.steps).map(|_| ()).map_err(|e| blame(e, path, options))
}

/// A bad value from the seed is the seed's fault, not an option's.
fn blame(e: SettingsError, path: &Path, options: &SamplingOptions) -> Failure {
    match (e.setting(), options.steps, options.guidance) {
        (Setting::Steps, None, _) | (Setting::Guidance, _, None) => at(path, format_args!("metadata {e}")),
        _ => e.into(),
    }
}

pub(crate) fn sample_and_write(
    pipeline: &Pipeline,
    latents: Tensor<4>,
    prompt: &str,
    steps: usize,
    guidance: f64,
    quiet: bool,
    outputs: &SampleOutputs,
) -> Result<(), Failure> {
    let mut bars = Bars::new(quiet);
    let z0 = pollster::block_on(pipeline.sample(latents, prompt, steps, guidance, &mut |ph, p| bars.observe(ph, p)))?;
    bars.finish();
    if let Some(path) = &outputs.latents_out {
        let values = pollster::block_on(to_host(z0.clone()))?;
        write_atomic(path, &Seed { latents: values, shape: z0.dims(), info: None }.to_bytes())?;
    }
    let image = pollster::block_on(pipeline.decode(z0))?;
    write_png(&outputs.output, &image)?;
    if !quiet {
        eprintln!("wrote {}", outputs.output.display());
    }
    Ok(())
}

fn edit(args: EditArgs) -> Result<(), Failure> {
    let outputs = [Some(args.output.as_path()), args.source_output.as_deref(), args.seed_out.as_deref()];
    check_outputs(outputs.into_iter().flatten())?;
    let settings = EditSettings {
        prompt: args.prompt.clone(),
        mode: args.mode,
        cross_steps: args.cross_steps,
        cross_word_steps: args.word_steps.clone(),
        self_steps: args.self_steps,
        blend: args.blend.clone(),
        blend_threshold: args.blend_threshold,
        blend_start: args.blend_start,
        reweight: args.reweight.clone(),
    };
    let mut bars = Bars::new(args.common.run.quiet);
    let (pipeline, seed, source) = match (&args.seed, &args.image) {
        (Some(path), _) => {
            let seed = read_seed(path)?;
            let recorded = seed.info.as_ref().map(|info| &info.settings);
            let source = match (&args.source_prompt, recorded) {
                (Some(prompt), _) => prompt.clone(),
                (None, Some(settings)) => settings.prompt.clone(),
                (None, None) => return Err(at(path, "no prompt in its metadata; give --source-prompt")),
            };
            let (pipeline, _) = load(&args.common)?;
            (pipeline, seed, source)
        }
        (None, Some(image)) => {
            let source = args.source_prompt.clone().expect("clap requires it without --seed");
            let defaults = InvertSettings::default();
            let steps = args.steps.unwrap_or(defaults.steps);
            let inversion = args.solver.settings(&source, steps, args.guidance.unwrap_or(defaults.guidance))?;
            let image = read_image(image)?;
            let (pipeline, model) = load(&args.common)?;
            pipeline.check(&inversion)?;
            // The edit is checked before the inversion, which takes minutes.
            pipeline.check_edit(&source, &settings, steps, pipeline.latent_shape(inversion.size))?;
            let inverted = pollster::block_on(
                pipeline.invert_image(&image, &inversion, &model, &mut |ph, p| bars.observe(ph, p)),
            )?;
            bars.finish();
            if let Some(out) = &args.seed_out {
                write_atomic(out, &inverted.seed.to_bytes())?;
            }
            (pipeline, inverted.seed, source)
        }
        (None, None) => unreachable!("clap requires --seed or --image"),
    };
    let recorded = seed.info.as_ref().map(|info| &info.settings);
    let steps = args.steps.or(recorded.map(|s| s.steps)).unwrap_or(InvertSettings::default().steps);
    let guidance = args.guidance.or(recorded.map(|s| s.guidance)).unwrap_or(InvertSettings::default().guidance);
    let latents = match &args.seed {
        Some(path) => pipeline.seed_tensor(&seed).at(path)?,
        None => pipeline.seed_tensor(&seed)?,
    };
    let started = Instant::now();
    let edited = pollster::block_on(
        pipeline.edit(latents, &source, &settings, steps, guidance, &mut |ph, p| bars.observe(ph, p)),
    )?;
    bars.finish();
    write_png(&args.output, &pollster::block_on(pipeline.decode(edited.target))?)?;
    if let Some(out) = &args.source_output {
        write_png(out, &pollster::block_on(pipeline.decode(edited.source))?)?;
    }
    if !args.common.run.quiet {
        eprintln!("wrote {} ({steps} steps, {:.1} s)", args.output.display(), started.elapsed().as_secs_f64());
    }
    Ok(())
}

fn generate(args: GenerateArgs) -> Result<(), Failure> {
    check_outputs(args.outputs.paths())?;
    let init = args.init_latents.as_deref().map(|path| Ok::<_, Failure>((path, read_seed(path)?))).transpose()?;
    let (pipeline, _) = load(&args.common)?;
    let latents = match init {
        Some((path, seed)) => pipeline.seed_tensor(&seed).at(path)?,
        None => {
            pipeline.check_size(args.size)?;
            let shape = pipeline.latent_shape(args.size);
            let mut rng = rand::rngs::StdRng::seed_from_u64(args.random_seed);
            let values: Vec<f32> = (0..shape.iter().product()).map(|_| StandardNormal.sample(&mut rng)).collect();
            pipeline.seed_tensor(&Seed { latents: values, shape, info: None })?
        }
    };
    sample_and_write(&pipeline, latents, &args.prompt, args.steps, args.guidance, args.common.run.quiet, &args.outputs)
}

fn info() -> Result<(), Failure> {
    let found = adapters();
    if found.is_empty() {
        println!("wgpu: no adapter found");
    }
    for a in &found {
        println!(
            "wgpu: {} ({}, {}): max storage binding {} MiB, max buffer {} MiB, shader-f16 {}",
            a.name,
            a.kind,
            a.api,
            a.max_binding >> 20,
            a.max_buffer >> 20,
            if a.shader_f16 { "yes" } else { "no" }
        );
    }
    println!(
        "cpu: flex (fast), ndarray (portable), {} threads",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!("auto picks: {}", Backend::Auto.resolve());
    Ok(())
}

/// Runs `f` once to warm up (kernels compiled, shapes tuned), then times a second run, results read back.
fn time<const D: usize>(mut f: impl FnMut() -> Result<Tensor<D>, PipelineError>) -> Result<f64, Failure> {
    let read = |t| pollster::block_on(to_host(t));
    read(f()?)?;
    let started = Instant::now();
    read(f()?)?;
    Ok(started.elapsed().as_secs_f64())
}

/// The most memory this process has held resident, in MiB (Linux; elsewhere unknown).
fn peak_resident_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// What `fpi bench` measured.
struct BenchReport {
    device: String,
    precision: &'static str,
    size: usize,
    steps: usize,
    model: String,
    load_s: f64,
    parts: Vec<(&'static str, &'static str, f64)>,
    by_op: Option<StepProfile>,
    inversion_s: Option<f64>,
}

fn bench(args: BenchArgs) -> Result<(), Failure> {
    check_group_norm_maps(&args)?;
    let started = Instant::now();
    let (pipeline, model, run) = match args.choice {
        Some(choice) => {
            let common = Common { choice, run: args.run };
            let (pipeline, name) = load(&common)?;
            (pipeline, name, common.run)
        }
        None => {
            let (device, dtype) = open(&args.run)?;
            (Pipeline::random(device, dtype)?, "random SD1.x".to_owned(), args.run)
        }
    };
    let load_s = started.elapsed().as_secs_f64();
    let settings = InvertSettings {
        prompt: "a photograph".into(),
        size: args.size,
        steps: args.steps,
        adjust: InvertSettings::default().adjust.min(args.steps),
        ..InvertSettings::default()
    };
    pipeline.check(&settings)?;
    let device = pipeline.device().clone();
    let shape = pipeline.latent_shape(args.size);
    let latents = |b| Tensor::<4>::random([b, shape[1], shape[2], shape[3]], Distribution::Normal(0.0, 1.0), &device);
    let states = pipeline.condition(&settings.prompt)?.states;
    let t = |b| Tensor::<1>::full([b], 501.0, &device);
    let (unet, vae) = (pipeline.unet(), pipeline.vae());
    let image = Tensor::<4>::random([1, 3, args.size, args.size], Distribution::Uniform(-1.0, 1.0), &device);
    let chosen = |key: &str| args.parts.is_empty() || args.parts.iter().any(|p| p == key);
    let mut parts = Vec::new();
    if chosen("clip") {
        parts.push(("clip", "CLIP (2 prompts)", time(|| Ok(pipeline.condition(&settings.prompt)?.states))?));
    }
    if chosen("unet_batch1") {
        let context = states.clone().narrow(0, 1, 1);
        parts.push(("unet_batch1", "UNet, batch 1", time(|| Ok(unet.forward(latents(1), t(1), &context)))?));
    }
    if chosen("unet_batch2") {
        parts.push(("unet_batch2", "UNet, batch 2 (guidance)", time(|| Ok(unet.forward(latents(2), t(2), &states)))?));
    }
    if chosen("vae_encode") {
        parts.push(("vae_encode", "VAE encode", time(|| Ok(vae.encode(image.clone()).mean))?));
    }
    if chosen("vae_decode") {
        parts.push(("vae_decode", "VAE decode", time(|| Ok(vae.decode(latents(1))))?));
    }
    if chosen("edit_step") {
        // One Prompt-to-Prompt step: the UNet on both branches (batch 4) with the attention hook.
        let edit = EditSettings { prompt: "a painting".into(), ..EditSettings::default() };
        let step = time(|| {
            let mut go_on =
                |_: fpi_pipeline::Phase, _: &fpi_core::solver::Progress| std::ops::ControlFlow::Continue(());
            Ok(pollster::block_on(pipeline.edit(latents(1), &settings.prompt, &edit, 1, 2.0, &mut go_on))?.target)
        })?;
        parts.push(("edit_step", "edit step (batch 4)", step));
    }
    // Only when named: group norm + SiLU on the two maps of `group_norm::benchmark_maps`, one after the other, by
    // fpi's kernels (WGSL on wgpu, ours on flex) and by burn's modules; the mean of five calls after a warm-up,
    // without reading back.
    for (key, label, composed) in
        [("group_norm", "group norm + SiLU, fpi", false), ("group_norm_burn", "group norm + SiLU, burn", true)]
    {
        if args.parts.iter().any(|p| p == key) {
            let maps = fpi_models::group_norm::benchmark_maps(args.size).map(|dims| {
                let norm = burn::nn::GroupNormConfig::new(32, dims[1]).with_epsilon(1e-6).init(&device);
                (norm, Tensor::<4>::random(dims, Distribution::Normal(0.0, 1.0), &device).cast(pipeline.dtype()))
            });
            let run = || {
                for (norm, x) in &maps {
                    match composed {
                        true => fpi_models::group_norm::composed(norm, x.clone(), true),
                        false => fpi_models::group_norm::forward(norm, x.clone(), true),
                    };
                }
                device.sync().map_err(|e| Failure::from(format!("the device failed: {e:?}")))
            };
            run()?;
            let started = Instant::now();
            for _ in 0..5 {
                run()?;
            }
            parts.push((key, label, started.elapsed().as_secs_f64() / 5.0));
        }
    }
    let by_op = if args.by_op {
        let step = || unet.forward(latents(2), t(2), &states);
        Some(pollster::block_on(StepProfile::measure(&device, step))?)
    } else {
        None
    };
    let inversion_s = if args.no_inversion {
        None
    } else {
        let mut bars = Bars::new(run.quiet || args.json);
        let started = Instant::now();
        let inversion = pollster::block_on(pipeline.invert(latents(1), &settings, &mut |ph, p| bars.observe(ph, p)))?;
        pollster::block_on(to_host(inversion.seed))?;
        bars.finish();
        Some(started.elapsed().as_secs_f64())
    };
    let report = BenchReport {
        device: run.device.resolve().to_string(),
        precision: precision::name(pipeline.dtype()),
        size: args.size,
        steps: args.steps,
        model,
        load_s,
        parts,
        by_op,
        inversion_s,
    };
    print_bench(&report, &settings, &device, args.json);
    Ok(())
}

/// Before any work: the group-norm parts' maps must each stay under the 128 MiB wgpu binds in one buffer
/// (lavapipe's and many browsers' limit).
fn check_group_norm_maps(args: &BenchArgs) -> Result<(), Failure> {
    let named = args.parts.iter().find(|p| p.starts_with("group_norm"));
    let largest = fpi_models::group_norm::benchmark_maps(args.size).map(|d| d.iter().product::<usize>() * 4);
    let largest = largest.into_iter().max().unwrap_or(0);
    match named {
        Some(part) if args.run.device.resolve() == Backend::Wgpu && largest >= 128 << 20 => {
            Err(Failure::from(format!(
                "--parts {part} at --size {} needs a map of {} MiB, more than wgpu binds in one buffer (128 MiB): use \
             --size 720 or less",
                args.size,
                largest >> 20
            )))
        }
        _ => Ok(()),
    }
}

fn print_bench(report: &BenchReport, settings: &InvertSettings, device: &burn::tensor::Device, json: bool) {
    let mib = |bytes: u64| bytes as f64 / 1048576.0;
    let usage = device.memory_pool_usage();
    let largest = device.memory_pool_report().map(|r| r.iter().map(|p| p.largest_alloc).max().unwrap_or(0));
    if json {
        let parts: serde_json::Map<String, serde_json::Value> =
            report.parts.iter().map(|(key, _, s)| ((*key).to_owned(), (*s).into())).collect();
        let object = serde_json::json!({
            "device": report.device,
            "precision": report.precision,
            "size": report.size,
            "steps": report.steps,
            "model": report.model,
            "load_s": report.load_s,
            "parts": parts,
            "by_op": report.by_op.as_ref().map(|p| serde_json::json!({
                "step_s": p.step_seconds,
                "other_s": p.other_seconds(),
                "untimed": p.ops.untimed,
                "ops": p.ops.rows.iter().map(|row| serde_json::json!({
                    "op": row.op.name(),
                    "count": row.count,
                    "seconds": row.seconds,
                })).collect::<Vec<_>>(),
            })),
            "inversion_s": report.inversion_s,
            "peak_resident_mib": peak_resident_mib(),
            "device_in_use_mib": usage.as_ref().map(|u| mib(u.bytes_in_use)),
            "device_reserved_mib": usage.as_ref().map(|u| mib(u.bytes_reserved)),
            "largest_allocation_mib": largest.map(mib),
        });
        println!("{object}");
        return;
    }
    println!("{}, size {2}×{2}, device {1}, {3}", report.model, report.device, report.size, report.precision);
    println!("{:<28} {:>9.3} s", "load", report.load_s);
    for (_, label, seconds) in &report.parts {
        println!("{label:<28} {seconds:>9.3} s");
    }
    if let Some(profile) = &report.by_op {
        println!("\nUNet, batch 2 (guidance), by operation:\n\n{profile}\n");
    }
    if let Some(seconds) = report.inversion_s {
        println!(
            "{:<28} {seconds:>9.3} s ({} steps, fpi K={}, guidance {}, adjust {})",
            "full inversion",
            settings.steps,
            settings.method.iterations(),
            settings.guidance,
            settings.adjust
        );
    }
    if let Some(peak) = peak_resident_mib() {
        println!("peak resident memory {peak:.0} MiB");
    }
    if let Some(usage) = usage {
        println!(
            "device memory in use {:.0} MiB (reserved {:.0} MiB)",
            mib(usage.bytes_in_use),
            mib(usage.bytes_reserved)
        );
    }
    if let Some(largest) = largest {
        println!("largest device allocation {:.1} MiB", mib(largest));
    }
}
