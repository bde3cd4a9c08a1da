//! `Platform::detect_in` on fixture trees of three Jetson generations and an x86_64 desktop, and
//! `Platform::detect` on this machine.

use std::path::PathBuf;

use w2v_board_support::platform::{arch_from_cpuinfo, parse_cpuinfo};
use w2v_board_support::{parse_nvpmodel, Platform};

fn fixture(board: &str) -> Platform {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/platform")
        .join(board);
    assert!(root.is_dir(), "missing fixture {}", root.display());
    Platform::detect_in(&root)
}

const GIB: u64 = 1 << 30;

#[test]
fn jetson_nano_jetpack_4_6() {
    let p = fixture("jetson-nano-jp46");
    assert_eq!(p.arch.as_deref(), Some("aarch64"));
    assert!(p.is_jetson());
    let j = p.jetson.as_ref().unwrap();
    assert_eq!(j.model.as_deref(), Some("NVIDIA Jetson Nano Developer Kit"));
    assert_eq!(j.soc.as_deref(), Some("tegra210"));
    let l4t = j.l4t.as_ref().unwrap();
    assert_eq!((l4t.major, l4t.minor, l4t.patch), (32, 7, 4));
    assert_eq!(l4t.board.as_deref(), Some("t210ref"));
    assert_eq!(j.jetpack.as_deref(), Some("4.6.4"));

    assert_eq!(p.cpu.model.as_deref(), Some("ARM Cortex-A57"));
    assert_eq!(p.cpu.logical_cores, Some(4));
    assert_eq!(p.cpu.cores_present, Some(4));
    assert_eq!(p.cpu.features, ["asimd"]);
    assert!(p.cpu.has("neon"));
    assert!(!p.cpu.has("asimddp") && !p.cpu.has("asimdhp") && !p.cpu.has("i8mm"));

    let m = p.memory.unwrap();
    assert_eq!(m.total_bytes, 4_059_712 * 1024);
    assert_eq!(m.available_bytes, Some(1_991_548 * 1024));
    assert_eq!(m.swap_total_bytes, Some(2_029_856 * 1024));
    assert_eq!(p.power_mode, None, "detect_in runs no commands");
}

#[test]
fn xavier_nx_jetpack_5_1() {
    let p = fixture("xavier-nx-jp51");
    assert_eq!(p.arch.as_deref(), Some("aarch64"));
    let j = p.jetson.as_ref().expect("a Jetson");
    assert_eq!(
        j.model.as_deref(),
        Some("NVIDIA Jetson Xavier NX Developer Kit")
    );
    assert_eq!(j.soc.as_deref(), Some("tegra194"));
    assert_eq!(j.l4t.as_ref().unwrap().version, "35.4.1");
    assert_eq!(j.jetpack.as_deref(), Some("5.1.2"));

    assert_eq!(p.cpu.model.as_deref(), Some("NVIDIA Carmel"));
    assert_eq!(p.cpu.logical_cores, Some(4), "online cores");
    assert_eq!(
        p.cpu.cores_present,
        Some(6),
        "two cores are off in this power mode"
    );
    assert_eq!(p.cpu.features, ["asimd", "fphp", "asimdhp", "asimdrdm"]);
    assert!(p.cpu.has("asimdhp") && !p.cpu.has("asimddp"));
    assert!(p.memory.unwrap().total_bytes > 6 * GIB);
}

#[test]
fn orin_nano_jetpack_6() {
    let p = fixture("orin-nano-jp6");
    assert_eq!(p.arch.as_deref(), Some("aarch64"));
    let j = p.jetson.as_ref().expect("a Jetson");
    assert_eq!(
        j.model.as_deref(),
        Some("NVIDIA Jetson Orin Nano Developer Kit")
    );
    assert_eq!(j.soc.as_deref(), Some("tegra234"));
    let l4t = j.l4t.as_ref().unwrap();
    assert_eq!(l4t.version, "36.4.4");
    assert_eq!(l4t.gcid.as_deref(), Some("38415262"));
    assert_eq!(l4t.date.as_deref(), Some("Tue Sep 10 20:31:00 UTC 2024"));
    assert_eq!(j.jetpack.as_deref(), Some("6.2.1"));

    assert_eq!(p.cpu.model.as_deref(), Some("ARM Cortex-A78AE"));
    assert_eq!(p.cpu.logical_cores, Some(6));
    assert_eq!(
        p.cpu.features,
        ["asimd", "fphp", "asimdhp", "asimddp", "asimdrdm"]
    );
    assert!(p.cpu.has("dotprod") && p.cpu.has("neon") && !p.cpu.has("i8mm"));
    let m = p.memory.unwrap();
    assert_eq!(m.total_bytes, 7620 * 1024 * 1024);
    assert_eq!(m.available_bytes, Some(4_623_340 * 1024));
}

