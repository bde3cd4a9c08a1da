//! A parser for the lines `tegrastats` prints on Jetson boards, JetPack 4 to 6.
//!
//! One line is a run of `KEY value` sections (`RAM 2019/3964MB (lfb 3x4MB)`, `CPU [14%@1479,…]`,
//! `GR3D_FREQ 0%@921`), temperatures (`CPU@45.625C`) and power rails (`VDD_IN 4326mW/4326mW`, or
//! without units on JetPack 4: `POM_5V_IN 2203/2203`), with an optional `MM-DD-YYYY HH:MM:SS`
//! timestamp in front (JetPack 6). Sections this parser does not interpret are kept, verbatim, in
//! [`TegraStats::other`]; a section whose value does not have the expected shape is kept there too
//! rather than failing the line.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::Serialize;

/// One `tegrastats` sample.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TegraStats {
    /// The `MM-DD-YYYY HH:MM:SS` prefix (JetPack 6, and `--logfile` output), verbatim.
    pub timestamp: Option<String>,
    pub ram: Option<RamUsage>,
    pub swap: Option<SwapUsage>,
    /// One entry per CPU, offline ones included (`off`).
    pub cpus: Vec<CpuCore>,
    /// External memory controller (`EMC_FREQ`).
    pub emc: Option<Utilization>,
    /// The GPU (`GR3D_FREQ`).
    pub gpu: Option<Utilization>,
    /// °C by sensor name as printed (`CPU` on JetPack 4/5, `cpu` on 6); `None` for a sensor
    /// that is off (printed as `-256C`).
    pub temperatures: BTreeMap<String, Option<f32>>,
    /// Power rails by name as printed.
    pub rails: BTreeMap<String, PowerRail>,
    /// Sections not interpreted above, each with its value tokens, e.g. `APE 25`, `VIC_FREQ 115`,
    /// `IRAM 0/252kB(lfb 252kB)`, `MTS fg 0% bg 0%`.
    pub other: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RamUsage {
    pub used_mb: u64,
    pub total_mb: u64,
    /// `(lfb NxSMB)`: N free blocks of S MB, the largest contiguous free size.
    pub lfb_blocks: Option<u64>,
    pub lfb_block_mb: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SwapUsage {
    pub used_mb: u64,
    pub total_mb: u64,
    pub cached_mb: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct CpuCore {
    /// `false` for a core printed as `off` (taken offline by the power mode).
    pub online: bool,
    pub load_pct: Option<f32>,
    pub freq_mhz: Option<u32>,
}

/// `load%@freq`, as `EMC_FREQ` and `GR3D_FREQ` print it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Utilization {
    pub load_pct: f32,
    /// MHz, when printed. Orin prints one frequency per GPC (`0%@[305,305]`); this is the highest.
    pub freq_mhz: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PowerRail {
    /// Instantaneous power, mW.
    pub current_mw: u32,
    /// Average since tegrastats started, mW.
    pub average_mw: u32,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TegrastatsError {
    /// `start` is the beginning of the input (escaped when printed, so the message stays one line).
    #[error("not a tegrastats line: {start:?}")]
    NotTegrastats { start: String },
}

/// How much of a rejected line the error quotes.
const QUOTE_CHARS: usize = 48;

impl TegraStats {
    /// Parses one line of `tegrastats` output.
    pub fn parse_line(line: &str) -> Result<TegraStats, TegrastatsError> {
        let tokens = tokenize(line);
        let mut stats = TegraStats::default();
        let mut i = 0;
        if let [date, time, ..] = tokens.as_slice() {
            if is_date(date) && is_time(time) {
                stats.timestamp = Some(format!("{date} {time}"));
                i = 2;
            }
        }
        let mut recognized = false;
        let mut in_other = false;
        while i < tokens.len() {
            match stats.take_section(&tokens[i..]) {
                Some((consumed, core)) => {
                    recognized |= core;
                    in_other = false;
                    i += consumed;
                }
                None => {
                    stats.keep_other(tokens[i], in_other);
                    in_other = true;
                    i += 1;
                }
            }
        }
        if !recognized {
            let trimmed = line.trim_start();
            let mut start: String = trimmed.chars().take(QUOTE_CHARS).collect();
            if trimmed.chars().nth(QUOTE_CHARS).is_some() {
                start.push('…');
            }
            return Err(TegrastatsError::NotTegrastats { start });
        }
        Ok(stats)
    }

    /// Parses every non-blank line of `text` (e.g. a `tegrastats --logfile` file).
    pub fn parse_lines(
        text: &str,
    ) -> impl Iterator<Item = Result<TegraStats, TegrastatsError>> + '_ {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(TegraStats::parse_line)
    }

    /// Mean load of the online CPUs.
    pub fn cpu_load_avg(&self) -> Option<f32> {
        let loads: Vec<f32> = self.cpus.iter().filter_map(|c| c.load_pct).collect();
        (!loads.is_empty()).then(|| loads.iter().sum::<f32>() / loads.len() as f32)
    }

    /// A temperature by sensor name, case-insensitively (`cpu` finds `CPU@45C`); `None` when
    /// absent or off.
    pub fn temperature(&self, sensor: &str) -> Option<f32> {
        self.temperatures
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(sensor))
            .and_then(|(_, t)| *t)
    }

    /// The whole-module input rail (`VDD_IN`, or `POM_5V_IN` on the Nano/TX1), when printed.
    pub fn input_power(&self) -> Option<&PowerRail> {
        ["VDD_IN", "POM_5V_IN"]
            .iter()
            .find_map(|name| self.rails.get(*name))
    }

    /// Interprets the section at the start of `t`: `Some((tokens consumed, whether it is one of
    /// the core sections that identify a tegrastats line))`, or `None` if it is not understood.
    fn take_section(&mut self, t: &[&str]) -> Option<(usize, bool)> {
        let key = t[0];
        let value = t.get(1).copied();
        // A parenthesized group right after the value belongs to the section.
        let paren = t.get(2).copied().filter(|s| s.starts_with('('));
        match key {
            "RAM" => {
                let (used_mb, total_mb) = parse_used_total(value?)?;
                let lfb = paren.and_then(|p| paren_field(p, "lfb"));
                let (lfb_blocks, lfb_block_mb) = match lfb.and_then(|s| s.split_once('x')) {
                    Some((n, size)) => (n.parse().ok(), parse_mb(size)),
                    None => (None, None),
                };
                self.ram = Some(RamUsage {
                    used_mb,
                    total_mb,
                    lfb_blocks,
                    lfb_block_mb,
                });
                Some((2 + usize::from(paren.is_some()), true))
            }
            "SWAP" => {
                let (used_mb, total_mb) = parse_used_total(value?)?;
                let cached_mb = paren
                    .and_then(|p| paren_field(p, "cached"))
                    .and_then(parse_mb);
                self.swap = Some(SwapUsage {
                    used_mb,
                    total_mb,
                    cached_mb,
                });
                Some((2 + usize::from(paren.is_some()), true))
            }
            "CPU" => {
                let list = value?.strip_prefix('[')?.strip_suffix(']')?;
                self.cpus = list.split(',').map(parse_core).collect::<Option<_>>()?;
                Some((2, true))
            }
            "EMC_FREQ" => {
                self.emc = Some(parse_utilization(value?)?);
                Some((2, true))
            }
            "GR3D_FREQ" => {
                self.gpu = Some(parse_utilization(value?)?);
                Some((2, true))
            }
            _ => {
                if let Some((sensor, celsius)) = parse_temperature(key) {
                    self.temperatures.insert(sensor.to_string(), celsius);
                    return Some((1, false));
                }
                if is_name(key) {
                    if let Some(rail) = value.and_then(parse_rail) {
                        self.rails.insert(key.to_string(), rail);
                        return Some((2, false));
                    }
                }
                None
            }
        }
    }

    /// Keeps an uninterpreted token: a name-like token (`APE`, `VIC_FREQ`), or any token right
    /// after an interpreted section, starts a new entry of [`TegraStats::other`]; anything else
    /// (`continues`: the previous token was kept here too) is appended to the current one.
    fn keep_other(&mut self, token: &str, continues: bool) {
        let starts_section = token.starts_with(|c: char| c.is_ascii_uppercase()) && is_name(token);
        match self.other.last_mut() {
            Some(last) if continues && !starts_section => {
                last.push(' ');
                last.push_str(token);
            }
            _ => self.other.push(token.to_string()),
        }
    }
}

impl FromStr for TegraStats {
    type Err = TegrastatsError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TegraStats::parse_line(s)
    }
}

