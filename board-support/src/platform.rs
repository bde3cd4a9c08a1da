//! What machine this is: Jetson model, L4T and JetPack release, CPU model and SIMD features,
//! memory and (on a Jetson) the nvpmodel power mode.
//!
//! Everything is read from plain files so that [`Platform::detect_in`] can be pointed at a fixture
//! tree; the parsers are public pure functions over the files' contents. Nothing here fails: a
//! missing or unreadable file only leaves the matching field `None`.

use std::fs;
use std::io;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde::Serialize;

/// A summary of the machine, as `w2v doctor` reports it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Platform {
    /// Machine architecture as `uname -m` names it (`x86_64`, `aarch64`, `arm`, `x86`), read from
    /// `/proc/sys/kernel/arch` or inferred from `/proc/cpuinfo`; [`Platform::detect`] falls back
    /// to the architecture this binary was built for.
    pub arch: Option<String>,
    /// The device-tree `model` string of any device-tree board (Jetson, Raspberry Pi, ...).
    pub device_model: Option<String>,
    /// Present exactly when this is an NVIDIA Jetson (Tegra) board.
    pub jetson: Option<JetsonInfo>,
    pub cpu: CpuInfo,
    pub memory: Option<MemInfo>,
    /// `nvpmodel -q`; only [`Platform::detect`] on a Jetson fills this (it runs a command).
    pub power_mode: Option<PowerMode>,
}

/// Jetson-specific facts.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct JetsonInfo {
    /// E.g. "NVIDIA Jetson Orin Nano Developer Kit".
    pub model: Option<String>,
    /// The Tegra SoC from the device-tree `compatible` list, e.g. "tegra234" (Orin),
    /// "tegra194" (Xavier), "tegra210" (Nano, TX1), "tegra186" (TX2).
    pub soc: Option<String>,
    /// From `/etc/nv_tegra_release`.
    pub l4t: Option<L4tRelease>,
    /// The JetPack release that ships this L4T, from [`jetpack_for_l4t`]; e.g. "6.2", or "5.1.x"
    /// when only the family is known.
    pub jetpack: Option<String>,
}

/// An L4T (Jetson Linux) release, e.g. R36.4.4.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct L4tRelease {
    /// "36.4.4".
    pub version: String,
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
    pub board: Option<String>,
    pub gcid: Option<String>,
    pub date: Option<String>,
}

/// CPU model and the SIMD features that matter for inference kernels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CpuInfo {
    /// x86 `model name`; on ARM the core named by implementer/part (e.g. "ARM Cortex-A78AE"),
    /// else the kernel's `model name` line.
    pub model: Option<String>,
    /// Online logical CPUs (`processor` entries in `/proc/cpuinfo`).
    pub logical_cores: Option<usize>,
    /// CPUs present (`/sys/devices/system/cpu/present`), including ones nvpmodel took offline.
    pub cores_present: Option<usize>,
    /// The interesting features present, under the kernel's names, in a fixed order:
    /// x86 `sse4_1 … avx2 fma avx512f …`, ARM `neon asimd fphp asimdhp asimddp asimdrdm i8mm …`.
    /// `asimd` is aarch64's name for NEON; see [`CpuInfo::has`].
    pub features: Vec<String>,
}

/// Memory from `/proc/meminfo`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct MemInfo {
    pub total_bytes: u64,
    /// `MemAvailable` (absent on kernels before 3.14).
    pub available_bytes: Option<u64>,
    pub swap_total_bytes: Option<u64>,
}

/// A Jetson power mode as `nvpmodel -q` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PowerMode {
    /// E.g. "MAXN", "15W", "MAXN_SUPER".
    pub name: String,
    /// The mode number (the id `nvpmodel -m` takes), when printed.
    pub id: Option<u32>,
}

/// x86 features reported, in this order.
const X86_FEATURES: &[&str] = &[
    "sse4_1",
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "amx_bf16",
    "amx_int8",
];

