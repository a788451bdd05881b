//! What each subcommand does.

use std::path::Path;
use std::time::Instant;

use burn::tensor::{Device, Tensor};
use fpi_core::seed::{Seed, SeedInfo};
use fpi_core::solver::Method;
use fpi_models::ModelFolder;
use fpi_models::device::{Backend, adapters, auto_backend};
use fpi_pipeline::image_io::{self, Rgb};
use fpi_pipeline::pipeline::read;
use fpi_pipeline::{InvertSettings, Pipeline};
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

use crate::args::{
    BenchArgs, Cli, Command, Common, DeviceChoice, GenerateArgs, InvertArgs, MethodChoice, ReconstructArgs,
};
use crate::files::{check_writable, read as read_file, write_atomic};
use crate::progress::Bars;

/// Runs a parsed command line; errors are one line for the user.
pub fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Invert(args) => invert(args),
        Command::Reconstruct(args) => reconstruct(args),
        Command::Generate(args) => generate(args),
        Command::Info => info(),
        Command::Bench(args) => bench(args),
    }
}

fn open_device(choice: DeviceChoice, quiet: bool) -> Result<Device, String> {
    let backend = match choice {
        DeviceChoice::Auto => auto_backend(),
        DeviceChoice::Wgpu => Backend::Wgpu,
        DeviceChoice::Ndarray => Backend::NdArray,
        DeviceChoice::Flex => Backend::Flex,
    };
    if !quiet {
        eprintln!("device: {backend}");
    }
    backend.device()
}

fn load(common: &Common) -> Result<Pipeline, String> {
    let folder = ModelFolder::open(&common.model).map_err(|e| e.to_string())?;
    let device = open_device(common.device, common.quiet)?;
    let started = Instant::now();
    let mut bars = Bars::new(common.quiet);
    let mut progress = |part: &str, done, total| bars.load(part, done, total);
    let pipeline = pollster::block_on(Pipeline::load(&folder, device, &mut progress)).map_err(|e| e.to_string())?;
    if !common.quiet {
        eprintln!("loaded {} in {:.1} s", common.model.display(), started.elapsed().as_secs_f64());
    }
    Ok(pipeline)
}

fn read_image(path: &Path, size: usize) -> Result<Rgb, String> {
    let image = image_io::decode(&read_file(path)?).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(image_io::square(image, size))
}

fn write_png(path: &Path, image: &Rgb) -> Result<(), String> {
    write_atomic(path, &image_io::encode_png(image))
}

fn write_latents(path: &Path, values: Vec<f32>, shape: [usize; 4], info: SeedInfo) -> Result<(), String> {
    let seed = Seed { latents: values, shape, info };
    write_atomic(path, &seed.to_bytes())
}

fn read_seed(path: &Path) -> Result<Seed, String> {
    Seed::from_bytes(&read_file(path)?).map_err(|e| format!("{}: {e}", path.display()))
}

