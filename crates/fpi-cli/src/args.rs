//! The command line: subcommands and their options.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use fpi_core::seed_space::{CentroidMethod, PathMethod};
use fpi_core::settings::{InvertSettings, Method, SettingsError};
use fpi_models::device::Backend;
use fpi_models::precision::Precision;
use fpi_pipeline::edit::{EditMode, EditSettings};

/// Fixed-point inversion for Stable Diffusion 1.5: find the noise seed from which DDIM sampling regenerates a
/// photo, more exactly than DDIM inversion, on any GPU (wgpu) or the CPU.
#[derive(Parser, Debug)]
#[command(name = "fpi", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Invert an image into a seed file (and optionally reconstruct it).
    Invert(InvertArgs),
    /// Regenerate an image from a seed file by DDIM sampling.
    Reconstruct(ReconstructArgs),
    /// Edit a seed (or a photo, inverted first) with Prompt-to-Prompt: change the prompt, keep the rest.
    Edit(EditArgs),
    /// Generate an image from random or given initial latents.
    Generate(GenerateArgs),
    /// Frames between two seeds: their seeds, their images and a strip of them all.
    Interpolate(InterpolateArgs),
    /// The centre of several seeds (e.g. inverted photos of one concept), as a seed and optionally its image.
    Centroid(CentroidArgs),
    /// List the devices found and their adapter limits.
    Info,
    /// Time the model's parts and one full inversion.
    Bench(BenchArgs),
}

/// Options every model-running command takes: the model, and where and how to run.
#[derive(Args, Debug)]
pub struct Common {
    #[command(flatten)]
    pub choice: ModelChoice,
    #[command(flatten)]
    pub run: RunOptions,
}

/// Which model to run.
#[derive(Args, Debug)]
pub struct ModelChoice {
    /// The Stable Diffusion 1.x model: a diffusers folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/),
    /// one .safetensors checkpoint (original LDM keys, f32/f16/bf16), or a hub id ORG/NAME[@REVISION] such as
    /// stable-diffusion-v1-5/stable-diffusion-v1-5, read from the Hugging Face cache ($HF_HUB_CACHE, $HF_HOME/hub or
    /// ~/.cache/huggingface/hub) and downloaded into it when missing (fp16 files; not with HF_HUB_OFFLINE=1).
    #[arg(long, value_name = "FOLDER|FILE|ORG/NAME")]
    pub model: String,
    /// Another VAE instead of the model's: a VAE folder (config.json and weights), a model folder, a .safetensors
    /// checkpoint (e.g. vae-ft-mse-840000-ema-pruned.safetensors), or a hub id (e.g. stabilityai/sd-vae-ft-mse).
    #[arg(long, value_name = "FOLDER|FILE|ORG/NAME")]
    pub vae: Option<String>,
    /// For a checkpoint file: a diffusers folder whose configs, tokenizer and scheduler it uses (as diffusers'
    /// from_single_file(config=…)). Without it a checkpoint is read as SD1.x, whose configuration fpi has built in.
    #[arg(long, value_name = "FOLDER")]
    pub config: Option<PathBuf>,
}

/// Where and how to run.
#[derive(Args, Debug)]
pub struct RunOptions {
    /// Where to run.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    pub device: Backend,
    /// The networks' float type: auto is f16 on a wgpu adapter with shader-f16 (half the memory), else f32; f16
    /// needs such an adapter. Norms and softmax run in f32 either way, and the inversion itself (latents, residuals)
    /// stays f32.
    #[arg(long, value_enum, default_value_t = Precision::Auto)]
    pub precision: Precision,
    /// No progress bars.
    #[arg(long)]
    pub quiet: bool,
}

