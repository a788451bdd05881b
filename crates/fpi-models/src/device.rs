//! Choosing a compute device at run time: wgpu (any GPU, or lavapipe), ndarray, flex.

use std::fmt;
use std::str::FromStr;

#[cfg(not(target_family = "wasm"))]
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
    #[cfg(not(target_family = "wasm"))]
    pub fn device(self) -> Result<Device, String> {
        match self {
            #[allow(deprecated)]
            Backend::NdArray => Ok(Device::ndarray()),
            Backend::Flex => Ok(Device::flex()),
            Backend::Wgpu => Device::wgpu_options().init().map_err(|e| format!("no usable wgpu adapter: {e}")),
        }
    }
}

/// A wgpu adapter as `fpi info` shows it.
#[derive(Debug, Clone)]
pub struct AdapterInfo {
    pub name: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `VirtualGpu`, `Cpu` (software, e.g. lavapipe) or `Other`.
    pub kind: String,
    /// Vulkan, Metal, Dx12, Gl or BrowserWebGpu.
    pub api: String,
    /// The largest storage buffer one shader can bind, in bytes.
    pub max_binding: u64,
    /// The largest buffer, in bytes.
    pub max_buffer: u64,
    pub shader_f16: bool,
}

impl AdapterInfo {
    /// A real GPU, not a software rasteriser.
    pub fn is_hardware(&self) -> bool {
        self.kind != "Cpu"
    }
}

/// The wgpu adapters of this machine (none is not an error).
#[cfg(not(target_family = "wasm"))]
pub fn adapters() -> Vec<AdapterInfo> {
    use burn::tensor::wgpu::wgpu;
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapters = burn::tensor::read_sync(instance.enumerate_adapters(wgpu::Backends::all()));
    adapters
        .iter()
        .map(|a| {
            let (info, limits) = (a.get_info(), a.limits());
            AdapterInfo {
                name: info.name,
                kind: format!("{:?}", info.device_type),
                api: format!("{:?}", info.backend),
                max_binding: limits.max_storage_buffer_binding_size as u64,
                max_buffer: limits.max_buffer_size,
                shader_f16: a.features().contains(wgpu::Features::SHADER_F16),
            }
        })
        .collect()
}

/// `auto`: wgpu on a hardware GPU when there is one (a software adapter such as lavapipe is far slower than flex),
/// else flex.
#[cfg(not(target_family = "wasm"))]
pub fn auto_backend() -> Backend {
    if adapters().iter().any(AdapterInfo::is_hardware) { Backend::Wgpu } else { Backend::Flex }
}