/// ARM features reported, in this order. `neon` is the 32-bit name, `asimd` the aarch64 one;
/// `asimddp` is the int8 dot product (SDOT/UDOT), `i8mm` the int8 matrix multiply.
const ARM_FEATURES: &[&str] = &[
    "neon", "asimd", "fphp", "asimdhp", "asimddp", "asimdrdm", "i8mm", "bf16", "sve", "sve2",
];

/// (implementer, part) → core name, for the cores found on Jetson boards and a few common others.
const ARM_PARTS: &[(u32, u32, &str)] = &[
    (0x41, 0xd03, "ARM Cortex-A53"),
    (0x41, 0xd04, "ARM Cortex-A35"),
    (0x41, 0xd05, "ARM Cortex-A55"),
    (0x41, 0xd07, "ARM Cortex-A57"), // Jetson Nano, TX1, TX2
    (0x41, 0xd08, "ARM Cortex-A72"),
    (0x41, 0xd0b, "ARM Cortex-A76"),
    (0x41, 0xd0c, "ARM Neoverse-N1"),
    (0x41, 0xd41, "ARM Cortex-A78"),
    (0x41, 0xd42, "ARM Cortex-A78AE"), // Jetson Orin
    (0x41, 0xd4f, "ARM Neoverse-V2"),  // Grace, Jetson Thor
    (0x4e, 0x003, "NVIDIA Denver 2"),  // Jetson TX2
    (0x4e, 0x004, "NVIDIA Carmel"),    // Jetson Xavier
];

impl CpuInfo {
    /// Whether `feature` (a kernel feature name, case-insensitive) is present; `neon` and `asimd`
    /// are the same thing, and `dotprod` means `asimddp`.
    pub fn has(&self, feature: &str) -> bool {
        let want = feature.to_ascii_lowercase();
        let alias = match want.as_str() {
            "neon" => Some("asimd"),
            "asimd" => Some("neon"),
            "dotprod" => Some("asimddp"),
            _ => None,
        };
        self.features
            .iter()
            .any(|f| *f == want || Some(f.as_str()) == alias)
    }
}

impl Platform {
    /// Detects the machine this process runs on (reads `/proc`, `/etc`, `/sys`; on a Jetson also
    /// runs `nvpmodel -q` if it is installed).
    pub fn detect() -> Platform {
        let mut platform = Platform::detect_in(Path::new("/"));
        if platform.arch.is_none() {
            platform.arch = Some(std::env::consts::ARCH.to_string());
        }
        if platform.is_jetson() {
            platform.power_mode = query_power_mode();
        }
        platform
    }

    /// Detects the machine whose filesystem is at `root` (`/` for this one, a fixture tree in
    /// tests). Runs no commands, so `power_mode` is always `None`.
    pub fn detect_in(root: &Path) -> Platform {
        let read = |rel: &str| read_file(&root.join(rel));
        let read_text = |rel: &str| read(rel).map(|b| String::from_utf8_lossy(&b).into_owned());

        let device_model = read("proc/device-tree/model")
            .or_else(|| read("sys/firmware/devicetree/base/model"))
            .and_then(|b| parse_device_tree_string(&b));
        let compatible = read("proc/device-tree/compatible")
            .or_else(|| read("sys/firmware/devicetree/base/compatible"))
            .map(|b| parse_device_tree_string_list(&b))
            .unwrap_or_default();
        let l4t = read_text("etc/nv_tegra_release").and_then(|t| parse_l4t_release(&t));

        let soc = compatible
            .iter()
            .find_map(|c| c.strip_prefix("nvidia,tegra"))
            .map(|rest| format!("tegra{rest}"));
        let model_says_jetson = device_model
            .as_deref()
            .is_some_and(|m| m.to_ascii_lowercase().contains("jetson"));
        let jetson = (model_says_jetson || soc.is_some() || l4t.is_some()).then(|| JetsonInfo {
            model: device_model.clone(),
            soc,
            jetpack: l4t
                .as_ref()
                .and_then(|r| jetpack_for_l4t(r.major, r.minor, r.patch))
                .map(str::to_string),
            l4t,
        });

        let cpuinfo = read_text("proc/cpuinfo").unwrap_or_default();
        let mut cpu = parse_cpuinfo(&cpuinfo);
        cpu.cores_present = read_text("sys/devices/system/cpu/present")
            .and_then(|t| parse_cpu_list(&t))
            .or(cpu.logical_cores);
        let arch = read_text("proc/sys/kernel/arch")
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .or_else(|| arch_from_cpuinfo(&cpuinfo).map(str::to_string));
        let memory = read_text("proc/meminfo").and_then(|t| parse_meminfo(&t));

        Platform {
            arch,
            device_model,
            jetson,
            cpu,
            memory,
            power_mode: None,
        }
    }