/// Splits on whitespace, except inside parentheses: `(lfb 3x4MB)` and `0/252kB(lfb 252kB)` stay
/// one token each.
fn tokenize(line: &str) -> Vec<&str> {
    let mut tokens = Vec::new();
    let mut depth = 0u32;
    let mut start = None;
    for (i, c) in line.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if c.is_whitespace() && depth == 0 {
            if let Some(s) = start.take() {
                tokens.push(&line[s..i]);
            }
        } else if start.is_none() {
            start = Some(i);
        }
    }
    if let Some(s) = start {
        tokens.push(&line[s..]);
    }
    tokens
}

/// `MM-DD-YYYY`.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            2 | 5 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

/// `HH:MM:SS`.
fn is_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 8
        && b.iter().enumerate().all(|(i, c)| match i {
            2 | 5 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}

/// A sensor or rail name: a letter, then letters, digits and `_`.
fn is_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `2019/3964MB`.
fn parse_used_total(s: &str) -> Option<(u64, u64)> {
    let (used, total) = s.split_once('/')?;
    Some((used.parse().ok()?, parse_mb(total)?))
}

/// `4MB` → 4.
fn parse_mb(s: &str) -> Option<u64> {
    s.strip_suffix("MB")?.parse().ok()
}

/// `(lfb 3x4MB)` with `name` "lfb" → `3x4MB`.
fn paren_field<'a>(group: &'a str, name: &str) -> Option<&'a str> {
    let inner = group.strip_prefix('(')?.strip_suffix(')')?.trim();
    Some(inner.strip_prefix(name)?.trim())
}

