//! `fpi invert` on several images (`--image` repeated, or a folder) into `--output-dir`: the model loads once, each
//! image's seed is written as soon as it is inverted, a rerun skips the seeds already there with the same settings,
//! and a table and `summary.json` end the run. Also what the one-image form shares with it: where prompts come from
//! and the steps of one image's inversion.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use fpi_core::seed::Seed;
use fpi_core::settings::{InvertSettings, Method};
use fpi_pipeline::image_io::RgbImage;
use fpi_pipeline::{InvertedImage, Pipeline, Reconstruction};
use serde_json::{Value, json};

use crate::args::{InvertArgs, SampleOutputs};
use crate::commands::{load_chosen, read_image, read_seed, sample_and_write, write_png};
use crate::failure::{AtPath, Failure, at};
use crate::files::{check_writable, folder, read_file, write_atomic};
use crate::model::choose;
use crate::progress::Bars;

/// The files a folder given as `--image` contributes: these extensions, in any case.
const EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];
/// The prompts file beside the images: JSON lines `{"file": "cat.jpg", "prompt": "a cat"}`.
const PROMPTS_JSONL: &str = "prompts.jsonl";
/// Or: lines `cat.jpg: a cat`.
const CAPTIONS_TXT: &str = "captions.txt";
/// The run's summary in the output folder.
const SUMMARY: &str = "summary.json";

/// One image's inversion, as the one-image form and the batch both run it.
pub struct Inverter<'a> {
    /// The loaded model.
    pub pipeline: &'a Pipeline,
    /// Its name for seed files.
    pub model: &'a str,
    /// No progress bars and no "wrote" lines.
    pub quiet: bool,
}

impl Inverter<'_> {
    /// Inverts `image` with `settings` and writes the seed to `path` at once; warnings and notes begin with `who`
    /// (`"cat.jpg: "` in a batch, empty for one image).
    pub fn invert(
        &self,
        image: &RgbImage,
        settings: &InvertSettings,
        path: &Path,
        who: &str,
    ) -> Result<InvertedImage, Failure> {
        let dropped = self.pipeline.dropped_tokens(&settings.prompt)?;
        if dropped > 0 {
            eprintln!(
                "warning: {who}the prompt is longer than CLIP's 77 tokens; its last {dropped} tokens are ignored"
            );
        }
        let mut bars = Bars::new(self.quiet);
        let started = Instant::now();
        let inverted = pollster::block_on(
            self.pipeline.invert_image(image, settings, self.model, &mut |ph, p| bars.observe(ph, p)),
        )?;
        bars.finish();
        let reports = inverted.reports();
        let diverged: Vec<usize> = reports.iter().filter(|r| r.diverged()).map(|r| r.timestep).collect();
        if !diverged.is_empty() {
            eprintln!(
                "note: {who}the residual grew at {} step(s) (timesteps {diverged:?}); the best iterate was kept there",
                diverged.len()
            );
        }
        write_atomic(path, &inverted.seed.to_bytes())?;
        if !self.quiet {
            let evaluations: usize = reports.iter().map(|r| r.iterations()).sum();
            eprintln!(
                "wrote {} ({evaluations} evaluations of the implicit step, {:.1} s)",
                path.display(),
                started.elapsed().as_secs_f64()
            );
        }
        Ok(inverted)
    }

    /// Samples the seed back, writes that image to `path` (PNG) and prints its PSNR and latent error.
    pub fn check(&self, inverted: &InvertedImage, path: &Path) -> Result<Reconstruction, Failure> {
        let mut bars = Bars::new(self.quiet);
        let check = pollster::block_on(self.pipeline.check_reconstruction(inverted, &mut |ph, p| bars.observe(ph, p)))?;
        bars.finish();
        write_png(path, &check.image)?;
        println!(
            "PSNR {:.2} dB (VAE bound {:.2} dB), latent error {:.3e}: {}",
            check.psnr,
            check.vae_psnr,
            check.latent_error,
            path.display()
        );
        Ok(check)
    }
}

/// The inversion settings `args` ask for with `prompt`, checked where the model does not matter (with a note when
/// `--method ddim` makes `--iterations` or `--tolerance` moot).
pub fn settings(args: &InvertArgs, prompt: &str) -> Result<InvertSettings, Failure> {
    let settings = args.settings(prompt)?;
    if matches!(settings.method, Method::Ddim) && (args.solver.iterations.is_some() || args.solver.tolerance.is_some())
    {
        eprintln!("note: --method ddim makes one evaluation per step; --iterations and --tolerance are ignored");
    }
    Ok(settings)
}

