//! The ONNX Runtime shared library: where to find it, loading it once per process, and asking it
//! its version and the execution providers it offers.
//!
//! All of the ONNX Runtime backend's `unsafe` code is here, each block with the reason it is sound.
#![deny(clippy::undocumented_unsafe_blocks)]

use std::ffi::OsStr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;

use super::ORT_DYLIB_PATH;
use crate::backend::BackendError;

/// The library file name looked for in `.ort/lib/` and beside the executable.
const LIBRARY_FILE: &str = "libonnxruntime.so";

/// How to fix a missing or unusable library; ends every [`BackendError::OrtLibrary`] message.
const HOW_TO_FIX: &str =
    "run tools/fetch-ort.sh or set ORT_DYLIB_PATH to an ONNX Runtime (>= 1.17) \
                          libonnxruntime.so";

/// Where to load ONNX Runtime from, in this order:
///
/// 1. `ORT_DYLIB_PATH`, when set and not empty (an error if no file is there);
/// 2. `.ort/lib/libonnxruntime.so` in the current directory or any of its parents (where
///    `tools/fetch-ort.sh` puts it in a checkout);
/// 3. beside the running executable: `<exe dir>/libonnxruntime.so`, `<exe dir>/../lib/libonnxruntime.so`;
/// 4. `.ort/lib/libonnxruntime.so` in any parent of the executable's folder (a `target/` build run
///    from elsewhere).
pub fn find_ort_library() -> Result<PathBuf, BackendError> {
    let env = std::env::var_os(ORT_DYLIB_PATH);
    let cwd = std::env::current_dir().ok();
    let exe = std::env::current_exe().ok();
    find_ort_library_in(env.as_deref(), cwd.as_deref(), exe.as_deref())
}

/// [`find_ort_library`] with its inputs spelled out: the value of `ORT_DYLIB_PATH`, the current
/// directory and the path of the running executable.
pub fn find_ort_library_in(
    env_value: Option<&OsStr>,
    cwd: Option<&Path>,
    exe: Option<&Path>,
) -> Result<PathBuf, BackendError> {
    let fail = |reason: String| BackendError::OrtLibrary {
        reason: format!("{reason}; {HOW_TO_FIX}"),
    };
    if let Some(value) = env_value.filter(|v| !v.is_empty()) {
        let path = Path::new(value);
        // Make it absolute: `ort` would otherwise try a relative path beside the executable first.
        let path = match cwd {
            Some(cwd) if path.is_relative() => cwd.join(path),
            _ => path.to_path_buf(),
        };
        return if path.is_file() {
            Ok(path)
        } else if path.is_dir() {
            Err(fail(format!(
                "{ORT_DYLIB_PATH}={} is a directory, not the library file",
                path.display()
            )))
        } else {
            Err(fail(format!(
                "{ORT_DYLIB_PATH}={}: no such file",
                path.display()
            )))
        };
    }
    let mut looked = Vec::new();
    let mut candidates = Vec::new();
    if let Some(cwd) = cwd {
        candidates.extend(
            cwd.ancestors()
                .map(|d| d.join(".ort/lib").join(LIBRARY_FILE)),
        );
        looked.push(format!(
            "{}/.ort/lib and its parents' .ort/lib",
            cwd.display()
        ));
    }
    if let Some(dir) = exe.and_then(Path::parent) {
        candidates.push(dir.join(LIBRARY_FILE));
        candidates.extend(dir.parent().map(|p| p.join("lib").join(LIBRARY_FILE)));
        candidates.extend(
            dir.ancestors()
                .skip(1)
                .map(|d| d.join(".ort/lib").join(LIBRARY_FILE)),
        );
        looked.push(format!(
            "{dir}, {dir}/../lib, .ort/lib above {dir}",
            dir = dir.display()
        ));
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        fail(format!(
            "{LIBRARY_FILE} not found ({ORT_DYLIB_PATH} is not set; looked in {})",
            looked.join("; ")
        ))
    })
}

/// ONNX Runtime, loaded and initialized for this process.
pub(super) struct Runtime {
    pub(super) env: Environment,
    library: PathBuf,
}

static RUNTIME: OnceLock<Result<Runtime, String>> = OnceLock::new();

