//! `tegrastats` lines from JetPack 4, 5 and 6.

use std::path::PathBuf;

use w2v_board_support::{Stat, TegraStats, TegrastatsError, TegrastatsSampler, TelemetrySummary};

fn line(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/tegrastats")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn parse(name: &str) -> TegraStats {
    TegraStats::parse_line(line(name).trim_end()).unwrap()
}

#[test]
fn jetpack_4_nano() {
    let s = parse("jp4-nano.txt");
    assert_eq!(s.timestamp, None);
    let ram = s.ram.as_ref().unwrap();
    assert_eq!((ram.used_mb, ram.total_mb), (2019, 3964));
    assert_eq!((ram.lfb_blocks, ram.lfb_block_mb), (Some(3), Some(4)));
    let swap = s.swap.as_ref().unwrap();
    assert_eq!(
        (swap.used_mb, swap.total_mb, swap.cached_mb),
        (0, 1982, Some(0))
    );

    assert_eq!(s.cpus.len(), 4);
    assert!(s.cpus.iter().all(|c| c.online && c.freq_mhz == Some(1479)));
    let loads: Vec<f32> = s.cpus.iter().map(|c| c.load_pct.unwrap()).collect();
    assert_eq!(loads, [14.0, 8.0, 9.0, 3.0]);
    assert_eq!(s.cpu_load_avg(), Some(8.5));

    let emc = s.emc.as_ref().unwrap();
    assert_eq!((emc.load_pct, emc.freq_mhz), (5.0, Some(1600)));
    let gpu = s.gpu.as_ref().unwrap();
    assert_eq!((gpu.load_pct, gpu.freq_mhz), (0.0, Some(921)));

    assert_eq!(s.temperatures.len(), 6);
    assert_eq!(s.temperatures["PLL"], Some(29.5));
    assert_eq!(s.temperatures["PMIC"], Some(100.0));
    assert_eq!(s.temperatures["thermal"], Some(31.25));
    assert_eq!(s.temperature("cpu"), Some(32.5));
    assert_eq!(s.temperature("GPU"), Some(30.0));

    assert_eq!(s.rails.len(), 3);
    assert_eq!(s.rails["POM_5V_GPU"].current_mw, 40);
    assert_eq!(s.rails["POM_5V_CPU"].average_mw, 361);
    assert_eq!(s.input_power().unwrap().current_mw, 2203);

    assert_eq!(s.other, ["IRAM 0/252kB(lfb 252kB)", "APE 25"]);
}

#[test]
fn jetpack_5_xavier_nx() {
    let s = parse("jp5-xavier-nx.txt");
    assert_eq!(
        s.ram.as_ref().map(|r| (r.used_mb, r.total_mb)),
        Some((2718, 6854))
    );
    assert_eq!(s.swap.as_ref().map(|r| r.total_mb), Some(3427));
    assert_eq!(s.cpus.len(), 6);
    assert_eq!(s.cpus.iter().filter(|c| c.online).count(), 4);
    assert_eq!(s.cpus[4].load_pct, None);
    assert_eq!(s.cpus[5].freq_mhz, None);
    assert_eq!(s.cpus[0].load_pct, Some(2.0));
    assert_eq!(s.cpu_load_avg(), Some(0.75));
    assert_eq!(s.emc.as_ref().unwrap().freq_mhz, Some(2133));
    let gpu = s.gpu.as_ref().unwrap();
    assert_eq!((gpu.load_pct, gpu.freq_mhz), (0.0, Some(305)));

    // -256C: the sensor is off.
    for off in ["CV0", "CV1", "CV2", "GPU"] {
        assert_eq!(s.temperatures[off], None, "{off}");
    }
    assert_eq!(s.temperature("gpu"), None);
    assert_eq!(s.temperatures["CPU"], Some(45.625));
    assert_eq!(s.temperatures["tj"], Some(45.625));
    assert_eq!(s.temperatures["SOC1"], Some(42.406));
    assert_eq!(s.temperatures.len(), 9);

    assert_eq!(s.rails.len(), 3);
    let vin = s.input_power().unwrap();
    assert_eq!((vin.current_mw, vin.average_mw), (4326, 4326));
    assert_eq!(s.rails["VDD_CPU_GPU_CV"].current_mw, 484);
    assert_eq!(s.rails["VDD_SOC"].average_mw, 1373);
    assert_eq!(s.other, ["VIC_FREQ 115", "APE 174"]);
}

