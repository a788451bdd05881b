//! Seed space: points between seeds (interpolation) and at their centre (centroids), on plain vectors.
//!
//! Gaussian seeds of dimension d have norms that follow a χ distribution with d degrees of freedom: at SD1.5's
//! 512² (d = 4·64·64 = 16384) a thin shell of radius ≈ √(d−1) ≈ 128. A straight line between two seeds dips far
//! inside it (to ≈ 90 halfway), where the model makes flat or noisy images. NAO (norm-guided optimisation, Samuel
//! et al., NeurIPS 2023, arXiv 2306.08687) bends paths and places centroids where seeds are likely, by maximising the
//! χ_d log-density along the path. Arithmetic is in f64; seeds go in and come out as f32.

use serde::{Deserialize, Serialize};

/// A seed as a flat vector.
pub type Point = Vec<f32>;

/// The χ_d log-density at radius `r`: g(r) = (d−1)·ln r − r²/2 − [(d/2−1)·ln 2 + lnΓ(d/2)].
pub fn chi_log_density(r: f64, d: usize) -> f64 {
    let d = d as f64;
    (d - 1.0) * r.ln() - r * r / 2.0 - ((d / 2.0 - 1.0) * std::f64::consts::LN_2 + ln_gamma(d / 2.0))
}

/// g′(r) = (d−1)/r − r.
fn chi_log_density_slope(r: f64, d: usize) -> f64 {
    (d as f64 - 1.0) / r - r
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms: relative error below 1e-13 where it matters here).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEFFICIENTS: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let series = COEFFICIENTS[1..].iter().enumerate().fold(COEFFICIENTS[0], |s, (i, c)| s + c / (x + i as f64 + 1.0));
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + series.ln()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

fn to_f32(v: &[f64]) -> Point {
    v.iter().map(|&x| x as f32).collect()
}

/// (1−t)·a + t·b.
pub fn lerp(a: &[f32], b: &[f32], t: f64) -> Point {
    a.iter().zip(b).map(|(&a, &b)| ((1.0 - t) * a as f64 + t * b as f64) as f32).collect()
}

/// Spherical interpolation of the raw vectors by the angle between their directions, θ = arccos(â·b̂):
/// sin((1−t)θ)/sin θ · a + sin(tθ)/sin θ · b; [`lerp`] when the directions are nearly parallel or opposite
/// (|cos θ| > 0.9995), or one is zero.
pub fn slerp(a: &[f32], b: &[f32], t: f64) -> Point {
    let (a64, b64) = (to_f64(a), to_f64(b));
    let cos = a64.iter().zip(&b64).map(|(x, y)| x * y).sum::<f64>() / (norm(&a64) * norm(&b64));
    if cos.is_nan() || cos.abs() > 0.9995 {
        return lerp(a, b, t);
    }
    let theta = cos.acos();
    let (wa, wb) = (((1.0 - t) * theta).sin() / theta.sin(), (t * theta).sin() / theta.sin());
    a64.iter().zip(&b64).map(|(x, y)| (wa * x + wb * y) as f32).collect()
}

/// The normalised mean Σxᵢ/√K (a sum of K standard normal seeds divided by √K is one). `seeds` must not be empty.
pub fn normalized_mean(seeds: &[&[f32]]) -> Point {
    let scale = 1.0 / (seeds.len() as f64).sqrt();
    to_f32(&sum(seeds).iter().map(|x| x * scale).collect::<Vec<_>>())
}

/// The mean x̄ moved onto the shell: √(d−1)·x̄/‖x̄‖ (not finite when the seeds sum to zero). `seeds` must not be
/// empty.
pub fn shell_mean(seeds: &[&[f32]]) -> Point {
    let total = sum(seeds);
    let scale = ((total.len() as f64) - 1.0).sqrt() / norm(&total);
    to_f32(&total.iter().map(|x| x * scale).collect::<Vec<_>>())
}

fn sum(seeds: &[&[f32]]) -> Vec<f64> {
    assert!(!seeds.is_empty(), "a mean of no seeds");
    let mut total = vec![0.0; seeds[0].len()];
    for seed in seeds {
        total.iter_mut().zip(seed.iter()).for_each(|(t, &x)| *t += x as f64);
    }
    total
}

/// NAO's optimiser settings. [`NaoOptions::path`] and [`NaoOptions::centroid`] are the authors' values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NaoOptions {
    /// Adam's learning rate (0.01).
    pub learning_rate: f64,
    /// λ, the weight of the penalty on segments longer than ε (1).
    pub penalty: f64,
    /// The most Adam steps (10 000).
    pub max_iterations: usize,
    /// The optimisation stops once the loss has changed by less than this …
    pub tolerance: f64,
    /// … at this many steps in a row.
    pub patience: usize,
}