/// Each image's prompt: `given` (`--prompt`) for all, else the image's line in the prompts file of its folder.
pub fn prompts(images: &[PathBuf], given: Option<&str>) -> Result<Vec<String>, Failure> {
    let mut folders: Vec<&Path> = images.iter().map(|image| folder(image)).collect();
    folders.sort();
    folders.dedup();
    if let Some(prompt) = given {
        for file in folders.into_iter().flat_map(prompts_files) {
            eprintln!("note: --prompt is used; {} is not read", file.display());
        }
        return Ok(vec![prompt.to_owned(); images.len()]);
    }
    let tables: HashMap<&Path, _> =
        folders.into_iter().map(|dir| Ok((dir, read_prompts(dir)?))).collect::<Result<_, Failure>>()?;
    let table = |image: &Path| &tables[folder(image)];
    let found = |image: &Path| table(image).as_ref().and_then(|file| file.prompts.get(&file_name(image)));
    let missing: Vec<&PathBuf> = images.iter().filter(|image| found(image).is_none()).collect();
    if let Some(first) = missing.first() {
        let source = match table(first) {
            Some(file) => format!("it has no line in {}", file.path.display()),
            None => format!("there is no {PROMPTS_JSONL} or {CAPTIONS_TXT} beside it"),
        };
        let more = match missing.len() {
            1 => String::new(),
            n => format!(" ({} more images lack one)", n - 1),
        };
        return Err(at(
            first,
            format_args!("no prompt: give --prompt, or list the image in a prompts file ({source}){more}"),
        ));
    }
    Ok(images.iter().filter_map(|image| found(image).cloned()).collect())
}

/// The prompts files in `dir`.
fn prompts_files(dir: &Path) -> Vec<PathBuf> {
    [PROMPTS_JSONL, CAPTIONS_TXT].map(|name| dir.join(name)).into_iter().filter(|p| p.is_file()).collect()
}

/// A prompts file and its prompts by image file name.
struct PromptsFile {
    path: PathBuf,
    prompts: HashMap<String, String>,
}

/// The prompts file in `dir`, read, if there is one.
fn read_prompts(dir: &Path) -> Result<Option<PromptsFile>, Failure> {
    let path = match &prompts_files(dir)[..] {
        [] => return Ok(None),
        [path] => path.clone(),
        _ => return Err(at(dir, format_args!("has both {PROMPTS_JSONL} and {CAPTIONS_TXT}; keep one"))),
    };
    let bytes = read_file(&path)?;
    let text = std::str::from_utf8(&bytes).map_err(|e| at(&path, format_args!("not UTF-8 text: {e}")))?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let parse = if path.ends_with(PROMPTS_JSONL) { json_line } else { caption_line };
    let mut prompts = HashMap::new();
    for (i, line) in text.lines().enumerate().filter(|(_, line)| !line.trim().is_empty()) {
        let (file, prompt) = parse(line).map_err(|why| at(&path, format_args!("line {}: {why}", i + 1)))?;
        if prompts.contains_key(&file) {
            return Err(at(&path, format_args!("line {}: {file} is listed again", i + 1)));
        }
        prompts.insert(file, prompt);
    }
    Ok(Some(PromptsFile { path, prompts }))
}

/// A line of `prompts.jsonl`: `{"file": "cat.jpg", "prompt": "a cat"}`.
fn json_line(line: &str) -> Result<(String, String), String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let text = |key| value.get(key).and_then(Value::as_str).map(str::to_owned);
    text("file").zip(text("prompt")).ok_or_else(|| r#"expected {"file": "NAME", "prompt": "TEXT"}"#.to_owned())
}

/// A line of `captions.txt`: `cat.jpg: a cat`.
fn caption_line(line: &str) -> Result<(String, String), String> {
    let (file, prompt) = line.split_once(':').ok_or("expected NAME: PROMPT")?;
    Ok((file.trim().to_owned(), prompt.trim().to_owned()))
}

/// A path's file name, as prompts files and the summary name images.
fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// Whether `args` ask for the batch form: several images, a folder, or `--output-dir`.
pub fn wanted(args: &InvertArgs) -> bool {
    args.output_dir.is_some() || args.image.len() > 1 || args.image.iter().any(|p| p.is_dir())
}