fn invert(args: InvertArgs) -> Result<(), String> {
    check_writable(&args.output)?;
    for path in [&args.trace, &args.reconstruct].into_iter().flatten() {
        check_writable(path)?;
    }
    let method = match args.method {
        MethodChoice::Ddim => Method::Ddim,
        MethodChoice::Fpi => Method::FixedPoint { iterations: args.iterations, tolerance: args.tolerance },
    };
    if args.method == MethodChoice::Ddim && (args.iterations != 5 || args.tolerance.is_some()) {
        eprintln!("note: --method ddim makes one evaluation per step; --iterations and --tolerance are ignored");
    }
    let settings = InvertSettings {
        prompt: args.prompt.clone(),
        steps: args.steps,
        guidance: args.guidance,
        method,
        adjust: args.adjust,
    };
    settings.validate()?;
    let pipeline = load(&args.common)?;
    pipeline.check_size(args.size).map_err(|e| e.to_string())?;
    let image = read_image(&args.image, args.size)?;
    let dropped = pipeline.tokenizer.encode(&args.prompt).map_err(|e| e.to_string())?.dropped;
    if dropped > 0 {
        eprintln!("warning: the prompt is longer than CLIP's 77 tokens; its last {dropped} tokens are ignored");
    }

    let mut bars = Bars::new(args.common.quiet);
    let started = Instant::now();
    let z0 = pipeline.encode(&image);
    let inversion = pollster::block_on(pipeline.invert(z0.clone(), &settings, &mut |ph, p| bars.observe(ph, p)))
        .map_err(|e| e.to_string())?;
    let (seed, reports) = (inversion.seed.clone(), &inversion.reports);
    bars.finish();
    let diverged: Vec<usize> = reports.iter().filter(|r| r.diverged()).map(|r| r.timestep).collect();
    if !diverged.is_empty() {
        eprintln!(
            "note: the residual grew at {} step(s) (timesteps {diverged:?}); the best iterate was kept there",
            diverged.len()
        );
    }

    let shape: [usize; 4] = seed.dims();
    let values = pollster::block_on(read(seed)).map_err(|e| e.to_string())?;
    let info = settings.seed_info(args.size, &args.common.model.display().to_string());
    write_latents(&args.output, values, shape, info)?;
    let evaluations: usize = reports.iter().map(|r| r.iterations).sum();
    if !args.common.quiet {
        eprintln!(
            "wrote {} ({evaluations} evaluations of the implicit step, {:.1} s)",
            args.output.display(),
            started.elapsed().as_secs_f64()
        );
    }
    if let Some(trace) = &args.trace {
        let json = serde_json::to_vec_pretty(&reports).expect("plain data");
        write_atomic(trace, &json)?;
    }

    if let Some(out) = &args.reconstruct {
        let check =
            pollster::block_on(
                pipeline.check_reconstruction(&inversion, z0, &image, &settings, &mut |ph, p| bars.observe(ph, p)),
            )
            .map_err(|e| e.to_string())?;
        bars.finish();
        write_png(out, &check.image)?;
        println!(
            "PSNR {:.2} dB (VAE bound {:.2} dB), latent error {:.3e}: {}",
            check.psnr,
            check.vae_psnr,
            check.latent_error,
            out.display()
        );
    }
    Ok(())
}

fn reconstruct(args: ReconstructArgs) -> Result<(), String> {
    check_writable(&args.output)?;
    if let Some(path) = &args.latents_out {
        check_writable(path)?;
    }
    let seed = read_seed(&args.seed)?;
    let prompt = args.prompt.clone().unwrap_or_else(|| seed.info.prompt.clone());
    let guidance = args.guidance.unwrap_or(seed.info.guidance);
    let steps = args.steps.unwrap_or(seed.info.steps);
    let pipeline = load(&args.common)?;
    pipeline.check_latents(seed.shape).map_err(|e| format!("{}: {e}", args.seed.display()))?;
    let latents = pipeline.latents(seed.latents.clone(), seed.shape);
    sample_and_write(
        &pipeline,
        latents,
        &prompt,
        steps,
        guidance,
        args.common.quiet,
        &args.output,
        args.latents_out.as_deref(),
    )
}

fn sample_and_write(
    pipeline: &Pipeline,
    latents: Tensor<4>,
    prompt: &str,
    steps: usize,
    guidance: f64,
    quiet: bool,
    output: &Path,
    latents_out: Option<&Path>,
) -> Result<(), String> {
    let mut bars = Bars::new(quiet);
    let z0 = pollster::block_on(pipeline.sample(latents, prompt, steps, guidance, &mut |ph, p| bars.observe(ph, p)))
        .map_err(|e| e.to_string())?;
    bars.finish();
    if let Some(path) = latents_out {
        let shape = z0.dims();
        let values = pollster::block_on(read(z0.clone())).map_err(|e| e.to_string())?;
        let info = SeedInfo {
            prompt: prompt.into(),
            steps,
            guidance,
            fpi_version: env!("CARGO_PKG_VERSION").into(),
            ..SeedInfo::default()
        };
        write_latents(path, values, shape, info)?;
    }
    let image = pollster::block_on(pipeline.decode(z0)).map_err(|e| e.to_string())?;
    write_png(output, &image)?;
    if !quiet {
        eprintln!("wrote {}", output.display());
    }
    Ok(())
}