impl NaoOptions {
    /// For paths: stop when the loss changes by less than 1e-3 at 10 steps in a row.
    pub fn path() -> Self {
        Self { learning_rate: 0.01, penalty: 1.0, max_iterations: 10_000, tolerance: 1e-3, patience: 10 }
    }

    /// For centroids: stop when the loss changes by less than 1e-2 at 5 steps in a row.
    pub fn centroid() -> Self {
        Self { tolerance: 1e-2, patience: 5, ..Self::path() }
    }
}

/// How `fpi interpolate` goes from one seed to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PathMethod {
    /// NAO's optimised path ([`nao_path`]).
    Nao,
    /// [`slerp`] at evenly spaced t.
    Slerp,
    /// [`lerp`] at evenly spaced t.
    Lerp,
}

/// How `fpi centroid` finds the centre of seeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CentroidMethod {
    /// NAO's optimised centroid ([`nao_centroid`]).
    Nao,
    /// The normalised mean ([`normalized_mean`]).
    Mean,
    /// The mean moved onto the shell ([`shell_mean`]).
    Shell,
}

impl PathMethod {
    /// Every method's name.
    pub const NAMES: [&'static str; 3] = ["nao", "slerp", "lerp"];
}

impl CentroidMethod {
    /// Every method's name.
    pub const NAMES: [&'static str; 3] = ["nao", "mean", "shell"];
}

/// The seed of NAO's starting noise, fixed so that a path or centroid is the same every run.
const NAO_SEED: u64 = 0;
/// Points on each path from a seed to a NAO centroid, both ends included.
pub const CENTROID_PATH_POINTS: usize = 9;

/// `points` seeds from `a` to `b` (both included, so `points` ≥ 2) by `method`.
pub fn interpolate(a: &[f32], b: &[f32], points: usize, method: PathMethod) -> Vec<Point> {
    assert!(points >= 2, "an interpolation has both its seeds");
    let t = |i: usize| i as f64 / (points - 1) as f64;
    match method {
        PathMethod::Nao => nao_path(a, b, points, &NaoOptions::path(), NAO_SEED).points,
        PathMethod::Slerp => (0..points).map(|i| slerp(a, b, t(i))).collect(),
        PathMethod::Lerp => (0..points).map(|i| lerp(a, b, t(i))).collect(),
    }
}

/// The centre of `seeds` (at least 2) by `method`.
pub fn centroid(seeds: &[&[f32]], method: CentroidMethod) -> Point {
    match method {
        CentroidMethod::Nao => nao_centroid(seeds, CENTROID_PATH_POINTS, &NaoOptions::centroid(), NAO_SEED).centroid,
        CentroidMethod::Mean => normalized_mean(seeds),
        CentroidMethod::Shell => shell_mean(seeds),
    }
}

/// The value of `values` whose name in `names` (same order) is `name`.
fn by_name<T: Copy>(name: &str, names: &[&str], values: &[T]) -> Result<T, String> {
    let found = names.iter().position(|n| *n == name).map(|i| values[i]);
    found.ok_or_else(|| format!("{name:?} is not one of {}", names.join(", ")))
}

impl std::str::FromStr for PathMethod {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        by_name(name, &Self::NAMES, &[PathMethod::Nao, PathMethod::Slerp, PathMethod::Lerp])
    }
}

impl std::str::FromStr for CentroidMethod {
    type Err = String;

