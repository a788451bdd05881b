//! Images in and out: decoding, centre-crop and resize, conversion to and from the VAE's [-1, 1] tensors.

use burn::tensor::{Device, Tensor, TensorData};
use image::DynamicImage;
pub use image::RgbImage;
use image::imageops::FilterType;

/// Decodes PNG, JPEG or WebP bytes; grey and alpha images become RGB.
pub fn decode(bytes: &[u8]) -> Result<RgbImage, image::ImageError> {
    Ok(DynamicImage::into_rgb8(image::load_from_memory(bytes)?))
}

/// Centre-crops to a square and resizes to `size`×`size` (Lanczos); an image already that size is kept as it is.
pub fn square(image: &RgbImage, size: usize) -> RgbImage {
    let (w, h) = image.dimensions();
    let side = w.min(h);
    let cropped = image::imageops::crop_imm(image, (w - side) / 2, (h - side) / 2, side, side).to_image();
    if side as usize == size {
        cropped
    } else {
        image::imageops::resize(&cropped, size as u32, size as u32, FilterType::Lanczos3)
    }
}

/// Pixels as a `[1, 3, H, W]` tensor of x/127.5 − 1.
pub fn to_tensor(image: &RgbImage, device: &Device) -> Tensor<4> {
    let (w, h) = image.dimensions();
    let (w, h) = (w as usize, h as usize);
    let mut values = vec![0f32; 3 * h * w];
    for (x, y, pixel) in image.enumerate_pixels() {
        for c in 0..3 {
            values[c * h * w + y as usize * w + x as usize] = pixel.0[c] as f32 / 127.5 - 1.0;
        }
    }
    Tensor::from_data(TensorData::new(values, [1, 3, h, w]), device)
}

/// A `[1, 3, H, W]` tensor's values (about [-1, 1]) as 8-bit pixels, as diffusers' image processor rounds them.
pub fn from_values(values: &[f32], height: usize, width: usize) -> RgbImage {
    RgbImage::from_fn(width as u32, height as u32, |x, y| {
        let at = |c: usize| {
            let v = values[c * height * width + y as usize * width + x as usize];
            ((v / 2.0 + 0.5).clamp(0.0, 1.0) * 255.0).round() as u8
        };
        image::Rgb([at(0), at(1), at(2)])
    })
}

/// PNG bytes of an image.
pub fn encode_png(image: &RgbImage) -> Vec<u8> {
    let mut bytes = std::io::Cursor::new(Vec::new());
    image.write_to(&mut bytes, image::ImageFormat::Png).expect("PNG encoding to memory");
    bytes.into_inner()
}

/// `frames` side by side, left to right, top-aligned (for a strip of interpolation frames).
pub fn strip(frames: &[RgbImage]) -> RgbImage {
    let width = frames.iter().map(RgbImage::width).sum();
    let height = frames.iter().map(RgbImage::height).max().unwrap_or(0);
    let mut strip = RgbImage::new(width, height);
    let mut x = 0;
    for frame in frames {
        image::imageops::replace(&mut strip, frame, x.into(), 0);
        x += frame.width();
    }
    strip
}