/// `fpi invert`'s options.
#[derive(Args, Debug)]
pub struct InvertArgs {
    #[command(flatten)]
    pub common: Common,
    /// The photo: PNG, JPEG or WebP (centre-cropped to a square and resized to --size). Repeat it, or name a
    /// folder (its .png, .jpg, .jpeg and .webp files, by name), to invert several into --output-dir.
    #[arg(long, required = true, value_name = "FILE|FOLDER")]
    pub image: Vec<PathBuf>,
    /// The prompt that describes the photo (with several: every one). Without it, each image's prompt is its line
    /// in prompts.jsonl ({"file": "cat.jpg", "prompt": "a cat"}) or captions.txt (cat.jpg: a cat) beside it.
    #[arg(long)]
    pub prompt: Option<String>,
    /// DDIM steps.
    #[arg(long, default_value_t = InvertSettings::default().steps)]
    pub steps: usize,
    /// Classifier-free guidance scale (the paper inverts real images at 2; use the same to reconstruct).
    #[arg(long, default_value_t = InvertSettings::default().guidance, allow_negative_numbers = true)]
    pub guidance: f64,
    #[command(flatten)]
    pub solver: SolverOptions,
    /// The seed file to write (safetensors), for one image.
    #[arg(long, value_name = "SEED")]
    pub output: Option<PathBuf>,
    /// The folder (made if missing) for each image's seed NAME.safetensors, its reconstruction NAME.png and
    /// summary.json; images whose seed is there with the same settings are skipped.
    #[arg(long, value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
    /// Write each step's timestep, residuals and kept iterate as JSON (one image).
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// Also sample the seed back and write the image (PNG), reporting PSNR against the input (one image).
    #[arg(long)]
    pub reconstruct: Option<PathBuf>,
}

/// How an image is inverted, besides its prompt, steps and guidance.
#[derive(Args, Debug)]
pub struct SolverOptions {
    /// The solver of each inversion step: fpi (fixed-point iterations) or ddim (DDIM inversion, ε taken at the
    /// previous latent, one evaluation per step).
    #[arg(long, value_parser = Method::NAMES, default_value = InvertSettings::default().method.name())]
    pub method: String,
    /// Evaluations of the implicit step per timestep (fpi; 1 is DDIM inversion) [default: 5].
    #[arg(long)]
    pub iterations: Option<usize>,
    /// End a step early once ‖f(z) − z‖/‖z‖ falls below this (fpi).
    #[arg(long, allow_negative_numbers = true)]
    pub tolerance: Option<f64>,
    /// Steps of the prompt-aware adjustment before inverting (0 disables).
    #[arg(long, default_value_t = InvertSettings::default().adjust)]
    pub adjust: usize,
    /// Image side in pixels: a multiple of the model's size step (64 for SD1.5).
    #[arg(long, default_value_t = InvertSettings::default().size)]
    pub size: usize,
}

impl SolverOptions {
    /// The inversion settings of these options with `prompt`, `steps` and `guidance`, checked where the model does
    /// not matter.
    pub fn settings(&self, prompt: &str, steps: usize, guidance: f64) -> Result<InvertSettings, SettingsError> {
        let iterations = self.iterations.unwrap_or(InvertSettings::default().method.iterations());
        let settings = InvertSettings {
            prompt: prompt.to_owned(),
            size: self.size,
            steps,
            guidance,
            method: Method::from_name(&self.method, iterations, self.tolerance)?,
            adjust: self.adjust,
        };
        settings.validate()?;
        Ok(settings)
    }
}

impl InvertArgs {
    /// The inversion settings these options ask for with `prompt`, checked where the model does not matter.
    pub fn settings(&self, prompt: &str) -> Result<InvertSettings, SettingsError> {
        self.solver.settings(prompt, self.steps, self.guidance)
    }
}