#[test]
fn jetpack_6_orin_nano_with_timestamp() {
    let s = parse("jp6-orin-nano.txt");
    assert_eq!(s.timestamp.as_deref(), Some("11-25-2026 10:15:02"));
    let ram = s.ram.as_ref().unwrap();
    assert_eq!(
        (ram.used_mb, ram.total_mb, ram.lfb_blocks),
        (3105, 7620, Some(2))
    );
    assert_eq!(s.cpus.len(), 6);
    assert!(!s.cpus[4].online && !s.cpus[5].online);
    assert_eq!(s.cpus[0].freq_mhz, Some(729));
    assert_eq!(s.emc, None, "JetPack 6 prints no EMC_FREQ here");
    let gpu = s.gpu.as_ref().unwrap();
    assert_eq!((gpu.load_pct, gpu.freq_mhz), (0.0, None));
    assert_eq!(s.temperatures["cpu"], Some(47.5));
    assert_eq!(s.temperatures["soc2"], Some(46.968));
    assert_eq!(s.temperature("GPU"), Some(46.062));
    assert_eq!(s.temperatures.len(), 6);
    assert_eq!(s.input_power().unwrap().current_mw, 4801);
    assert_eq!(s.rails["VDD_SOC"].current_mw, 1440);
    assert!(s.other.is_empty(), "{:?}", s.other);
}

#[test]
fn jetpack_4_tx2_unitless_rails_and_mts() {
    let s = parse("jp4-tx2.txt");
    assert_eq!(
        s.cpus.iter().map(|c| c.online).collect::<Vec<_>>(),
        [true, false, false, true, true, true]
    );
    assert_eq!(s.gpu.as_ref().unwrap().freq_mhz, Some(114));
    assert_eq!(s.temperatures["Tdiode"], Some(34.25));
    assert_eq!(s.temperatures["thermal"], Some(36.2));
    assert_eq!(s.rails.len(), 6);
    assert_eq!(s.rails["VDD_WIFI"].current_mw, 0);
    assert_eq!(s.input_power().unwrap().average_mw, 1906);
    assert_eq!(s.other, ["APE 150", "MTS fg 0% bg 0%"]);
}

#[test]
fn jetpack_5_agx_orin_per_gpc_frequencies() {
    let s = parse("jp5-agx-orin.txt");
    assert_eq!(s.cpus.len(), 12);
    assert_eq!(s.ram.as_ref().unwrap().lfb_blocks, Some(5849));
    let gpu = s.gpu.as_ref().unwrap();
    assert_eq!((gpu.load_pct, gpu.freq_mhz), (0.0, Some(0)));
    assert_eq!(s.rails.len(), 4);
    assert_eq!(s.rails["VDDQ_VDD2_1V8AO"].current_mw, 604);
    assert_eq!(s.input_power(), None, "AGX Orin has no VDD_IN rail");
    assert_eq!(s.temperatures["Tboard"], Some(34.0));
}

#[test]
fn a_logfile() {
    let all: Vec<TegraStats> = TegraStats::parse_lines(&line("jp6-orin-nano.log"))
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(all.len(), 3);
    assert_eq!(all[2].timestamp.as_deref(), Some("11-25-2026 10:15:03"));
    assert_eq!(all[2].gpu.as_ref().unwrap().load_pct, 99.0);
    assert_eq!(all[2].cpu_load_avg(), Some(59.0));
    let vin = all[2].input_power().unwrap();
    assert_eq!((vin.current_mw, vin.average_mw), (9922, 6521));
}

#[test]
fn unknown_sections_are_kept_not_fatal() {
    let s: TegraStats =
        "RAM 1/2MB NVENC 1075 NVDEC off FUTURE_THING 3%@[1,2] CPU [1%@2] weird(token x)"
            .parse()
            .unwrap();
    assert_eq!(s.cpus.len(), 1);
    assert_eq!(
        s.other,
        [
            "NVENC 1075",
            "NVDEC off",
            "FUTURE_THING 3%@[1,2]",
            "weird(token x)"
        ]
    );
    // A known section with a value of the wrong shape is kept as an unknown one.
    let s = TegraStats::parse_line("RAM 1/2MB GR3D_FREQ lots CPU [1%@x]").unwrap();
    assert_eq!(s.gpu, None);
    assert!(s.cpus.is_empty());
    assert_eq!(s.other, ["GR3D_FREQ lots", "CPU [1%@x]"]);
}