    pub fn is_jetson(&self) -> bool {
        self.jetson.is_some()
    }
}

/// A file's bytes, or `None` when it is absent or unreadable (logged at debug level unless simply
/// absent).
fn read_file(path: &Path) -> Option<Vec<u8>> {
    match fs::read(path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            tracing::debug!(path = %path.display(), "board-support: cannot read: {e}");
            None
        }
    }
}

/// A device-tree string property: up to the first NUL, trimmed; `None` when empty.
pub fn parse_device_tree_string(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    let s = String::from_utf8_lossy(&bytes[..end]).trim().to_string();
    (!s.is_empty()).then_some(s)
}

/// A device-tree string-list property (`compatible`): NUL-separated strings.
pub fn parse_device_tree_string_list(bytes: &[u8]) -> Vec<String> {
    bytes
        .split(|&b| b == 0)
        .map(|s| String::from_utf8_lossy(s).trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Parses `/etc/nv_tegra_release`, whose first line reads
/// `# R36 (release), REVISION: 4.4, GCID: 38415262, BOARD: generic, EABI: aarch64, DATE: …`.
pub fn parse_l4t_release(text: &str) -> Option<L4tRelease> {
    let line = text.lines().map(str::trim).find(|l| l.starts_with("# R"))?;
    let rest = &line["# R".len()..];
    let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let major: u32 = rest[..digits].parse().ok()?;

    let (mut revision, mut gcid, mut board, mut date) = (None, None, None, None);
    for field in rest.split(',').skip(1) {
        let Some((key, value)) = field.split_once(':') else {
            continue;
        };
        let value = Some(value.trim().to_string()).filter(|v| !v.is_empty());
        match key.trim() {
            "REVISION" => revision = value,
            "GCID" => gcid = value,
            "BOARD" => board = value,
            "DATE" => date = value,
            _ => {}
        }
    }
    let revision = revision?;
    let mut parts = revision.split('.');
    let minor: u32 = parts.next()?.trim().parse().ok()?;
    let patch: u32 = match parts.next() {
        Some(p) => p.trim().parse().ok()?,
        None => 0,
    };
    Some(L4tRelease {
        version: format!("{major}.{minor}.{patch}"),
        major,
        minor,
        patch,
        board,
        gcid,
        date,
    })
}

/// L4T (Jetson Linux) release → the JetPack release that ships it. The only place that knows this
/// mapping; source: NVIDIA's JetPack archive and Jetson Linux release notes
/// (developer.nvidia.com/embedded/jetpack-archive). Rows are (major, minor or `ANY`, patch range,
/// JetPack); the first match wins, so exact rows come before the family fallbacks ("4.6.x" etc.)
/// that cover releases newer than this table.
#[rustfmt::skip]
const JETPACK_FOR_L4T: &[(u32, Option<u32>, RangeInclusive<u32>, &str)] = &[
    // JetPack 6 (Orin only; Ubuntu 22.04, kernel 5.15)
    (36, Some(4), 4..=4, "6.2.1"),
    (36, Some(4), 3..=3, "6.2"),
    (36, Some(4), 0..=2, "6.1"),
    (36, Some(4), ALL, "6.2.x"),
    (36, Some(3), ALL, "6.0"),
    (36, Some(2), ALL, "6.0 DP"),
    // JetPack 5 (Xavier, Orin; Ubuntu 20.04, kernel 5.10)
    (35, Some(6), 1..=1, "5.1.5"),
    (35, Some(6), 0..=0, "5.1.4"),
    (35, Some(5), 0..=0, "5.1.3"),
    (35, Some(4), 1..=1, "5.1.2"),
    (35, Some(3), 1..=1, "5.1.1"),
    (35, Some(2), 1..=1, "5.1"),
    (35, Some(1), 0..=0, "5.0.2"),
    (35, ANY, ALL, "5.1.x"),
    // JetPack 4 (Nano, TX1, TX2, Xavier; Ubuntu 18.04, kernel 4.9)
    (32, Some(7), 6..=6, "4.6.6"),
    (32, Some(7), 5..=5, "4.6.5"),
    (32, Some(7), 4..=4, "4.6.4"),
    (32, Some(7), 3..=3, "4.6.3"),
    (32, Some(7), 2..=2, "4.6.2"),
    (32, Some(7), 1..=1, "4.6.1"),
    (32, Some(7), ALL, "4.6.x"),
    (32, Some(6), 1..=1, "4.6"),
    (32, Some(5), 1..=1, "4.5.1"),
    (32, Some(5), 0..=0, "4.5"),
    (32, Some(4), 4..=4, "4.4.1"),
    (32, Some(4), 3..=3, "4.4"),
];
const ANY: Option<u32> = None;
const ALL: RangeInclusive<u32> = 0..=u32::MAX;

/// The JetPack release for L4T `major.minor.patch`, from the table above; `None` for releases it
/// does not know.
pub fn jetpack_for_l4t(major: u32, minor: u32, patch: u32) -> Option<&'static str> {
    JETPACK_FOR_L4T
        .iter()
        .find(|(ma, mi, patches, _)| {
            *ma == major && mi.is_none_or(|mi| mi == minor) && patches.contains(&patch)
        })
        .map(|row| row.3)
}

/// `key : value` lines of a `/proc` file.
fn key_values(text: &str) -> impl Iterator<Item = (&str, &str)> {
    text.lines().filter_map(|l| {
        let (k, v) = l.split_once(':')?;
        Some((k.trim(), v.trim()))
    })
}

/// Parses `/proc/cpuinfo` (x86 and ARM layouts). `cores_present` is left `None`.
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut processors = 0usize;
    let mut model_name = None;
    let mut hardware = None;
    let mut implementer = None;
    let mut part = None;
    let mut flags: Vec<&str> = Vec::new();
    let mut have_flags = false;
    for (key, value) in key_values(text) {
        match key {
            "processor" => processors += 1,
            "model name" if model_name.is_none() && !value.is_empty() => {
                model_name = Some(value.to_string())
            }
            "Hardware" if hardware.is_none() && !value.is_empty() => {
                hardware = Some(value.to_string())
            }
            "CPU implementer" if implementer.is_none() => implementer = parse_hex(value),
            "CPU part" if part.is_none() => part = parse_hex(value),
            // The first CPU's list; on big.LITTLE machines the cores share the ISA features.
            "flags" | "Features" if !have_flags => {
                have_flags = true;
                flags = value.split_whitespace().collect();
            }
            _ => {}
        }
    }
    let part_name = implementer.zip(part).and_then(|(imp, part)| {
        ARM_PARTS
            .iter()
            .find(|(i, p, _)| *i == imp && *p == part)
            .map(|row| row.2.to_string())
    });
    let features = X86_FEATURES
        .iter()
        .chain(ARM_FEATURES)
        .filter(|f| flags.contains(f))
        .map(|f| f.to_string())
        .collect();
    CpuInfo {
        model: part_name.or(model_name).or(hardware),
        logical_cores: (processors > 0).then_some(processors),
        cores_present: None,
        features,
    }
}