/// The output folder, refusing the one-image options.
fn output_dir(args: &InvertArgs) -> Result<&Path, Failure> {
    let refused = [
        (
            args.output.is_some(),
            "--output is one image's seed; for several images or a folder give --output-dir DIR alone",
        ),
        (
            args.reconstruct.is_some(),
            "--reconstruct is for one image; --output-dir gets each reconstruction as NAME.png",
        ),
        (args.trace.is_some(), "--trace is for one image (with --output); --output-dir gets no traces"),
    ];
    if let Some((_, message)) = refused.iter().find(|(given, _)| *given) {
        return Err(Failure::from(message.to_string()));
    }
    let needed = "several images, or a folder, need --output-dir DIR (for their seeds and reconstructions)";
    args.output_dir.as_deref().ok_or_else(|| Failure::from(needed.to_owned()))
}

/// The images `paths` name: files as given, folders as their image files (hidden ones aside) sorted by name.
fn list_images(paths: &[PathBuf]) -> Result<Vec<PathBuf>, Failure> {
    let mut images = Vec::new();
    for path in paths {
        if !path.is_dir() {
            std::fs::metadata(path).map_err(|e| at(path, e))?;
            images.push(path.clone());
            continue;
        }
        let mut found = Vec::new();
        for entry in std::fs::read_dir(path).map_err(|e| at(path, e))? {
            let file = entry.map_err(|e| at(path, e))?.path();
            if is_image_name(&file) && file.is_file() {
                found.push(file);
            }
        }
        if found.is_empty() {
            return Err(at(path, "no images in this folder (.png, .jpg, .jpeg or .webp files)"));
        }
        found.sort();
        images.extend(found);
    }
    Ok(images)
}

/// An image file's name: not hidden, and one of [`EXTENSIONS`].
fn is_image_name(path: &Path) -> bool {
    let hidden = file_name(path).starts_with('.');
    let extension = path.extension().map(|e| e.to_string_lossy().to_ascii_lowercase());
    !hidden && extension.is_some_and(|e| EXTENSIONS.contains(&e.as_str()))
}

/// Each image's name in `dir` (its file stem): one image per name, and none of them from `dir` itself.
fn stems(images: &[PathBuf], dir: &Path) -> Result<Vec<String>, Failure> {
    let real_dir = dir.canonicalize().ok();
    let mut seen: HashMap<String, &Path> = HashMap::new();
    let mut stems = Vec::new();
    for image in images {
        let real = image.canonicalize().map_err(|e| at(image, e))?;
        if real_dir.as_deref().is_some_and(|d| real.parent() == Some(d)) {
            return Err(at(dir, "--output-dir holds the images themselves; choose another folder"));
        }
        let stem = image.file_stem().ok_or_else(|| at(image, "not a file"))?.to_string_lossy().into_owned();
        if let Some(other) = seen.insert(stem.clone(), image) {
            return Err(Failure::from(format!(
                "{} and {} would both be {stem}.safetensors in {}; rename one",
                other.display(),
                image.display(),
                dir.display()
            )));
        }
        stems.push(stem);
    }
    Ok(stems)
}

/// What a run does with one image.
enum Todo {
    /// Invert it.
    Invert,
    /// Nothing: its seed is there with the same settings, and its reconstruction too.
    Skip,
    /// Sample its seed (there with the same settings) into the missing reconstruction.
    Resample(Box<Seed>),
}

/// Where an image stands, in the summary.
#[derive(Clone, Copy)]
enum Status {
    /// Still to do (an interrupted run's summary).
    Pending,
    /// Inverted in this run.
    Done,
    /// Inverted by an earlier run.
    Skipped,
    /// Could not be read.
    Failed,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Done => "done",
            Status::Skipped => "skipped",
            Status::Failed => "failed",
        }
    }
}

/// How an image's seed regenerates it, and the time it took.
#[derive(Default)]
struct Numbers {
    psnr: Option<f64>,
    vae_psnr: Option<f64>,
    latent_error: Option<f64>,
    seconds: Option<f64>,
}

impl Numbers {
    /// The numbers of an earlier summary's row for this image, if it had the same prompt.
    fn earlier(row: Option<&Value>, prompt: &str) -> Self {
        let Some(row) = row.filter(|row| row["prompt"] == prompt) else {
            return Self::default();
        };
        let number = |key: &str| row[key].as_f64();
        Self {
            psnr: number("psnr_db"),
            vae_psnr: number("vae_psnr_db"),
            latent_error: number("latent_error"),
            seconds: number("seconds"),
        }
    }
}