#[test]
fn not_tegrastats_is_a_one_line_error() {
    for input in [
        "",
        "   ",
        "Linux 5.15.148-tegra aarch64",
        "tegrastats: command not found\nsecond line",
        "11-25-2026 10:15:02",
        "cpu@47.5C VDD_IN 4801mW/4801mW",
        "RAM lots",
    ] {
        let err = TegraStats::parse_line(input).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("not a tegrastats line: "), "{msg}");
        assert!(!msg.contains('\n'), "{msg}");
        let TegrastatsError::NotTegrastats { start } = &err;
        assert!(input.trim_start().starts_with(start.as_str()), "{start:?}");
    }
    let long = "x".repeat(500);
    let msg = TegraStats::parse_line(&long).unwrap_err().to_string();
    assert!(msg.len() < 100 && msg.contains('…'), "{msg}");
    assert!(TegraStats::parse_lines("RAM 1/2MB\nhello\n")
        .nth(1)
        .unwrap()
        .is_err());
}

#[test]
fn serializes_for_doctor_json() {
    let v = serde_json::to_value(parse("jp5-xavier-nx.txt")).unwrap();
    assert_eq!(v["ram"]["used_mb"], 2718);
    assert_eq!(v["temperatures"]["GPU"], serde_json::Value::Null);
    assert_eq!(v["temperatures"]["CPU"], 45.625);
    assert_eq!(v["rails"]["VDD_IN"]["average_mw"], 4326);
    assert_eq!(v["cpus"][5]["online"], false);
    assert_eq!(v["gpu"]["freq_mhz"], 305);
}

fn stat(min: f64, mean: f64, max: f64) -> Stat {
    Stat { min, mean, max }
}

fn assert_close(got: &Stat, want: Stat) {
    for (g, w) in [
        (got.min, want.min),
        (got.mean, want.mean),
        (got.max, want.max),
    ] {
        assert!((g - w).abs() < 1e-3, "{got:?} != {want:?}");
    }
}

#[test]
fn summary_of_a_logfile() {
    let text = line("jp6-orin-nano.log");
    let samples: Vec<TegraStats> = TegraStats::parse_lines(&text).map(Result::unwrap).collect();
    let t = TelemetrySummary::of(&samples, 1);
    assert_eq!((t.samples, t.unparsed_lines), (3, 1));
    assert_close(
        t.ram_used_mb.as_ref().unwrap(),
        stat(3101.0, 3201.333, 3398.0),
    );
    assert_eq!(t.ram_total_mb, Some(7620));
    // Mean of the four online cores per sample: 3.5, 2.25, 59.0.
    assert_close(t.cpu_load_pct.as_ref().unwrap(), stat(2.25, 21.583, 59.0));
    assert_close(t.gpu_load_pct.as_ref().unwrap(), stat(0.0, 33.0, 99.0));
    assert_eq!(
        t.gpu_freq_mhz, None,
        "JetPack 6 on the Orin Nano prints no GPU frequency"
    );
    assert_close(&t.temperatures_c["tj"], stat(47.468, 48.0, 49.031));
    assert_close(t.input_power_mw().unwrap(), stat(4801.0, 6521.667, 9922.0));
    assert_eq!(t.power_mw.len(), 3);
    assert_eq!(TelemetrySummary::of(&[], 0).ram_used_mb, None);
}

/// A stand-in for `tegrastats` that prints the JetPack 6 log (and a line that is not a sample)
/// once, then waits to be killed, as the real one prints until killed.
#[cfg(unix)]
fn fake_tegrastats(dir: &std::path::Path) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let log =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/tegrastats/jp6-orin-nano.log");
    let script = dir.join("tegrastats");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\n[ \"$1\" = --interval ] && [ \"$2\" -gt 0 ] || exit 2\necho 'nvpmodel: warming up'\ncat '{}'\nexec sleep 60\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[cfg(unix)]
#[test]
fn sampler_runs_and_stops_tegrastats() {
    let dir = tempfile::tempdir().unwrap();
    let script = fake_tegrastats(dir.path());
    let sampler = TegrastatsSampler::start(script.as_os_str(), 100).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let start = std::time::Instant::now();
    let t = sampler.stop();
    assert!(start.elapsed().as_secs() < 5, "stop does not hang");
    assert_eq!((t.samples, t.unparsed_lines), (3, 1));
    assert_eq!(t.ram_used_mb.unwrap().max, 3398.0);

    let err = TegrastatsSampler::start(dir.path().join("missing").as_os_str(), 100)
        .err()
        .unwrap();
    assert!(err.to_string().contains("missing"), "{err}");
}
