//! Choosing a compute device at run time: wgpu (any GPU, or lavapipe), ndarray, flex, or `auto`.

use std::fmt;
use std::str::FromStr;

#[cfg(not(target_family = "wasm"))]
use burn::tensor::Device;

/// Where to run, as the user asks for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Backend {
    /// wgpu on a hardware GPU if there is one, else flex.
    Auto,
    /// wgpu: Vulkan, Metal or DX12 (a software adapter such as lavapipe where no GPU exists).
    Wgpu,
    /// burn's portable CPU backend (slow; the test backend).
    #[cfg_attr(feature = "clap", value(name = "ndarray"))]
    NdArray,
    /// burn's fast CPU backend.
    Flex,
}

/// A device name that is not one of `auto`, `wgpu`, `ndarray`, `flex`.
#[derive(Debug, thiserror::Error)]
#[error("unknown device {0:?} (expected auto, wgpu, ndarray or flex)")]
pub struct UnknownBackend(pub String);

/// wgpu found no adapter it can use.
#[derive(Debug, thiserror::Error)]
#[error("no usable wgpu adapter: {0}")]
pub struct NoAdapter(pub String);

impl FromStr for Backend {
    type Err = UnknownBackend;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Backend::Auto),
            "wgpu" => Ok(Backend::Wgpu),
            "ndarray" => Ok(Backend::NdArray),
            "flex" => Ok(Backend::Flex),
            other => Err(UnknownBackend(other.into())),
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Auto => "auto",
            Backend::Wgpu => "wgpu",
            Backend::NdArray => "ndarray",
            Backend::Flex => "flex",
        })
    }
}

#[cfg(not(target_family = "wasm"))]
impl Backend {
    /// The backend `auto` stands for on this machine (any other choice is itself): wgpu on a hardware GPU when
    /// there is one (a software adapter such as lavapipe is far slower than flex), else flex.
    pub fn resolve(self) -> Backend {
        match self {
            Backend::Auto if adapters().iter().any(AdapterInfo::is_hardware) => Backend::Wgpu,
            Backend::Auto => Backend::Flex,
            chosen => chosen,
        }
    }

    /// Opens the backend's device (`auto` resolved first). wgpu fails with a message when no adapter exists.
    pub fn open(self) -> Result<Device, NoAdapter> {
        match self.resolve() {
            #[allow(deprecated)]
            Backend::NdArray => Ok(Device::ndarray()),
            Backend::Flex | Backend::Auto => Ok(Device::flex()),
            Backend::Wgpu => Device::wgpu_options().init().map_err(|e| NoAdapter(e.to_string())),
        }
    }
}

/// Whether `device` is a wgpu adapter (natively or the browser's WebGPU), not one of the CPU backends.
pub fn is_wgpu(device: &burn::tensor::Device) -> bool {
    #[cfg(not(target_family = "wasm"))]
    {
        use burn::backend::DispatchDevice;
        !matches!(device.as_dispatch(), DispatchDevice::Flex(_) | DispatchDevice::NdArray(_))
    }
    #[cfg(target_family = "wasm")]
    {
        let _ = device;
        true
    }
}

/// Whether `device` binds buffers of limited size, so that large feature maps must be held in bands (wgpu: 128 MiB
/// on lavapipe and many WebGPU adapters); the CPU backends have no such limit.
pub fn has_binding_limit(device: &burn::tensor::Device) -> bool {
    is_wgpu(device)
}

/// A wgpu adapter as `fpi info` shows it.
#[derive(Debug, Clone)]
pub struct AdapterInfo {
    /// The adapter's name.
    pub name: String,
    /// `DiscreteGpu`, `IntegratedGpu`, `VirtualGpu`, `Cpu` (software, e.g. lavapipe) or `Other`.
    pub kind: String,
    /// Vulkan, Metal, Dx12, Gl or BrowserWebGpu.
    pub api: String,
    /// The largest storage buffer one shader can bind, in bytes.
    pub max_binding: u64,
    /// The largest buffer, in bytes.
    pub max_buffer: u64,
    /// Whether shaders can compute in f16.
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
                max_binding: limits.max_storage_buffer_binding_size,
                max_buffer: limits.max_buffer_size,
                shader_f16: a.features().contains(wgpu::Features::SHADER_F16),
            }
        })
        .collect()
}
