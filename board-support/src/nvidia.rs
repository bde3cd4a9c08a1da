//! The NVIDIA GPU and TensorRT this process would use, asked at run time: the GPU's name and
//! compute capability from the CUDA driver API (`libcuda.so.1`, which every NVIDIA driver and
//! JetPack install), TensorRT's version from `libnvinfer`'s `getInferLibVersion`. Nothing is
//! linked at build time; a library that cannot be loaded is an error naming it and the loader's
//! reason. These key the TensorRT engine cache ([`crate::cache_dir`]): an engine is only valid for
//! the TensorRT version and GPU it was built with.
//!
//! Both libraries stay loaded once opened (ONNX Runtime's CUDA and TensorRT providers load them
//! anyway); results are cached for the process.

use std::ffi::{c_char, c_int, c_uint, CStr};
use std::sync::OnceLock;

use serde::Serialize;

/// One CUDA device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct GpuDevice {
    /// As the driver names it, e.g. "NVIDIA H100 80GB HBM3" or "Orin".
    pub name: String,
    /// `(major, minor)`, e.g. `(8, 7)` on Orin.
    pub compute_capability: (u32, u32),
}

impl GpuDevice {
    /// `"<name> sm<major><minor>"`, the GPU part of a TensorRT cache key (engines are specific to
    /// the device model, and within a model to its architecture).
    pub fn cache_key(&self) -> String {
        format!(
            "{} sm{}{}",
            self.name, self.compute_capability.0, self.compute_capability.1
        )
    }
}

/// The library names tried for TensorRT, newest first (TensorRT 10 on JetPack 6, 8 on JetPack 5).
const NVINFER: &[&str] = &["libnvinfer.so.10", "libnvinfer.so.8", "libnvinfer.so"];
const LIBCUDA: &str = "libcuda.so.1";

/// `CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_{MAJOR,MINOR}` in `cuda.h`.
const CC_MAJOR: c_int = 75;
const CC_MINOR: c_int = 76;

/// CUDA device `ordinal` (0 is the first), or why it cannot be queried.
pub fn cuda_device(ordinal: u32) -> Result<GpuDevice, String> {
    type Queried = Vec<(u32, Result<GpuDevice, String>)>;
    static DEVICES: OnceLock<std::sync::Mutex<Queried>> = OnceLock::new();
    let cache = DEVICES.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, r)) = cache.iter().find(|(o, _)| *o == ordinal) {
        return r.clone();
    }
    let r = query_cuda_device(ordinal);
    cache.push((ordinal, r.clone()));
    r
}

fn query_cuda_device(ordinal: u32) -> Result<GpuDevice, String> {
    type CuInit = unsafe extern "C" fn(c_uint) -> c_int;
    type CuDeviceGet = unsafe extern "C" fn(*mut c_int, c_int) -> c_int;
    type CuDeviceGetName = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;
    type CuDeviceGetAttribute = unsafe extern "C" fn(*mut c_int, c_int, c_int) -> c_int;
    type CuGetErrorString = unsafe extern "C" fn(c_int, *mut *const c_char) -> c_int;

    let lib = open(&[LIBCUDA])?;
    let ordinal = c_int::try_from(ordinal).map_err(|_| format!("no CUDA device {ordinal}"))?;
    // SAFETY: these are the CUDA driver API's C signatures (cuda.h), unchanged since CUDA 2;
    // every pointer passed points to live memory of the size given.
    unsafe {
        let init: libloading::Symbol<CuInit> = symbol(&lib, LIBCUDA, b"cuInit\0")?;
        let get: libloading::Symbol<CuDeviceGet> = symbol(&lib, LIBCUDA, b"cuDeviceGet\0")?;
        let get_name: libloading::Symbol<CuDeviceGetName> =
            symbol(&lib, LIBCUDA, b"cuDeviceGetName\0")?;
        let get_attr: libloading::Symbol<CuDeviceGetAttribute> =
            symbol(&lib, LIBCUDA, b"cuDeviceGetAttribute\0")?;
        let error_string: Option<libloading::Symbol<CuGetErrorString>> =
            symbol(&lib, LIBCUDA, b"cuGetErrorString\0").ok();
        let check = |what: &str, code: c_int| -> Result<(), String> {
            if code == 0 {
                return Ok(());
            }
            let mut text: *const c_char = std::ptr::null();
            let described = error_string
                .as_ref()
                .is_some_and(|f| f(code, &mut text) == 0 && !text.is_null());
            let text = if described {
                CStr::from_ptr(text).to_string_lossy().into_owned()
            } else {
                "unknown error".to_string()
            };
            Err(format!("{what} failed: CUDA error {code} ({text})"))
        };
        check("cuInit", init(0))?;
        let mut device: c_int = 0;
        check(
            &format!("cuDeviceGet({ordinal})"),
            get(&mut device, ordinal),
        )?;
        let mut name = [0 as c_char; 256];
        check(
            "cuDeviceGetName",
            get_name(name.as_mut_ptr(), name.len() as c_int - 1, device),
        )?;
        let (mut major, mut minor): (c_int, c_int) = (0, 0);
        check(
            "cuDeviceGetAttribute",
            get_attr(&mut major, CC_MAJOR, device),
        )?;
        check(
            "cuDeviceGetAttribute",
            get_attr(&mut minor, CC_MINOR, device),
        )?;
        let name = CStr::from_ptr(name.as_ptr())
            .to_string_lossy()
            .trim()
            .to_string();
        std::mem::forget(lib);
        Ok(GpuDevice {
            name,
            compute_capability: (major.max(0) as u32, minor.max(0) as u32),
        })
    }
}