/// One image of the run: where it comes from and goes, and where it stands.
struct Job {
    image: PathBuf,
    /// Its file name.
    name: String,
    settings: InvertSettings,
    seed: PathBuf,
    png: PathBuf,
    todo: Todo,
    status: Status,
    numbers: Numbers,
    /// Why it failed.
    error: Option<String>,
}

impl Job {
    /// The job for `image` named `stem` in `dir`: skipped when its seed is there with `settings` and `model`.
    fn plan(
        image: &Path,
        stem: &str,
        settings: InvertSettings,
        dir: &Path,
        model: &str,
        earlier: &HashMap<String, Value>,
    ) -> Self {
        let (seed, png) = (dir.join(format!("{stem}.safetensors")), dir.join(format!("{stem}.png")));
        let name = file_name(image);
        let existing = seed.is_file().then(|| read_seed(&seed).ok());
        let same = |seed: &Seed| {
            seed.info
                .as_ref()
                .is_some_and(|info| info.settings == settings && info.model == model && info.derivation.is_none())
        };
        let todo = match existing {
            Some(Some(found)) if same(&found) => match png.is_file() {
                true => Todo::Skip,
                false => Todo::Resample(Box::new(found)),
            },
            Some(_) => {
                eprintln!(
                    "note: {} is not a seed of these settings and model; {name} is inverted again",
                    seed.display()
                );
                Todo::Invert
            }
            None => Todo::Invert,
        };
        let (status, numbers) = match todo {
            Todo::Invert => (Status::Pending, Numbers::default()),
            Todo::Skip | Todo::Resample(_) => (Status::Skipped, Numbers::earlier(earlier.get(&name), &settings.prompt)),
        };
        Self { image: image.to_owned(), name, settings, seed, png, todo, status, numbers, error: None }
    }

    /// Its row of `summary.json`.
    fn json(&self) -> Value {
        let mut row = json!({
            "image": self.name,
            "prompt": self.settings.prompt,
            "psnr_db": self.numbers.psnr,
            "vae_psnr_db": self.numbers.vae_psnr,
            "latent_error": self.numbers.latent_error,
            "seconds": self.numbers.seconds,
            "status": self.status.name(),
        });
        if let Some(error) = &self.error {
            row["error"] = error.as_str().into();
        }
        row
    }

    /// Inverts the image, writes its seed and reconstruction, and records how well the seed regenerates it; an
    /// image that cannot be read is reported and recorded as failed.
    fn run(&mut self, inverter: &Inverter) -> Result<(), Failure> {
        let started = Instant::now();
        let image = match read_image(&self.image) {
            Ok(image) => image,
            Err(e) => {
                eprintln!("error: {e}; skipped");
                (self.status, self.error) = (Status::Failed, Some(e.to_string()));
                return Ok(());
            }
        };
        let inverted = inverter.invert(&image, &self.settings, &self.seed, &format!("{}: ", self.name))?;
        let check = inverter.check(&inverted, &self.png)?;
        self.status = Status::Done;
        self.numbers = Numbers {
            psnr: Some(check.psnr),
            vae_psnr: Some(check.vae_psnr),
            latent_error: Some(check.latent_error),
            seconds: Some(started.elapsed().as_secs_f64()),
        };
        Ok(())
    }
}

/// The rows of an earlier run's summary by image name (none when it is missing or not one).
fn earlier_summary(path: &Path) -> HashMap<String, Value> {
    let rows = std::fs::read(path).ok().and_then(|bytes| serde_json::from_slice::<Vec<Value>>(&bytes).ok());
    let named = |row: Value| Some((row.get("image")?.as_str()?.to_owned(), row));
    rows.into_iter().flatten().filter_map(named).collect()
}

/// Writes the summary as it stands.
fn write_summary(path: &Path, jobs: &[Job]) -> Result<(), Failure> {
    let rows: Vec<Value> = jobs.iter().map(Job::json).collect();
    write_atomic(path, &serde_json::to_vec_pretty(&rows).expect("plain data"))
}

/// `text` cut to `max` characters, with `…` where it was cut.
fn shorten(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    format!("{}…", text.chars().take(max.saturating_sub(1)).collect::<String>())
}

/// The width of a column: its header's or its widest cell's, in characters.
fn width<'a>(header: &str, cells: impl Iterator<Item = &'a str>) -> usize {
    cells.map(|cell| cell.chars().count()).fold(header.chars().count(), usize::max)
}