    fn from_str(name: &str) -> Result<Self, String> {
        by_name(name, &Self::NAMES, &[CentroidMethod::Nao, CentroidMethod::Mean, CentroidMethod::Shell])
    }
}

/// An optimised path.
#[derive(Debug, Clone, PartialEq)]
pub struct NaoPath {
    /// All its points, both ends included.
    pub points: Vec<Point>,
    /// The objective at these points.
    pub objective: f64,
    /// Adam steps taken.
    pub iterations: usize,
}

/// An optimised centroid and the paths to it from each seed.
#[derive(Debug, Clone, PartialEq)]
pub struct NaoCentroid {
    /// The centroid.
    pub centroid: Point,
    /// From each seed to the centroid, both ends included.
    pub paths: Vec<Vec<Point>>,
    /// The objective at these points.
    pub objective: f64,
    /// Adam steps taken.
    pub iterations: usize,
}

/// NAO's path of `n` points from `a` to `b` (n ≥ 2): it starts on the chord, its interior points moved by seeded
/// uniform noise in [0, 0.01) (so a run is deterministic), and keeps every segment where seeds are likely.
pub fn nao_path(a: &[f32], b: &[f32], n: usize, options: &NaoOptions, seed: u64) -> NaoPath {
    assert!(n >= 2, "a path has both its ends");
    let mut noise = Noise(seed);
    let init: Vec<Point> = (1..n - 1).map(|i| noise.add(lerp(a, b, i as f64 / (n - 1) as f64))).collect();
    nao_path_from(a, b, &init, options)
}

/// NAO's path from `a` to `b` through the interior points `init` at the start.
pub fn nao_path_from(a: &[f32], b: &[f32], init: &[Point], options: &NaoOptions) -> NaoPath {
    let n = init.len() + 2;
    let (a64, b64) = (to_f64(a), to_f64(b));
    let eps = 2.0 * distance(&a64, &b64) / n as f64;
    let mut problem = Problem { fixed: vec![a64, b64], chains: Vec::new(), prior: None };
    problem.chains.push(Chain { points: chain(Ref::Fixed(0), 0..init.len(), Ref::Fixed(1)), eps });
    let (free, objective, iterations) = problem.minimise(init.iter().map(|p| to_f64(p)).collect(), options);
    let mut points = vec![a.to_vec()];
    points.extend(free.iter().map(|p| to_f32(p)));
    points.push(b.to_vec());
    NaoPath { points, objective, iterations }
}

/// NAO's centroid of `seeds` (at least 2), reached from each by a path of `n` points: it starts at the slerp
/// midpoint (2 seeds) or the mean, the paths on their chords plus seeded noise as in [`nao_path`].
pub fn nao_centroid(seeds: &[&[f32]], n: usize, options: &NaoOptions, seed: u64) -> NaoCentroid {
    assert!(seeds.len() >= 2 && n >= 2, "a centroid of at least 2 seeds, by paths with both their ends");
    let start = match seeds {
        [a, b] => slerp(a, b, 0.5),
        _ => to_f32(&sum(seeds).iter().map(|x| x / seeds.len() as f64).collect::<Vec<_>>()),
    };
    let mut noise = Noise(seed);
    let init: Vec<Vec<Point>> = seeds
        .iter()
        .map(|s| (1..n - 1).map(|i| noise.add(lerp(s, &start, i as f64 / (n - 1) as f64))).collect())
        .collect();
    nao_centroid_from(seeds, &start, &init, options)
}

/// NAO's centroid of `seeds` from the centroid `start` and each path's interior points `init` at the start. Each
/// path's ε is 2‖seed − start‖/n.
pub fn nao_centroid_from(seeds: &[&[f32]], start: &[f32], init: &[Vec<Point>], options: &NaoOptions) -> NaoCentroid {
    assert!(seeds.len() >= 2 && init.len() == seeds.len(), "a centroid of at least 2 seeds, a path from each");
    let m = init[0].len();
    let n = m + 2;
    let start64 = to_f64(start);
    let mut problem = Problem { fixed: seeds.iter().map(|s| to_f64(s)).collect(), chains: Vec::new(), prior: None };
    let centre = init.len() * m;
    for (k, _) in init.iter().enumerate() {
        let eps = 2.0 * distance(&problem.fixed[k], &start64) / n as f64;
        problem.chains.push(Chain { points: chain(Ref::Fixed(k), k * m..(k + 1) * m, Ref::Free(centre)), eps });
    }
    problem.prior = Some(centre);
    let mut free: Vec<Vec<f64>> = init.iter().flatten().map(|p| to_f64(p)).collect();
    free.push(start64);
    let (free, objective, iterations) = problem.minimise(free, options);
    let centroid = to_f32(&free[centre]);
    let paths = seeds
        .iter()
        .enumerate()
        .map(|(k, s)| {
            let mut path = vec![s.to_vec()];
            path.extend(free[k * m..(k + 1) * m].iter().map(|p| to_f32(p)));
            path.push(centroid.clone());
            path
        })
        .collect();
    NaoCentroid { centroid, paths, objective, iterations }
}

fn distance(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum::<f64>().sqrt()
}

/// A point of a chain: a fixed seed, or a free point being optimised.
#[derive(Debug, Clone, Copy)]
enum Ref {
    Fixed(usize),
    Free(usize),
}

/// `first`, the free points `interior`, then `last`.
fn chain(first: Ref, interior: std::ops::Range<usize>, last: Ref) -> Vec<Ref> {
    std::iter::once(first).chain(interior.map(Ref::Free)).chain(std::iter::once(last)).collect()
}

/// A polyline whose segments the objective scores, and its length allowance ε.
struct Chain {
    points: Vec<Ref>,
    eps: f64,
}

/// NAO's objective over chains of points: J = Σ_chains [−Σⱼ Lⱼ·g(ρⱼ) + λ·Σⱼ max(0, Lⱼ − ε)] − g(‖c‖) with the
/// optional `prior` point c (a centroid), Lⱼ the segment lengths and ρⱼ the norms of their midpoints.
struct Problem {
    fixed: Vec<Vec<f64>>,
    chains: Vec<Chain>,
    prior: Option<usize>,
}

impl Problem {
    /// The objective and its gradient with respect to the free points.
    fn objective(&self, free: &[Vec<f64>], penalty: f64) -> (f64, Vec<Vec<f64>>) {
        let d = self.fixed[0].len();
        let point = |r: Ref| match r {
            Ref::Fixed(i) => &self.fixed[i],
            Ref::Free(i) => &free[i],
        };
        let mut grad = vec![vec![0.0; d]; free.len()];
        let mut total = 0.0;
        for chain in &self.chains {
            for pair in chain.points.windows(2) {
                let (p, q) = (point(pair[0]), point(pair[1]));
                let step: Vec<f64> = q.iter().zip(p).map(|(q, p)| q - p).collect();
                let mid: Vec<f64> = q.iter().zip(p).map(|(q, p)| (q + p) / 2.0).collect();
                let (length, rho) = (norm(&step), norm(&mid));
                let over = length > chain.eps;
                total += -length * chi_log_density(rho, d) + if over { penalty * (length - chain.eps) } else { 0.0 };
                // ∂/∂q: −(u·g(ρ) + L·g′(ρ)·m/(2ρ)) + λ·[L > ε]·u with u = (q − p)/L; ∂/∂p the same with −u.
                // A segment of no length, or whose midpoint is the origin, has no direction to move along.
                let along =
                    if length > 0.0 { -chi_log_density(rho, d) + if over { penalty } else { 0.0 } } else { 0.0 };
                let across = if rho > 0.0 { -length * chi_log_density_slope(rho, d) / (2.0 * rho) } else { 0.0 };
                let length = length.max(f64::MIN_POSITIVE);
                for (r, sign) in [(pair[0], -1.0), (pair[1], 1.0)] {
                    if let Ref::Free(i) = r {
                        for ((g, s), m) in grad[i].iter_mut().zip(&step).zip(&mid) {
                            *g += sign * along * s / length + across * m;
                        }
                    }
                }
            }
        }
        if let Some(c) = self.prior {
            let r = norm(&free[c]);
            total -= chi_log_density(r, d);
            let scale = -chi_log_density_slope(r, d) / r;
            grad[c].iter_mut().zip(&free[c]).for_each(|(g, x)| *g += scale * x);
        }
        (total, grad)
    }