/// TensorRT's version, e.g. "10.3.0", from the `libnvinfer` the dynamic loader finds, or why not.
pub fn tensorrt_version() -> Result<String, String> {
    static VERSION: OnceLock<Result<String, String>> = OnceLock::new();
    VERSION
        .get_or_init(|| {
            type GetVersion = unsafe extern "C" fn() -> i32;
            let lib = open(NVINFER)?;
            // SAFETY: `getInferLibVersion` is `extern "C" int32_t getInferLibVersion() noexcept`
            // in every TensorRT release (NvInferRuntime.h).
            let version = unsafe {
                let f: libloading::Symbol<GetVersion> =
                    symbol(&lib, "libnvinfer", b"getInferLibVersion\0")?;
                f()
            };
            std::mem::forget(lib);
            Ok(tensorrt_version_string(version))
        })
        .clone()
}

/// `getInferLibVersion()`'s integer as `major.minor.patch`: TensorRT 10 and later encode
/// `major * 10000 + minor * 100 + patch`, earlier releases `major * 1000 + minor * 100 + patch`.
pub fn tensorrt_version_string(v: i32) -> String {
    let v = v.max(0);
    let (major, minor) = if v >= 100_000 {
        (v / 10_000, v / 100 % 100)
    } else {
        (v / 1000, v / 100 % 10)
    };
    format!("{major}.{minor}.{}", v % 100)
}

/// The first of `names` the dynamic loader can open; the error lists why each failed.
fn open(names: &[&str]) -> Result<libloading::Library, String> {
    let mut reasons = Vec::new();
    for name in names {
        // SAFETY: loading runs the library's initializers; these are NVIDIA's system libraries,
        // which ONNX Runtime's GPU providers load the same way.
        match unsafe { libloading::Library::new(*name) } {
            Ok(lib) => return Ok(lib),
            Err(e) => reasons.push(loader_reason(&e)),
        }
    }
    Err(reasons.join("; "))
}

/// `dlopen`'s own message ("libcuda.so.1: cannot open shared object file: ..."), without
/// libloading's wrapper text.
fn loader_reason(e: &libloading::Error) -> String {
    std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_else(|| e.to_string())
}

/// # Safety
/// `T` must be the symbol's true type.
unsafe fn symbol<'l, T>(
    lib: &'l libloading::Library,
    lib_name: &str,
    name: &[u8],
) -> Result<libloading::Symbol<'l, T>, String> {
    lib.get(name).map_err(|e| {
        let shown = String::from_utf8_lossy(name.strip_suffix(b"\0").unwrap_or(name)).into_owned();
        format!("{lib_name} has no {shown}: {}", loader_reason(&e))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tensorrt_versions() {
        assert_eq!(tensorrt_version_string(100_300), "10.3.0");
        assert_eq!(tensorrt_version_string(101_305), "10.13.5");
        assert_eq!(tensorrt_version_string(8_601), "8.6.1");
        assert_eq!(tensorrt_version_string(8_502), "8.5.2");
        assert_eq!(tensorrt_version_string(-1), "0.0.0");
    }

    #[test]
    fn gpu_cache_key() {
        let orin = GpuDevice {
            name: "Orin".into(),
            compute_capability: (8, 7),
        };
        assert_eq!(orin.cache_key(), "Orin sm87");
    }

    #[test]
    fn missing_library_names_it() {
        let err = open(&["libw2v-no-such-library.so.1"]).unwrap_err();
        assert!(err.contains("libw2v-no-such-library.so.1"), "{err}");
    }
}