/// `14%` → 14.0; finite and non-negative only.
fn parse_pct(s: &str) -> Option<f32> {
    let v: f32 = s.strip_suffix('%')?.parse().ok()?;
    (v.is_finite() && v >= 0.0).then_some(v)
}

/// A CPU entry: `14%@1479`, `14%`, or `off`.
fn parse_core(s: &str) -> Option<CpuCore> {
    if s == "off" {
        return Some(CpuCore {
            online: false,
            load_pct: None,
            freq_mhz: None,
        });
    }
    let (load, freq) = match s.split_once('@') {
        Some((load, freq)) => (load, Some(freq.parse().ok()?)),
        None => (s, None),
    };
    Some(CpuCore {
        online: true,
        load_pct: Some(parse_pct(load)?),
        freq_mhz: freq,
    })
}

/// `0%@921`, `0%@[305]`, `0%@[305,305]` or `0%`.
fn parse_utilization(s: &str) -> Option<Utilization> {
    let (load, freq) = match s.split_once('@') {
        Some((load, freq)) => (load, Some(freq)),
        None => (s, None),
    };
    let freq_mhz = match freq {
        None => None,
        Some(f) => {
            let list = match f.strip_prefix('[') {
                Some(rest) => rest.strip_suffix(']')?,
                None => f,
            };
            let freqs: Vec<u32> = list
                .split(',')
                .map(|x| x.parse().ok())
                .collect::<Option<_>>()?;
            freqs.into_iter().max()
        }
    };
    Some(Utilization {
        load_pct: parse_pct(load)?,
        freq_mhz,
    })
}