fn parse_hex(s: &str) -> Option<u32> {
    let s = s.trim();
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    u32::from_str_radix(digits, 16).ok()
}

/// The machine architecture (`uname -m` spelling) implied by `/proc/cpuinfo`, if it says.
pub fn arch_from_cpuinfo(text: &str) -> Option<&'static str> {
    let mut cpu_architecture = None;
    for (key, value) in key_values(text) {
        let mut words = value.split_whitespace();
        match key {
            "flags" => {
                return Some(if words.any(|w| w == "lm") {
                    "x86_64"
                } else {
                    "x86"
                })
            }
            "Features" => {
                let words: Vec<&str> = words.collect();
                if words.contains(&"asimd") {
                    return Some("aarch64");
                }
                if words.iter().any(|w| *w == "thumb" || *w == "neon") {
                    return Some("arm");
                }
            }
            "CPU architecture" if cpu_architecture.is_none() => {
                cpu_architecture = Some(value.trim().to_string())
            }
            _ => {}
        }
    }
    match cpu_architecture.as_deref() {
        Some("8") => Some("aarch64"),
        Some(a) if a.starts_with(|c: char| c.is_ascii_digit()) => Some("arm"),
        _ => None,
    }
}

/// Parses `/proc/meminfo`; `None` without a `MemTotal` line.
pub fn parse_meminfo(text: &str) -> Option<MemInfo> {
    let mut total = None;
    let mut available = None;
    let mut swap_total = None;
    for (key, value) in key_values(text) {
        let slot = match key {
            "MemTotal" => &mut total,
            "MemAvailable" => &mut available,
            "SwapTotal" => &mut swap_total,
            _ => continue,
        };
        if slot.is_none() {
            *slot = meminfo_bytes(value);
        }
    }
    Some(MemInfo {
        total_bytes: total?,
        available_bytes: available,
        swap_total_bytes: swap_total,
    })
}