/// `fpi edit`'s options.
#[derive(Args, Debug)]
pub struct EditArgs {
    #[command(flatten)]
    pub common: Common,
    /// The seed to edit: a seed file written by `fpi invert`.
    #[arg(long, required_unless_present = "image", conflicts_with = "image")]
    pub seed: Option<PathBuf>,
    /// Or a photo to invert first (with --source-prompt and the inversion options --method, --iterations,
    /// --tolerance, --adjust, --size).
    #[arg(long)]
    pub image: Option<PathBuf>,
    /// Also write the seed inverted from --image.
    #[arg(long, requires = "image")]
    pub seed_out: Option<PathBuf>,
    /// The target prompt: the source prompt with words swapped, added or removed.
    #[arg(long)]
    pub prompt: String,
    /// The prompt the seed was inverted with (default: the seed's; needed with --image).
    #[arg(long, required_unless_present = "seed")]
    pub source_prompt: Option<String>,
    /// replace (words swapped one for one) or refine (words added or removed) [default: replace when every word
    /// has as many tokens in both prompts, else refine].
    #[arg(long, value_parser = parse_mode)]
    pub mode: Option<EditMode>,
    /// The fraction of steps, from the first, in which the target's cross-attention is edited (replaced, refined,
    /// reweighted).
    #[arg(long, default_value_t = EditSettings::default().cross_steps)]
    pub cross_steps: f64,
    /// Another fraction for a target word's cross-attention: WORD=FRACTION (e.g. guitar=0.3), repeatable.
    #[arg(long, num_args = 1.., value_parser = parse_word_number)]
    pub word_steps: Vec<(String, f64)>,
    /// The fraction of steps, from the first, in which self-attention (maps of ≤ 16×16 queries) is the source's.
    #[arg(long, default_value_t = EditSettings::default().self_steps)]
    pub self_steps: f64,
    /// Local blend: change only where these words (of either prompt) attend; elsewhere keep the source.
    #[arg(long, num_args = 1..)]
    pub blend: Vec<String>,
    /// The local blend's threshold on the words' normalised attention.
    #[arg(long, default_value_t = EditSettings::default().blend_threshold)]
    pub blend_threshold: f64,
    /// The fraction of steps after which the local blend applies.
    #[arg(long, default_value_t = EditSettings::default().blend_start)]
    pub blend_start: f64,
    /// Scale a target word's cross-attention: WORD=FACTOR (e.g. red=2), repeatable.
    #[arg(long, num_args = 1.., value_parser = parse_word_number)]
    pub reweight: Vec<(String, f64)>,
    /// DDIM steps (default: the seed's; with --image 50).
    #[arg(long)]
    pub steps: Option<usize>,
    /// Guidance scale (default: the seed's; with --image 2).
    #[arg(long, allow_negative_numbers = true)]
    pub guidance: Option<f64>,
    #[command(flatten)]
    pub solver: SolverOptions,
    /// The edited image to write (PNG).
    #[arg(long)]
    pub output: PathBuf,
    /// Also write the source branch, the seed's reconstruction (PNG).
    #[arg(long)]
    pub source_output: Option<PathBuf>,
}

/// `replace` or `refine`.
fn parse_mode(text: &str) -> Result<EditMode, String> {
    serde_json::from_value(serde_json::Value::from(text)).map_err(|_| format!("{text:?} is not replace or refine"))
}

/// `WORD=NUMBER`.
fn parse_word_number(text: &str) -> Result<(String, f64), String> {
    let (word, number) = text.split_once('=').ok_or_else(|| format!("{text:?} is not WORD=NUMBER"))?;
    let number: f64 = number.parse().map_err(|_| format!("{number:?} in {text:?} is not a number"))?;
    Ok((word.to_owned(), number))
}

/// The files that sampling writes.
#[derive(Args, Debug)]
pub struct SampleOutputs {
    /// The image to write (PNG).
    #[arg(long)]
    pub output: PathBuf,
    /// Also write the final latents (before VAE decoding) as safetensors `latents`.
    #[arg(long)]
    pub latents_out: Option<PathBuf>,
}

impl SampleOutputs {
    /// The files to be written.
    pub fn paths(&self) -> impl Iterator<Item = &std::path::Path> {
        std::iter::once(self.output.as_path()).chain(self.latents_out.as_deref())
    }
}

/// `fpi reconstruct`'s options.
#[derive(Args, Debug)]
pub struct ReconstructArgs {
    #[command(flatten)]
    pub common: Common,
    /// A seed file written by `fpi invert` (or any safetensors file with `latents` [1, 4, h, w]).
    #[arg(long)]
    pub seed: PathBuf,
    #[command(flatten)]
    pub sampling: SamplingOptions,
    #[command(flatten)]
    pub outputs: SampleOutputs,
}

/// How to sample a seed; each defaults to what the seed records (a file without fpi's metadata: no prompt, 50
/// steps, guidance 1).
#[derive(Args, Debug)]
pub struct SamplingOptions {
    /// The prompt (default: the seed's).
    #[arg(long)]
    pub prompt: Option<String>,
    /// Guidance scale (default: the seed's).
    #[arg(long, allow_negative_numbers = true)]
    pub guidance: Option<f64>,
    /// DDIM steps (default: the seed's).
    #[arg(long)]
    pub steps: Option<usize>,
}