/// `CPU@45.625C` → ("CPU", Some(45.625)); `GPU@-256C` → ("GPU", None), the sensor is off.
fn parse_temperature(s: &str) -> Option<(&str, Option<f32>)> {
    let (name, value) = s.split_once('@')?;
    if !is_name(name) {
        return None;
    }
    let celsius: f32 = value.strip_suffix('C')?.parse().ok()?;
    if !celsius.is_finite() {
        return None;
    }
    // tegrastats prints -256 for a powered-off sensor; nothing real is below -200 °C.
    Some((name, (celsius > -200.0).then_some(celsius)))
}

/// `4326mW/4326mW` or (JetPack 4) `2203/2203`.
fn parse_rail(s: &str) -> Option<PowerRail> {
    let (current, average) = s.split_once('/')?;
    let mw = |x: &str| -> Option<u32> {
        let digits = x.strip_suffix("mW").unwrap_or(x);
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        digits.parse().ok()
    };
    Some(PowerRail {
        current_mw: mw(current)?,
        average_mw: mw(average)?,
    })
}

// ----- sampling during a run -----

/// Min, mean and max of one quantity over the samples that have it.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Stat {
    pub min: f64,
    pub mean: f64,
    pub max: f64,
}

impl Stat {
    fn of(values: impl IntoIterator<Item = f64>) -> Option<Stat> {
        let (mut min, mut max, mut sum, mut n) = (f64::INFINITY, f64::NEG_INFINITY, 0.0, 0usize);
        for v in values.into_iter().filter(|v| v.is_finite()) {
            min = min.min(v);
            max = max.max(v);
            sum += v;
            n += 1;
        }
        (n > 0).then(|| Stat {
            min,
            mean: sum / n as f64,
            max,
        })
    }
}

/// What the board did over a run, from `tegrastats` samples.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TelemetrySummary {
    pub samples: usize,
    /// Lines that were not tegrastats samples.
    pub unparsed_lines: usize,
    pub ram_used_mb: Option<Stat>,
    pub ram_total_mb: Option<u64>,
    /// Mean load of the online CPU cores.
    pub cpu_load_pct: Option<Stat>,
    pub gpu_load_pct: Option<Stat>,
    pub gpu_freq_mhz: Option<Stat>,
    /// °C by sensor, as printed (sensors that were off are left out).
    pub temperatures_c: BTreeMap<String, Stat>,
    /// Instantaneous power by rail, mW.
    pub power_mw: BTreeMap<String, Stat>,
}

impl TelemetrySummary {
    pub fn of(samples: &[TegraStats], unparsed_lines: usize) -> Self {
        let mut sensors: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut rails: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        for s in samples {
            for (name, t) in &s.temperatures {
                if let Some(t) = t {
                    sensors.entry(name).or_default().push(f64::from(*t));
                }
            }
            for (name, r) in &s.rails {
                rails.entry(name).or_default().push(f64::from(r.current_mw));
            }
        }
        let stats = |m: BTreeMap<&str, Vec<f64>>| -> BTreeMap<String, Stat> {
            m.into_iter()
                .filter_map(|(k, v)| Some((k.to_string(), Stat::of(v)?)))
                .collect()
        };
        TelemetrySummary {
            samples: samples.len(),
            unparsed_lines,
            ram_used_mb: Stat::of(
                samples
                    .iter()
                    .filter_map(|s| Some(s.ram.as_ref()?.used_mb as f64)),
            ),
            ram_total_mb: samples
                .iter()
                .rev()
                .find_map(|s| Some(s.ram.as_ref()?.total_mb)),
            cpu_load_pct: Stat::of(
                samples
                    .iter()
                    .filter_map(|s| Some(f64::from(s.cpu_load_avg()?))),
            ),
            gpu_load_pct: Stat::of(
                samples
                    .iter()
                    .filter_map(|s| Some(f64::from(s.gpu.as_ref()?.load_pct))),
            ),
            gpu_freq_mhz: Stat::of(
                samples
                    .iter()
                    .filter_map(|s| Some(f64::from(s.gpu.as_ref()?.freq_mhz?))),
            ),
            temperatures_c: stats(sensors),
            power_mw: stats(rails),
        }
    }