/// The summary as a table on standard output.
fn print_table(jobs: &[Job]) {
    let prompts: Vec<String> = jobs.iter().map(|job| shorten(&job.settings.prompt, 32)).collect();
    let name_width = width("image", jobs.iter().map(|job| job.name.as_str()));
    let prompt_width = width("prompt", prompts.iter().map(String::as_str));
    println!(
        "{:<name_width$}  {:<prompt_width$}  {:>7}  {:>12}  {:>12}  {:>7}  status",
        "image", "prompt", "PSNR dB", "VAE bound dB", "latent error", "seconds"
    );
    let cell = |value: Option<f64>, show: fn(f64) -> String| value.map_or_else(|| "-".to_owned(), show);
    for (job, prompt) in jobs.iter().zip(&prompts) {
        let n = &job.numbers;
        println!(
            "{:<name_width$}  {prompt:<prompt_width$}  {:>7}  {:>12}  {:>12}  {:>7}  {}",
            job.name,
            cell(n.psnr, |v| format!("{v:.2}")),
            cell(n.vae_psnr, |v| format!("{v:.2}")),
            cell(n.latent_error, |v| format!("{v:.3e}")),
            cell(n.seconds, |v| format!("{v:.1}")),
            job.status.name()
        );
    }
}

/// `fpi invert` on several images into `--output-dir`.
pub fn invert_all(args: InvertArgs) -> Result<(), Failure> {
    let dir = output_dir(&args)?;
    let images = list_images(&args.image)?;
    let stems = stems(&images, dir)?;
    let prompts = prompts(&images, args.prompt.as_deref())?;
    let base = settings(&args, &prompts[0])?;
    let summary = dir.join(SUMMARY);
    if dir.exists() {
        if !dir.is_dir() {
            return Err(at(dir, "--output-dir is not a folder"));
        }
        check_writable(&summary)?;
    }

    let chosen = choose(&args.common)?;
    let model = chosen.name.clone();
    let earlier = earlier_summary(&summary);
    let mut jobs: Vec<Job> = (images.iter().zip(&stems).zip(prompts))
        .map(|((image, stem), prompt)| {
            let settings = InvertSettings { prompt, ..base.clone() };
            Job::plan(image, stem, settings, dir, &model, &earlier)
        })
        .collect();
    std::fs::create_dir_all(dir).map_err(|e| at(dir, e))?;
    check_writable(&summary)?;
    write_summary(&summary, &jobs)?;

    let quiet = args.common.run.quiet;
    let needed = jobs.iter().any(|job| !matches!(job.todo, Todo::Skip));
    let pipeline = needed.then(|| load_chosen(chosen, &args.common)).transpose()?;
    if let Some(pipeline) = &pipeline {
        pipeline.check(&base)?;
    }
    let inverter = pipeline.as_ref().map(|pipeline| Inverter { pipeline, model: &model, quiet });
    let count = jobs.len();
    for i in 0..count {
        let job = &mut jobs[i];
        if !quiet {
            eprintln!("image {} of {count}: {}", i + 1, job.image.display());
        }
        if !matches!(job.todo, Todo::Invert) {
            eprintln!("{}: skipped: {} has these settings", job.name, job.seed.display());
        }
        match (&job.todo, &inverter) {
            (Todo::Skip, _) => continue,
            (Todo::Resample(seed), Some(inverter)) => {
                eprintln!(
                    "note: {}: {} is missing; sampling it from {}",
                    job.name,
                    job.png.display(),
                    job.seed.display()
                );
                let latents = inverter.pipeline.seed_tensor(seed).at(&job.seed)?;
                let outputs = SampleOutputs { output: job.png.clone(), latents_out: None };
                let s = &job.settings;
                sample_and_write(inverter.pipeline, latents, &s.prompt, s.steps, s.guidance, quiet, &outputs)?;
            }
            (Todo::Invert, Some(inverter)) => job.run(inverter)?,
            (_, None) => unreachable!("the model is loaded when an image needs it"),
        }
        write_summary(&summary, &jobs)?;
    }

    print_table(&jobs);
    if !quiet {
        eprintln!("wrote {}", summary.display());
    }
    let failed = jobs.iter().filter(|job| matches!(job.status, Status::Failed)).count();
    match failed {
        0 => Ok(()),
        n => Err(Failure::from(format!(
            "{n} of {count} images could not be read (see above); the others are in {}",
            dir.display()
        ))),
    }
}
