//! The command line: subcommands and their options.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Fixed-point inversion for Stable Diffusion 1.5: find the noise seed from which DDIM sampling regenerates a
/// photo, more exactly than DDIM inversion, on any GPU (wgpu) or the CPU.
#[derive(Parser, Debug)]
#[command(name = "fpi", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Invert an image into a seed file (and optionally reconstruct it).
    Invert(InvertArgs),
    /// Regenerate an image from a seed file by DDIM sampling.
    Reconstruct(ReconstructArgs),
    /// Generate an image from random or given initial latents.
    Generate(GenerateArgs),
    /// List the devices found and their adapter limits.
    Info,
    /// Time the model's parts and one full inversion.
    Bench(BenchArgs),
}

/// Where to run.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceChoice {
    /// wgpu on a hardware GPU if there is one, else flex.
    Auto,
    /// wgpu: Vulkan, Metal or DX12 (a software adapter where no GPU exists).
    Wgpu,
    /// burn's portable CPU backend (slow; the test backend).
    Ndarray,
    /// burn's fast CPU backend.
    Flex,
}

/// Options every model-running command takes.
#[derive(Args, Debug)]
pub struct Common {
    /// A diffusers Stable Diffusion 1.x folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/).
    #[arg(long)]
    pub model: PathBuf,
    /// Where to run.
    #[arg(long, value_enum, default_value_t = DeviceChoice::Auto)]
    pub device: DeviceChoice,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// The inversion solver.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodChoice {
    /// DDIM inversion: ε taken at the previous latent (one evaluation per step).
    Ddim,
    /// Fixed-point inversion: iterate the implicit step --iterations times.
    Fpi,
}

#[derive(Args, Debug)]
pub struct InvertArgs {
    #[command(flatten)]
    pub common: Common,
    /// The photo: PNG, JPEG or WebP (centre-cropped to a square and resized to --size).
    #[arg(long)]
    pub image: PathBuf,
    /// The prompt that describes the photo.
    #[arg(long)]
    pub prompt: String,
    /// DDIM steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// The solver of each inversion step.
    #[arg(long, value_enum, default_value_t = MethodChoice::Fpi)]
    pub method: MethodChoice,
    /// Evaluations of the implicit step per timestep (fpi; 1 is DDIM inversion).
    #[arg(long, default_value_t = 5)]
    pub iterations: usize,
    /// End a step early once ‖f(z) − z‖/‖z‖ falls below this (fpi).
    #[arg(long)]
    pub tolerance: Option<f64>,
    /// Classifier-free guidance scale (the paper inverts real images at 2; use the same to reconstruct).
    #[arg(long, default_value_t = 2.0)]
    pub guidance: f64,
    /// Steps of the prompt-aware adjustment before inverting (0 disables).
    #[arg(long, default_value_t = 2)]
    pub adjust: usize,
    /// Image side in pixels: a multiple of 8 × the VAE's downsampling factor (64 for SD1.5).
    #[arg(long, default_value_t = 512)]
    pub size: usize,
    /// The seed file to write (safetensors).
    #[arg(long)]
    pub output: PathBuf,
    /// Write each step's timestep, iterations and residuals as JSON.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Also sample the seed back and write the image (PNG), reporting PSNR against the input.
    #[arg(long)]
    pub reconstruct: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ReconstructArgs {
    #[command(flatten)]
    pub common: Common,
    /// A seed file written by `fpi invert`.
    #[arg(long)]
    pub seed: PathBuf,
    /// The prompt (default: the seed's).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Guidance scale (default: the seed's).
    #[arg(long)]
    pub guidance: Option<f64>,
    /// DDIM steps (default: the seed's).
    #[arg(long)]
    pub steps: Option<usize>,
    /// The image to write (PNG).
    #[arg(long)]
    pub output: PathBuf,
    /// Also write the final latents (before VAE decoding) as safetensors `latents`.
    #[arg(long)]
    pub latents_out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub common: Common,
    /// The prompt.
    #[arg(long)]
    pub prompt: String,
    /// Initial latents: a safetensors file with `latents` [1, 4, h, w] (e.g. a seed file).
    #[arg(long)]
    pub init_latents: Option<PathBuf>,
    /// Random initial latents from this seed (standard normal, generated on the host).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Image side in pixels for random latents (initial latents fix their own size).
    #[arg(long, default_value_t = 512, conflicts_with = "init_latents")]
    pub size: usize,
    /// DDIM steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale (≥ 1).
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    /// The image to write (PNG).
    #[arg(long)]
    pub output: PathBuf,
    /// Also write the final latents (before VAE decoding) as safetensors `latents`.
    #[arg(long)]
    pub latents_out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    #[command(flatten)]
    pub common: Common,
    /// Image side in pixels.
    #[arg(long, default_value_t = 512)]
    pub size: usize,
    /// DDIM steps of the timed inversion.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
}