/// "24684100 kB" → bytes. (The kernel writes "kB" and means KiB.)
fn meminfo_bytes(value: &str) -> Option<u64> {
    let mut words = value.split_whitespace();
    let n: u64 = words.next()?.parse().ok()?;
    let scale = match words.next() {
        None => 1,
        Some("kB") => 1024,
        Some(_) => return None,
    };
    n.checked_mul(scale)
}

/// The number of CPUs in a kernel CPU list such as `0-3,5` (`/sys/devices/system/cpu/present`).
pub fn parse_cpu_list(text: &str) -> Option<usize> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut count = 0usize;
    for range in text.split(',') {
        let range = range.trim();
        let n = match range.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                b.checked_sub(a)?.checked_add(1)?
            }
            None => {
                range.parse::<usize>().ok()?;
                1
            }
        };
        count = count.checked_add(n)?;
    }
    Some(count)
}

/// Parses the output of `nvpmodel -q`: `NV Power Mode: MAXN` then the mode id on its own line
/// (other lines, such as `NVPM WARN` notices, are skipped). `None` without a power-mode line.
pub fn parse_nvpmodel(output: &str) -> Option<PowerMode> {
    let mut lines = output.lines().map(str::trim);
    let name = lines
        .by_ref()
        .find_map(|l| l.strip_prefix("NV Power Mode:"))?
        .trim();
    if name.is_empty() {
        return None;
    }
    let id = lines
        .find(|l| !l.is_empty())
        .and_then(|l| l.parse::<u32>().ok());
    Some(PowerMode {
        name: name.to_string(),
        id,
    })
}