fn generate(args: GenerateArgs) -> Result<(), String> {
    check_writable(&args.output)?;
    if let Some(path) = &args.latents_out {
        check_writable(path)?;
    }
    let init = args.init_latents.as_deref().map(read_seed).transpose()?;
    let pipeline = load(&args.common)?;
    let latents = match init {
        Some(seed) => {
            pipeline.check_latents(seed.shape).map_err(|e| e.to_string())?;
            pipeline.latents(seed.latents, seed.shape)
        }
        None => {
            pipeline.check_size(args.size).map_err(|e| e.to_string())?;
            let side = args.size / pipeline.vae_factor;
            let channels = pipeline.unet.conv_in.weight.dims()[1];
            let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
            let values: Vec<f32> = (0..channels * side * side).map(|_| StandardNormal.sample(&mut rng)).collect();
            pipeline.latents(values, [1, channels, side, side])
        }
    };
    sample_and_write(
        &pipeline,
        latents,
        &args.prompt,
        args.steps,
        args.guidance,
        args.common.quiet,
        &args.output,
        args.latents_out.as_deref(),
    )
}

fn info() -> Result<(), String> {
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
    println!("auto picks: {}", auto_backend());
    Ok(())
}

/// Runs `f` once to warm up (kernel compilation, autotuning), then times one run, reading the result back.
fn time<const D: usize>(label: &str, mut f: impl FnMut() -> Tensor<D>) -> Result<f64, String> {
    pollster::block_on(read(f())).map_err(|e| e.to_string())?;
    let started = Instant::now();
    pollster::block_on(read(f())).map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    println!("{label:<28} {seconds:>9.3} s");
    Ok(seconds)
}

fn bench(args: BenchArgs) -> Result<(), String> {
    let pipeline = load(&args.common)?;
    pipeline.check_size(args.size).map_err(|e| e.to_string())?;
    let device = pipeline.device.clone();
    let side = args.size / pipeline.vae_factor;
    let channels = pipeline.unet.conv_in.weight.dims()[1];
    let latents =
        |b| Tensor::<4>::random([b, channels, side, side], burn::tensor::Distribution::Normal(0.0, 1.0), &device);
    let conditioning = pipeline.condition("a photograph").map_err(|e| e.to_string())?;
    let states = conditioning.states;
    let t = |b| Tensor::<1>::full([b], 501.0, &device);
    println!("size {0}×{0}, latents {side}×{side}", args.size);
    time("CLIP (2 prompts)", || pipeline.condition("a photograph").expect("tokenized before").states)?;
    time("UNet, batch 1", || pipeline.unet.forward(latents(1), t(1), &states.clone().narrow(0, 1, 1)))?;
    time("UNet, batch 2 (guidance)", || pipeline.unet.forward(latents(2), t(2), &states))?;
    let image =
        Tensor::<4>::random([1, 3, args.size, args.size], burn::tensor::Distribution::Uniform(-1.0, 1.0), &device);
    time("VAE encode", || pipeline.vae.encode(image.clone()).mean)?;
    time("VAE decode", || pipeline.vae.decode(latents(1)))?;
    let settings = InvertSettings {
        prompt: "a photograph".into(),
        steps: args.steps,
        guidance: 2.0,
        method: Method::FixedPoint { iterations: 5, tolerance: None },
        adjust: 2,
    };
    let mut bars = Bars::new(args.common.quiet);
    let started = Instant::now();
    let inversion = pollster::block_on(pipeline.invert(latents(1), &settings, &mut |ph, p| bars.observe(ph, p)))
        .map_err(|e| e.to_string())?;
    pollster::block_on(read(inversion.seed)).map_err(|e| e.to_string())?;
    bars.finish();
    println!(
        "{:<28} {:>9.3} s ({} steps, fpi K=5, guidance 2, adjust 2)",
        "full inversion",
        started.elapsed().as_secs_f64(),
        args.steps
    );
    if let Some(usage) = device.memory_pool_usage() {
        println!(
            "device memory in use {:.0} MiB (reserved {:.0} MiB)",
            usage.bytes_in_use as f64 / 1048576.0,
            usage.bytes_reserved as f64 / 1048576.0
        );
    }
    if let Some(report) = device.memory_pool_report() {
        let largest = report.iter().map(|p| p.largest_alloc).max().unwrap_or(0);
        println!("largest device allocation {:.1} MiB", largest as f64 / 1048576.0);
    }
    Ok(())
}