    /// Adam (PyTorch's: β = (0.9, 0.999), ε = 1e-8) from `free` until the loss settles (see [`NaoOptions`]);
    /// returns the points, the objective there and the steps taken.
    fn minimise(&self, mut free: Vec<Vec<f64>>, options: &NaoOptions) -> (Vec<Vec<f64>>, f64, usize) {
        const BETAS: (f64, f64) = (0.9, 0.999);
        if free.is_empty() {
            return (free, self.objective(&[], options.penalty).0, 0);
        }
        let mut m: Vec<Vec<f64>> = free.iter().map(|p| vec![0.0; p.len()]).collect();
        let mut v = m.clone();
        let (mut previous, mut calm, mut steps) = (f64::INFINITY, 0, 0);
        while steps < options.max_iterations {
            let (loss, grad) = self.objective(&free, options.penalty);
            steps += 1;
            let (bc1, bc2) = (1.0 - BETAS.0.powi(steps as i32), 1.0 - BETAS.1.powi(steps as i32));
            for ((x, g), (m, v)) in free.iter_mut().zip(&grad).zip(m.iter_mut().zip(v.iter_mut())) {
                for i in 0..x.len() {
                    m[i] = BETAS.0 * m[i] + (1.0 - BETAS.0) * g[i];
                    v[i] = BETAS.1 * v[i] + (1.0 - BETAS.1) * g[i] * g[i];
                    x[i] -= options.learning_rate / bc1 * m[i] / (v[i].sqrt() / bc2.sqrt() + 1e-8);
                }
            }
            calm = if (previous - loss).abs() < options.tolerance { calm + 1 } else { 0 };
            previous = loss;
            if calm == options.patience {
                break;
            }
        }
        let objective = self.objective(&free, options.penalty).0;
        (free, objective, steps)
    }
}

/// Seeded uniform noise in [0, 0.01) (SplitMix64), for NAO's starting points.
struct Noise(u64);

impl Noise {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn add(&mut self, point: Point) -> Point {
        point.into_iter().map(|x| (x as f64 + self.next() / 100.0) as f32).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gaussian(d: usize, seed: u64) -> Point {
        // Box–Muller on the same generator the optimiser's start uses.
        let mut noise = Noise(seed);
        (0..d)
            .map(|_| {
                let (u, v) = (noise.next().max(1e-12), noise.next());
                ((-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()) as f32
            })
            .collect()
    }

    /// The analytic gradient against central differences, at a configuration with segments both over and under ε
    /// and a centroid prior.
    #[test]
    fn the_gradient_matches_finite_differences() {
        let d = 32;
        let (a, b, c) = (gaussian(d, 1), gaussian(d, 2), gaussian(d, 3));
        let fixed: Vec<Vec<f64>> = [&a, &b].iter().map(|p| to_f64(p)).collect();
        let free: Vec<Vec<f64>> =
            (0..3).map(|i| to_f64(&lerp(&a, &c, (i + 1) as f64 / 4.0))).chain([to_f64(&c)]).collect();
        let free: Vec<Vec<f64>> =
            free.into_iter().enumerate().map(|(i, p)| p.iter().map(|x| x + 0.3 * (i as f64 - 1.0)).collect()).collect();
        let problem = Problem {
            fixed,
            chains: vec![
                Chain { points: chain(Ref::Fixed(0), 0..3, Ref::Free(3)), eps: 2.0 },
                Chain { points: vec![Ref::Fixed(1), Ref::Free(3)], eps: 50.0 },
            ],
            prior: Some(3),
        };
        let (_, grad) = problem.objective(&free, 1.0);
        let h = 1e-6;
        for (i, j) in [(0, 0), (1, 5), (2, 31), (3, 7), (3, 0)] {
            let at = |delta: f64| {
                let mut moved = free.clone();
                moved[i][j] += delta;
                problem.objective(&moved, 1.0).0
            };
            let numeric = (at(h) - at(-h)) / (2.0 * h);
            assert!(
                (numeric - grad[i][j]).abs() <= 1e-6 * (1.0 + numeric.abs()),
                "({i}, {j}): {numeric} vs {}",
                grad[i][j]
            );
        }
    }

    #[test]
    fn ln_gamma_matches_known_values() {
        let cases =
            [(0.5, std::f64::consts::PI.sqrt().ln()), (1.0, 0.0), (5.0, 24f64.ln()), (8192.0, 65_621.815_632_944_02)];
        for (x, expected) in cases {
            assert!((ln_gamma(x) - expected).abs() <= 1e-12 * expected.abs().max(1.0), "lnΓ({x}) = {}", ln_gamma(x));
        }
    }

    #[test]
    fn the_baselines_are_their_formulas() {
        let (a, b) = (vec![3.0f32, 0.0, 4.0], vec![1.0f32, 2.0, 0.0]);
        let mean = normalized_mean(&[&a, &b]);
        let expected = [4.0 / 2f32.sqrt(), 2.0 / 2f32.sqrt(), 4.0 / 2f32.sqrt()];
        assert!(mean.iter().zip(expected).all(|(x, y)| (x - y).abs() < 1e-6));
        let shell = shell_mean(&[&a, &b]);
        let length = shell.iter().map(|x| (x * x) as f64).sum::<f64>().sqrt();
        assert!((length - 2f64.sqrt()).abs() < 1e-6 && (shell[0] / shell[1] - 2.0).abs() < 1e-6);
    }

    #[test]
    fn paths_keep_their_ends_and_are_deterministic() {
        let (a, b) = (gaussian(64, 4), gaussian(64, 5));
        let path = nao_path(&a, &b, 5, &NaoOptions::path(), 9);
        assert_eq!((path.points.len(), &path.points[0], &path.points[4]), (5, &a, &b));
        assert_eq!(path, nao_path(&a, &b, 5, &NaoOptions::path(), 9));
        assert!(path.iterations > 1 && path.iterations < 10_000);
    }
}