/// Runs `nvpmodel -q` if the tool is installed; `None` when it is absent, fails, or prints
/// something unexpected (logged at debug level). Never an error: most machines have no nvpmodel.
pub fn query_power_mode() -> Option<PowerMode> {
    let exe = find_executable("nvpmodel")?;
    let output = match Command::new(&exe)
        .arg("-q")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
    {
        Ok(o) => o,
        Err(e) => {
            tracing::debug!(exe = %exe.display(), "board-support: cannot run nvpmodel: {e}");
            return None;
        }
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let mode = parse_nvpmodel(&stdout);
    if mode.is_none() {
        tracing::debug!(
            status = %output.status,
            "board-support: no power mode in `nvpmodel -q` output: {:?}",
            stdout.chars().take(80).collect::<String>()
        );
    }
    mode
}

/// `name` on `$PATH` or in the sbin directories (nvpmodel lives in /usr/sbin, which is not on
/// every user's `$PATH`).
fn find_executable(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jetpack_table() {
        assert_eq!(jetpack_for_l4t(36, 4, 3), Some("6.2"));
        assert_eq!(jetpack_for_l4t(36, 4, 4), Some("6.2.1"));
        assert_eq!(jetpack_for_l4t(36, 4, 0), Some("6.1"));
        assert_eq!(jetpack_for_l4t(36, 4, 9), Some("6.2.x"));
        assert_eq!(jetpack_for_l4t(36, 3, 0), Some("6.0"));
        assert_eq!(jetpack_for_l4t(35, 4, 1), Some("5.1.2"));
        assert_eq!(jetpack_for_l4t(35, 2, 1), Some("5.1"));
        assert_eq!(jetpack_for_l4t(35, 9, 0), Some("5.1.x"));
        assert_eq!(jetpack_for_l4t(32, 7, 4), Some("4.6.4"));
        assert_eq!(jetpack_for_l4t(32, 7, 9), Some("4.6.x"));
        assert_eq!(jetpack_for_l4t(32, 6, 1), Some("4.6"));
        assert_eq!(jetpack_for_l4t(28, 2, 1), None);
        assert_eq!(jetpack_for_l4t(37, 0, 0), None);
    }

    #[test]
    fn l4t_release_line() {
        let r = parse_l4t_release(
            "# R36 (release), REVISION: 4.4, GCID: 38415262, BOARD: generic, EABI: aarch64, \
             DATE: Tue Sep 10 20:31:00 UTC 2024\n# KERNEL_VARIANT: oot\n",
        )
        .unwrap();
        assert_eq!((r.major, r.minor, r.patch), (36, 4, 4));
        assert_eq!(r.version, "36.4.4");
        assert_eq!(r.gcid.as_deref(), Some("38415262"));
        assert_eq!(r.board.as_deref(), Some("generic"));
        assert_eq!(r.date.as_deref(), Some("Tue Sep 10 20:31:00 UTC 2024"));
        let r = parse_l4t_release("# R32 (release), REVISION: 1").unwrap();
        assert_eq!(r.version, "32.1.0");
        assert_eq!(parse_l4t_release(""), None);
        assert_eq!(parse_l4t_release("# R (release), REVISION: 4.4"), None);
        assert_eq!(parse_l4t_release("# R36 (release), GCID: 1"), None);
    }

    #[test]
    fn nvpmodel_output() {
        let m = parse_nvpmodel("NV Power Mode: MAXN\n0\n").unwrap();
        assert_eq!((m.name.as_str(), m.id), ("MAXN", Some(0)));
        let m = parse_nvpmodel("NV Power Mode: 15W\n2\n").unwrap();
        assert_eq!((m.name.as_str(), m.id), ("15W", Some(2)));
        let m = parse_nvpmodel("NVPM WARN: fan mode is not set!\nNV Power Mode: 7W\n").unwrap();
        assert_eq!((m.name.as_str(), m.id), ("7W", None));
        assert_eq!(parse_nvpmodel(""), None);
        assert_eq!(parse_nvpmodel("NV Power Mode:\n0\n"), None);
        assert_eq!(parse_nvpmodel("command not found"), None);
    }

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("0-5\n"), Some(6));
        assert_eq!(parse_cpu_list("0-3,5,7-8"), Some(7));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list("x"), None);
    }

    #[test]
    fn feature_aliases() {
        let cpu = CpuInfo {
            features: vec!["asimd".into(), "asimddp".into()],
            ..CpuInfo::default()
        };
        assert!(cpu.has("neon") && cpu.has("ASIMD") && cpu.has("dotprod"));
        assert!(!cpu.has("i8mm") && !cpu.has("avx2"));
    }

    #[test]
    fn meminfo_units() {
        let m = parse_meminfo("MemTotal: 4 kB\nMemAvailable: 2 kB\n").unwrap();
        assert_eq!((m.total_bytes, m.available_bytes), (4096, Some(2048)));
        assert_eq!(m.swap_total_bytes, None);
        assert_eq!(parse_meminfo("MemFree: 4 kB"), None);
        assert_eq!(parse_meminfo("MemTotal: 99999999999999999999 kB"), None);
    }
}