/// `fpi interpolate`'s options.
#[derive(Args, Debug)]
pub struct InterpolateArgs {
    #[command(flatten)]
    pub common: Common,
    /// The first seed (frame 0): a seed file.
    #[arg(long)]
    pub from: PathBuf,
    /// The last seed.
    #[arg(long)]
    pub to: PathBuf,
    /// Frames, both seeds included (at least 2).
    #[arg(long, default_value_t = 9)]
    pub points: usize,
    /// nao (a path kept where Gaussian seeds are likely, NAO), slerp or lerp (a straight line: its middle frames
    /// leave the seeds' shell and come out flat).
    #[arg(long, default_value = "nao", value_parser = parse_path_method)]
    pub method: PathMethod,
    /// Sample every frame with these (default: the first seed's; a warning when the second seed's prompt differs).
    #[command(flatten)]
    pub sampling: SamplingOptions,
    /// The folder to write the frames' seeds (000.safetensors, …), images (000.png, …) and strip.png (every frame
    /// side by side) into; made if missing.
    #[arg(long)]
    pub output_dir: PathBuf,
}

/// `fpi centroid`'s options.
#[derive(Args, Debug)]
pub struct CentroidArgs {
    #[command(flatten)]
    pub common: Common,
    /// The seed files (at least 2), all of one size.
    #[arg(required = true)]
    pub seeds: Vec<PathBuf>,
    /// nao (NAO's optimised centroid, on the seeds' shell), mean (Σxᵢ/√K) or shell (the mean scaled to √(d−1)).
    #[arg(long, default_value = "nao", value_parser = parse_centroid_method)]
    pub method: CentroidMethod,
    /// Sample the centroid with these (default: the first seed's).
    #[command(flatten)]
    pub sampling: SamplingOptions,
    /// The centroid's seed file to write.
    #[arg(long)]
    pub output: PathBuf,
    /// Also sample it into this image (PNG).
    #[arg(long)]
    pub image: Option<PathBuf>,
}

fn parse_path_method(name: &str) -> Result<PathMethod, String> {
    name.parse()
}

fn parse_centroid_method(name: &str) -> Result<CentroidMethod, String> {
    name.parse()
}

/// `fpi generate`'s options.
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
    /// Random initial latents from this random-number seed (standard normal, generated on the host).
    #[arg(long, default_value_t = 0, conflicts_with = "init_latents")]
    pub random_seed: u64,
    /// Image side in pixels for random latents (initial latents fix their own size).
    #[arg(long, default_value_t = 512, conflicts_with = "init_latents")]
    pub size: usize,
    /// DDIM steps.
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Classifier-free guidance scale (≥ 1).
    #[arg(long, default_value_t = 7.5)]
    pub guidance: f64,
    #[command(flatten)]
    pub outputs: SampleOutputs,
}

/// The parts `fpi bench` can time, by their names in its JSON: the networks (all by default), then one operation as
/// fpi computes it (its own kernel where it has one) and as burn's modules do (only when named).
pub const BENCH_PARTS: [&str; 8] =
    ["clip", "unet_batch1", "unet_batch2", "vae_encode", "vae_decode", "edit_step", "group_norm", "group_norm_burn"];

/// `fpi bench`'s options.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// The model to time (or --random).
    #[command(flatten)]
    pub choice: Option<ModelChoice>,
    /// Time SD1.x's configuration (built into fpi) with random weights instead of a model: no files needed.
    #[arg(long, conflicts_with = "model", required_unless_present = "model")]
    pub random: bool,
    #[command(flatten)]
    pub run: RunOptions,
    /// Image side in pixels.
    #[arg(long, default_value_t = 512)]
    pub size: usize,
    /// DDIM steps of the timed inversion (any number: the adjustment shrinks to fit).
    #[arg(long, default_value_t = 50)]
    pub steps: usize,
    /// Skip the full inversion (minutes to hours on a CPU at 512²).
    #[arg(long)]
    pub no_inversion: bool,
    /// Time only these parts (comma-separated; the networks' parts by default), e.g. the UNet with guidance and the
    /// VAE decoder (with --no-inversion) to measure the device memory an inversion needs without waiting for the
    /// rest. group_norm and group_norm_burn (only when named) time one operation by fpi's kernels and by burn's.
    #[arg(long, value_delimiter = ',', value_parser = BENCH_PARTS)]
    pub parts: Vec<String>,
    /// Also profile one guided UNet step (batch 2) by operation: each convolution, linear layer, attention, norm
    /// and GEGLU gate runs in a profiling window of its own (the device's timestamps where the adapter has them),
    /// summed by kind, against the whole step in one window.
    #[arg(long)]
    pub by_op: bool,
    /// Print the results as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
}
