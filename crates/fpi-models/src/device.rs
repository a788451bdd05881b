//! Choosing a compute device at run time: wgpu (any GPU, or lavapipe), ndarray, flex.

use std::fmt;
use std::str::FromStr;

use burn::tensor::Device;

/// A backend the user can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// WebGPU's API natively: Vulkan, Metal or DX12 (lavapipe where no GPU exists).
    Wgpu,
    /// burn's portable CPU backend (the test backend).
    NdArray,
    /// burn's fast CPU backend.
    Flex,
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "wgpu" => Ok(Backend::Wgpu),
            "ndarray" => Ok(Backend::NdArray),
            "flex" => Ok(Backend::Flex),
            other => Err(format!("unknown device {other:?} (expected wgpu, ndarray or flex)")),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Wgpu => "wgpu",
            Backend::NdArray => "ndarray",
            Backend::Flex => "flex",
        })
    }
}

impl Backend {
    /// Opens the backend's device. wgpu fails with a message when no adapter exists.
    pub fn device(self) -> Result<Device, String> {
        match self {
            #[allow(deprecated)]
            Backend::NdArray => Ok(Device::ndarray()),
            Backend::Flex => Ok(Device::flex()),
            Backend::Wgpu => open_wgpu(),
        }
    }
}

#[cfg(not(target_family = "wasm"))]
fn open_wgpu() -> Result<Device, String> {
    Device::wgpu_options()
        .init()
        .map_err(|e| format!("no usable wgpu adapter: {e}"))
}

#[cfg(target_family = "wasm")]
fn open_wgpu() -> Result<Device, String> {
    Err("on the web, open the device with Device::wgpu_options().init_async()".into())
}