    /// The whole-module input power (`VDD_IN`, or `POM_5V_IN` on the Nano/TX1), when sampled.
    pub fn input_power_mw(&self) -> Option<&Stat> {
        ["VDD_IN", "POM_5V_IN"]
            .iter()
            .find_map(|n| self.power_mw.get(*n))
    }
}

/// `tegrastats --interval MS` running in the background, its lines parsed as they come.
pub struct TegrastatsSampler {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<Result<TegraStats, TegrastatsError>>,
    interval: std::time::Duration,
}

/// `tegrastats` could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot run {program}: {source}")]
pub struct SamplerError {
    pub program: String,
    pub source: std::io::Error,
}

impl TegrastatsSampler {
    /// Starts `program` (normally `tegrastats`, found on `PATH`) with `--interval interval_ms`.
    pub fn start(
        program: &std::ffi::OsStr,
        interval_ms: u32,
    ) -> Result<TegrastatsSampler, SamplerError> {
        use std::io::BufRead;
        use std::process::{Command, Stdio};

        let mut child = Command::new(program)
            .arg("--interval")
            .arg(interval_ms.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| SamplerError {
                program: program.to_string_lossy().into_owned(),
                source,
            })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = std::sync::mpsc::channel();
        // Detached: it ends at EOF, or when `stop` has dropped the receiver.
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line.trim().is_empty() {
                    continue;
                }
                if tx.send(TegraStats::parse_line(&line)).is_err() {
                    break;
                }
            }
        });
        Ok(TegrastatsSampler {
            child,
            lines,
            interval: std::time::Duration::from_millis(u64::from(interval_ms)),
        })
    }

    /// Stops `tegrastats` and summarizes what it printed. A run shorter than one interval still
    /// gets a sample: this waits up to two intervals for the first one.
    pub fn stop(mut self) -> TelemetrySummary {
        use std::time::Duration;

        let mut received: Vec<Result<TegraStats, TegrastatsError>> =
            self.lines.try_iter().collect();
        if !received.iter().any(Result::is_ok) {
            let deadline =
                std::time::Instant::now() + 2 * self.interval + Duration::from_millis(200);
            while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
                match self.lines.recv_timeout(left) {
                    Ok(r) => {
                        let ok = r.is_ok();
                        received.push(r);
                        if ok {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        // What was already read; a reader stuck on a pipe some grandchild still holds is left.
        while let Ok(r) = self.lines.recv_timeout(Duration::from_millis(100)) {
            received.push(r);
        }
        let mut samples = Vec::new();
        let mut unparsed = 0;
        for r in received {
            match r {
                Ok(s) => samples.push(s),
                Err(e) => {
                    tracing::debug!("tegrastats: {e}");
                    unparsed += 1;
                }
            }
        }
        TelemetrySummary::of(&samples, unparsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_parenthesized_groups() {
        assert_eq!(
            tokenize(" RAM 1/2MB (lfb 3x4MB) IRAM 0/252kB(lfb 252kB) APE 25 "),
            [
                "RAM",
                "1/2MB",
                "(lfb 3x4MB)",
                "IRAM",
                "0/252kB(lfb 252kB)",
                "APE",
                "25"
            ]
        );
    }

    #[test]
    fn small_forms() {
        assert_eq!(
            parse_utilization("0%@[305,612]").unwrap().freq_mhz,
            Some(612)
        );
        assert_eq!(parse_utilization("7%").unwrap().load_pct, 7.0);
        assert!(parse_utilization("7%@[]").is_none());
        assert!(parse_utilization("x%@1").is_none());
        assert_eq!(parse_temperature("PMIC@100C"), Some(("PMIC", Some(100.0))));
        assert_eq!(parse_temperature("CV0@-256C"), Some(("CV0", None)));
        assert_eq!(parse_temperature("cpu@nanC"), None);
        assert_eq!(parse_temperature("14%@1479"), None);
        assert!(parse_rail("+1/2").is_none());
        assert!(parse_rail("1mW/").is_none());
        assert!(is_date("11-25-2026") && is_time("10:15:02"));
        assert!(!is_date("11-25-202x") && !is_time("10:15"));
    }
}