/// The process's ONNX Runtime, initializing it on first use. A failure is remembered: `ort` can
/// load only one library per process anyway.
pub(super) fn runtime() -> Result<&'static Runtime, BackendError> {
    RUNTIME
        .get_or_init(init_runtime)
        .as_ref()
        .map_err(|reason| BackendError::OrtLibrary {
            reason: reason.clone(),
        })
}

fn init_runtime() -> Result<Runtime, String> {
    let library = match find_ort_library() {
        Ok(p) => p,
        Err(BackendError::OrtLibrary { reason }) => return Err(reason),
        Err(e) => return Err(e.to_string()),
    };
    tracing::debug!(library = %library.display(), "ort: loading ONNX Runtime");
    // `ort` checks the file, its `OrtGetApiBase` and its version and returns errors for those, but
    // a few later steps `expect`; keep any such panic from escaping.
    let built = catch_unwind(AssertUnwindSafe(|| -> Result<Environment, String> {
        let builder = ort::init_from(&library).map_err(|e| describe_load_error(&e))?;
        builder
            .with_name("w2v")
            .with_telemetry(false)
            .build()
            .map_err(|e| {
                format!(
                    "cannot initialize ONNX Runtime from {}: {e}",
                    library.display()
                )
            })
    }));
    let env = match built {
        Ok(Ok(env)) => env,
        Ok(Err(reason)) => return Err(format!("{reason}; {HOW_TO_FIX}")),
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("unknown panic");
            return Err(format!(
                "loading {} failed: {msg}; {HOW_TO_FIX}",
                library.display()
            ));
        }
    };
    let runtime = Runtime { env, library };
    tracing::info!(
        library = %runtime.library.display(),
        version = %library_version(&runtime.library).unwrap_or_else(|| "unknown".into()),
        "ort: ONNX Runtime loaded"
    );
    Ok(runtime)
}

/// `ort`'s message, plus what `dlerror` said when `dlopen` failed (`ort` only says "dlopen failed").
fn describe_load_error(e: &ort::LoadDynamicError) -> String {
    let mut msg = e.to_string();
    if let ort::LoadDynamicError::Dlopen { error, .. } = e {
        let mut source = std::error::Error::source(error);
        while let Some(s) = source {
            msg.push_str(": ");
            msg.push_str(&s.to_string());
            source = s.source();
        }
    }
    msg
}

/// The version of the ONNX Runtime library this process uses (e.g. "1.32.0"), loading it if
/// needed; "unknown" when the library does not say.
pub fn ort_version() -> Result<String, BackendError> {
    let runtime = runtime()?;
    Ok(library_version(&runtime.library).unwrap_or_else(|| "unknown".into()))
}

/// The path of the ONNX Runtime library this process uses, loading it if needed.
pub fn ort_library() -> Result<PathBuf, BackendError> {
    Ok(runtime()?.library.clone())
}

fn library_version(library: &Path) -> Option<String> {
    loaded_library_version(library).or_else(|| version_from_file_name(library))
}

/// `1.32.0` from `libonnxruntime.so.1.32.0` (following symlinks).
fn version_from_file_name(library: &Path) -> Option<String> {
    let real = std::fs::canonicalize(library).ok()?;
    let name = real.file_name()?.to_str()?;
    let version = name.strip_prefix(LIBRARY_FILE)?.strip_prefix('.')?;
    (!version.is_empty()).then(|| version.to_string())
}

