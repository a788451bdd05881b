//! Seed interpolation and centroids against `tests/reference/make_nao_reference.py` (a float64 port of the
//! authors' NAO objective and optimiser, `nao/norm_aware_optimization.py` in dvirsamuel/SeedSelect, with the issue's
//! definitions): g(r) against `math.lgamma`, lerp and slerp against their formulas, and NAO paths and centroids from the reference's own starting points to within 1 % of its objective, with the
//! points' norms in its band.

mod common;

use common::*;
use fpi_core::seed_space::*;

fn references() -> References {
    References::open(&fixtures().join("reference/nao.safetensors"))
}

/// `values` as rows of `width`.
fn rows(values: Vec<f32>, width: usize) -> Vec<Point> {
    values.chunks(width).map(<[f32]>::to_vec).collect()
}

fn norm(p: &[f32]) -> f64 {
    p.iter().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

#[test]
fn chi_log_density_matches_float64() {
    let refs = references();
    let (r, d, g) = (refs.doubles("g.r"), refs.doubles("g.d"), refs.doubles("g.value"));
    for ((r, d), g) in r.iter().zip(&d).zip(&g) {
        let ours = chi_log_density(*r, *d as usize);
        assert!((ours - g).abs() <= 1e-9 * g.abs().max(1.0), "g({r}; d = {d}) = {ours}, reference {g}");
    }
}

#[test]
fn lerp_and_slerp_match_their_formulas() {
    let refs = references();
    let ts = refs.doubles("interp.t");
    for pair in ["generic", "near_threshold", "near_parallel", "near_antiparallel"] {
        let (a, b) = (refs.floats(&format!("interp.{pair}.a")).0, refs.floats(&format!("interp.{pair}.b")).0);
        for (method, f) in [("lerp", lerp as fn(&[f32], &[f32], f64) -> Point), ("slerp", slerp)] {
            let expected = refs.doubles(&format!("interp.{pair}.{method}"));
            for (row, &t) in expected.chunks(a.len()).zip(&ts) {
                let ours = f(&a, &b, t);
                let worst = ours.iter().zip(row).map(|(x, y)| (*x as f64 - y).abs()).fold(0.0, f64::max);
                assert!(worst <= 1e-6, "{method} {pair} t = {t}: off by {worst:.2e}");
            }
        }
    }
}

#[test]
fn paths_reach_the_reference_objective_within_one_percent() {
    let refs = references();
    for (name, d, n) in [
        ("path_d256_n5", 256, 5),
        ("path_d256_n9", 256, 9),
        ("path_d1024_n5", 1024, 5),
        ("path_d1024_n9", 1024, 9),
        ("path_d16384_n9", 16384, 9),
    ] {
        let (a, b) = (refs.floats(&format!("{name}.a")).0, refs.floats(&format!("{name}.b")).0);
        let init = rows(refs.floats(&format!("{name}.init")).0, d);
        let path = nao_path_from(&a, &b, &init, &NaoOptions::path());
        let reference = refs.doubles(&format!("{name}.objective"))[0];
        let iterations = refs.ints(&format!("{name}.iterations"))[0];
        let norms: Vec<f64> = path.points[1..n - 1].iter().map(|p| norm(p)).collect();
        let band = refs.doubles(&format!("{name}.norms"));
        let (low, high) = band.iter().fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
        eprintln!(
            "{name}: objective {:.6} (reference {reference:.6}), {} steps (reference {iterations}), norms {:.3}..{:.3} \
             (reference {low:.3}..{high:.3}, √(d−1) = {:.3})",
            path.objective,
            path.iterations,
            norms.iter().cloned().fold(f64::MAX, f64::min),
            norms.iter().cloned().fold(f64::MIN, f64::max),
            ((d - 1) as f64).sqrt()
        );
        assert!((path.objective - reference).abs() <= 0.01 * reference.abs(), "{name}: objective {}", path.objective);
        assert!(
            path.iterations.abs_diff(iterations as usize) <= 1,
            "{name}: {} steps, reference {iterations}",
            path.iterations
        );
        let slack = 0.01 * high;
        assert!(
            norms.iter().all(|&r| r >= low - slack && r <= high + slack),
            "{name}: norms {norms:?} outside {low}..{high}"
        );
    }
}

/// At SD1.5's 512² (d = 16384) NAO keeps every interior point on the shell, where lerp's midpoint falls to ≈ 90.
#[test]
fn at_sd15_size_a_nao_path_stays_on_the_shell_and_lerp_does_not() {
    let refs = references();
    let (a, b) = (refs.floats("path_d16384_n9.a").0, refs.floats("path_d16384_n9.b").0);
    let shell = 16383f64.sqrt();
    let path = nao_path(&a, &b, 9, &NaoOptions::path(), 0);
    let norms: Vec<f64> = path.points[1..8].iter().map(|p| norm(p)).collect();
    let lerp_mid = norm(&lerp(&a, &b, 0.5));
    eprintln!("NAO interior norms {norms:.2?} (shell √(d−1) = {shell:.2}); lerp midpoint {lerp_mid:.2}");
    assert!(norms.iter().all(|r| (r - shell).abs() <= 3.0), "{norms:?}");
    assert!((lerp_mid - 90.0).abs() < 5.0, "lerp's midpoint at {lerp_mid}");
}

#[test]
fn centroids_reach_the_reference_objective_within_one_percent() {
    let refs = references();
    for (name, d, k) in
        [("centroid_d1024_k2", 1024, 2), ("centroid_d1024_k3", 1024, 3), ("centroid_d16384_k2", 16384, 2)]
    {
        let seeds = rows(refs.floats(&format!("{name}.seeds")).0, d);
        let seeds: Vec<&[f32]> = seeds.iter().map(Vec::as_slice).collect();
        let start = refs.floats(&format!("{name}.c_init")).0;
        let (init, shape) = refs.floats(&format!("{name}.init"));
        let init: Vec<Vec<Point>> = rows(init, d).chunks(shape[1]).map(<[Point]>::to_vec).collect();
        let centroid = nao_centroid_from(&seeds, &start, &init, &NaoOptions::centroid());
        let reference = refs.doubles(&format!("{name}.objective"))[0];
        let c_norm = refs.doubles(&format!("{name}.c_norm"))[0];
        eprintln!(
            "{name}: objective {:.6} (reference {reference:.6}), {} steps, ‖c‖ {:.3} (reference {c_norm:.3}; shell {:.3})",
            centroid.objective,
            centroid.iterations,
            norm(&centroid.centroid),
            ((d - 1) as f64).sqrt()
        );
        assert_eq!(centroid.paths.len(), k);
        assert!((centroid.objective - reference).abs() <= 0.01 * reference.abs(), "{name}: {}", centroid.objective);
        assert!((norm(&centroid.centroid) - c_norm).abs() <= 0.01 * c_norm, "{name}: ‖c‖ {}", norm(&centroid.centroid));
        for (baseline, ours) in [("mean_normalised", normalized_mean(&seeds)), ("mean_shell", shell_mean(&seeds))] {
            let expected = refs.floats(&format!("{name}.{baseline}")).0;
            let worst = ours.iter().zip(&expected).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max);
            assert!(worst <= 1e-5, "{name} {baseline}: off by {worst:.2e}");
        }
    }
}