#[test]
fn x86_desktop_is_not_a_jetson() {
    let p = fixture("x86-desktop");
    assert_eq!(p.arch.as_deref(), Some("x86_64"));
    assert!(!p.is_jetson());
    assert_eq!(p.jetson, None);
    assert_eq!(p.device_model, None);
    assert_eq!(p.cpu.model.as_deref(), Some("AMD EPYC"));
    assert_eq!(p.cpu.logical_cores, Some(2));
    assert_eq!(p.cpu.cores_present, Some(2));
    for f in [
        "avx",
        "avx2",
        "fma",
        "f16c",
        "avx512f",
        "avx512_vnni",
        "avx_vnni",
    ] {
        assert!(p.cpu.has(f), "{f} missing from {:?}", p.cpu.features);
    }
    assert!(!p.cpu.has("neon") && !p.cpu.has("asimddp"));
    let m = p.memory.unwrap();
    assert_eq!(m.total_bytes, 24_684_100 * 1024);
    assert!(m.available_bytes.is_some());

    // The same answer without `proc/sys/kernel/arch` (kernels before 6.1 lack it).
    let cpuinfo = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/platform/x86-desktop/proc/cpuinfo"),
    )
    .unwrap();
    assert_eq!(arch_from_cpuinfo(&cpuinfo), Some("x86_64"));
}

#[test]
fn a_missing_root_gives_an_empty_report() {
    let p = fixture_root_missing();
    assert_eq!(p.arch, None);
    assert_eq!(p.jetson, None);
    assert_eq!(p.memory, None);
    assert_eq!(p.cpu.logical_cores, None);
    assert!(p.cpu.features.is_empty());
}

fn fixture_root_missing() -> Platform {
    Platform::detect_in(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/no-such-root"))
}

#[test]
fn cpuinfo_arch_inference() {
    assert_eq!(
        arch_from_cpuinfo("Features\t: fp asimd evtstrm\n"),
        Some("aarch64")
    );
    assert_eq!(arch_from_cpuinfo("CPU architecture: 8\n"), Some("aarch64"));
    assert_eq!(
        arch_from_cpuinfo(
            "Features\t: half thumb fastmult vfp edsp neon vfpv3\nCPU architecture: 7\n"
        ),
        Some("arm")
    );
    assert_eq!(
        arch_from_cpuinfo("flags\t\t: fpu vme de pse\n"),
        Some("x86")
    );
    assert_eq!(arch_from_cpuinfo(""), None);
    // A 32-bit Raspberry Pi style cpuinfo names its board in `Hardware`, not a core.
    let cpu = parse_cpuinfo("processor\t: 0\nHardware\t: BCM2835\n");
    assert_eq!(cpu.model.as_deref(), Some("BCM2835"));
}

#[test]
fn platform_serializes_for_doctor_json() {
    let p = fixture("orin-nano-jp6");
    let v = serde_json::to_value(&p).unwrap();
    assert_eq!(v["arch"], "aarch64");
    assert_eq!(v["jetson"]["jetpack"], "6.2.1");
    assert_eq!(v["jetson"]["l4t"]["version"], "36.4.4");
    assert_eq!(v["cpu"]["features"][3], "asimddp");
    assert_eq!(v["memory"]["total_bytes"], 7620u64 * 1024 * 1024);
    assert!(v["power_mode"].is_null());
    let v = serde_json::to_value(parse_nvpmodel("NV Power Mode: 15W\n2\n")).unwrap();
    assert_eq!(v, serde_json::json!({"name": "15W", "id": 2}));
}

/// This machine, for real. Only meaningful on a non-Jetson x86_64 Linux host (the development
/// machine and CI).
#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
#[test]
fn detect_on_this_machine() {
    let p = Platform::detect();
    assert_eq!(p.arch.as_deref(), Some("x86_64"));
    assert!(!p.is_jetson(), "{p:?}");
    assert_eq!(p.power_mode, None);
    assert!(p.cpu.logical_cores.unwrap_or(0) >= 1, "{:?}", p.cpu);
    assert!(p.memory.as_ref().is_some_and(|m| m.total_bytes > 0));
}
