//! Measures of how well an inversion reconstructs.

/// ‖a − b‖ / ‖b‖.
pub fn relative_error(a: &[f32], b: &[f32]) -> f64 {
    let diff: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum();
    let norm: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

/// Peak signal-to-noise ratio in dB of two images with values in [0, `peak`].
pub fn psnr(a: &[f32], b: &[f32], peak: f64) -> f64 {
    assert_eq!(a.len(), b.len(), "images of different sizes");
    let mse: f64 = a.iter().zip(b).map(|(x, y)| (*x as f64 - *y as f64).powi(2)).sum::<f64>() / a.len() as f64;
    10.0 * (peak * peak / mse.max(1e-20)).log10()
}