/// Ask the already-loaded library itself (`OrtGetApiBase()->GetVersionString()`); `ort` keeps this
/// to itself in rc.15, and the build-info string of the official builds carries no version.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn loaded_library_version(library: &Path) -> Option<String> {
    use std::ffi::{c_char, c_int, c_void, CStr, CString};
    use std::os::unix::ffi::OsStrExt;

    const RTLD_LAZY: c_int = 0x1;
    const RTLD_NOLOAD: c_int = 0x4;
    #[link(name = "dl")]
    extern "C" {
        fn dlopen(filename: *const c_char, flags: c_int) -> *mut c_void;
        fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
        fn dlclose(handle: *mut c_void) -> c_int;
    }
    type GetApiBase = unsafe extern "C" fn() -> *const ort::sys::OrtApiBase;

    let c_path = CString::new(library.as_os_str().as_bytes()).ok()?;
    // SAFETY: with RTLD_NOLOAD, dlopen only returns (and references) a library that `ort` already
    // loaded from this very path; it loads nothing and runs no initializers.
    let handle = unsafe { dlopen(c_path.as_ptr(), RTLD_LAZY | RTLD_NOLOAD) };
    if handle.is_null() {
        return None;
    }
    // SAFETY: `handle` is a live handle; the symbol name is NUL-terminated.
    let symbol = unsafe { dlsym(handle, c"OrtGetApiBase".as_ptr()) };
    let version = if symbol.is_null() {
        None
    } else {
        // SAFETY: `OrtGetApiBase` has this signature in every ONNX Runtime release; `ort` has
        // already called it on this library. The version string is static, NUL-terminated.
        unsafe {
            let get_api_base = std::mem::transmute::<*mut c_void, GetApiBase>(symbol);
            let base = get_api_base();
            if base.is_null() {
                None
            } else {
                let s = ((*base).GetVersionString)();
                (!s.is_null()).then(|| CStr::from_ptr(s).to_string_lossy().into_owned())
            }
        }
    };
    // SAFETY: releases the reference taken above; `ort` still holds its own.
    unsafe { dlclose(handle) };
    version
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn loaded_library_version(_library: &Path) -> Option<String> {
    None
}

/// The execution providers the ONNX Runtime library offers (`GetAvailableProviders`: the ones it
/// was built with, e.g. `["AzureExecutionProvider", "CPUExecutionProvider"]` for the PyPI CPU
/// build), in its order. Loads the library as [`crate::backend::ort::ort_library`] does and fails
/// as it does, with [`crate::BackendError::OrtLibrary`].
/// A provider being listed does not mean it works here: CUDA and TensorRT also need their
/// provider libraries, the GPU driver and the CUDA/TensorRT libraries at session creation.
pub fn ort_available_providers() -> Result<Vec<String>, crate::BackendError> {
    use std::ffi::{c_char, c_int, CStr};

    // Loads and initializes the library through w2v's own path search first, so `ort::api()`
    // below never falls back to `ort`'s default search (which would panic if that failed).
    ort_library()?;
    let api = ort::api();
    let mut list: *mut *mut c_char = std::ptr::null_mut();
    let mut count: c_int = 0;
    // SAFETY: `GetAvailableProviders` writes an array of `count` NUL-terminated strings owned by
    // ONNX Runtime, released below with `ReleaseAvailableProviders`.
    let status = unsafe { (api.GetAvailableProviders)(&mut list, &mut count) };
    if !status.0.is_null() {
        // SAFETY: a non-null status is a live `OrtStatus` whose message is a NUL-terminated
        // string valid until the status is released.
        let message = unsafe {
            let m = (api.GetErrorMessage)(status.0);
            let text = if m.is_null() {
                "unknown error".to_string()
            } else {
                CStr::from_ptr(m).to_string_lossy().into_owned()
            };
            (api.ReleaseStatus)(status.0);
            text
        };
        return Err(crate::BackendError::OrtLibrary {
            reason: format!("its GetAvailableProviders failed: {message}"),
        });
    }
    if list.is_null() {
        return Ok(Vec::new());
    }
    let count = usize::try_from(count).unwrap_or(0);
    // SAFETY: `list` holds `count` valid C strings (see above).
    let names = (0..count)
        .map(|i| unsafe {
            let p = *list.add(i);
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        })
        .filter(|s| !s.is_empty())
        .collect();
    // SAFETY: releases exactly the array obtained above; its status is always null (success).
    let status = unsafe { (api.ReleaseAvailableProviders)(list, count as c_int) };
    if !status.0.is_null() {
        // SAFETY: as above.
        unsafe { (api.ReleaseStatus)(status.0) };
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn version_from_versioned_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("libonnxruntime.so.1.32.0");
        std::fs::write(&real, b"").unwrap();
        std::os::unix::fs::symlink("libonnxruntime.so.1.32.0", dir.path().join(LIBRARY_FILE))
            .unwrap();
        assert_eq!(
            version_from_file_name(&dir.path().join(LIBRARY_FILE)).as_deref(),
            Some("1.32.0")
        );
        std::fs::write(dir.path().join("other.so"), b"").unwrap();
        assert_eq!(version_from_file_name(&dir.path().join("other.so")), None);
    }
}
