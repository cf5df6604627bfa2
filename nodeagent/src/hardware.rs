//! What a node has: CPUs and memory from /proc, GPUs through NVML (the library is loaded at
//! run time, so nodes without NVIDIA drivers need nothing), else `nvidia-smi`, or fake GPUs
//! for tests (`--fake-gpus 2xA100`).

use dora_crds::status::{CpuInfo, GpuDevice};
use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::TemperatureSensor;

/// Parses GPUs as `8xA100` or `4xA100,2xH100`; a model without a count means one.
pub fn parse_gpus(text: &str) -> Result<Vec<(u32, String)>, String> {
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| {
            let part = part.trim();
            match part.split_once('x') {
                Some((count, model)) if count.chars().all(|c| c.is_ascii_digit()) => count
                    .parse()
                    .map(|n| (n, model.to_string()))
                    .map_err(|_| format!("bad GPU count in {part:?}")),
                _ => Ok((1, part.to_string())),
            }
        })
        .collect()
}

/// Fake GPUs numbered from 0, with 80 GiB each.
pub fn fake_gpus(models: &[(u32, String)]) -> Vec<GpuDevice> {
    let mut gpus = Vec::new();
    for (count, model) in models {
        for _ in 0..*count {
            gpus.push(GpuDevice {
                minor: gpus.len() as u32,
                product_name: model.clone(),
                memory_bytes: 80 << 30,
                ..GpuDevice::default()
            });
        }
    }
    gpus
}

/// The CPUs listed in /proc/cpuinfo and their model.
pub fn cpus() -> CpuInfo {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    parse_cpuinfo(&text)
}

fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut info = CpuInfo::default();
    for line in text.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        match name.trim() {
            "processor" => info.count += 1,
            "model name" if info.product_name.is_empty() => {
                info.product_name = value.trim().to_string();
            }
            _ => {}
        }
    }
    if info.count == 0 {
        info.count = std::thread::available_parallelism()
            .map(|n| n.get() as u32)
            .unwrap_or(1);
    }
    info
}

/// Total memory from /proc/meminfo, in bytes.
pub fn memory_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// Where the GPUs come from, kept between heartbeats.
pub enum Gpus {
    Fake(Vec<GpuDevice>),
    Nvml(Box<Nvml>),
    NvidiaSmi,
    None,
}

impl Gpus {
    /// Fake GPUs when given, else NVML when its library loads, else `nvidia-smi` when it
    /// answers, else none.
    pub fn discover(fake: Option<Vec<(u32, String)>>) -> Gpus {
        if let Some(models) = fake {
            return Gpus::Fake(fake_gpus(&models));
        }
        match Nvml::init() {
            Ok(nvml) => {
                tracing::info!(driver = ?nvml.sys_driver_version().ok(), "GPUs through NVML");
                return Gpus::Nvml(Box::new(nvml));
            }
            Err(e) => tracing::debug!(error = %e, "NVML is not available"),
        }
        if nvidia_smi().is_some() {
            tracing::info!("GPUs through nvidia-smi");
            return Gpus::NvidiaSmi;
        }
        Gpus::None
    }

    /// The GPUs now, with their current memory use, temperature and power where known.
    pub fn devices(&self) -> Vec<GpuDevice> {
        match self {
            Gpus::Fake(devices) => devices.clone(),
            Gpus::Nvml(nvml) => nvml_devices(nvml),
            Gpus::NvidiaSmi => nvidia_smi().unwrap_or_default(),
            Gpus::None => Vec::new(),
        }
    }

    /// How the GPUs are found, for the log.
    pub fn source(&self) -> &'static str {
        match self {
            Gpus::Fake(_) => "fake",
            Gpus::Nvml(_) => "nvml",
            Gpus::NvidiaSmi => "nvidia-smi",
            Gpus::None => "none",
        }
    }
}

fn nvml_devices(nvml: &Nvml) -> Vec<GpuDevice> {
    let count = nvml.device_count().unwrap_or_default();
    (0..count)
        .filter_map(|index| {
            let device = nvml.device_by_index(index).ok()?;
            let memory = device.memory_info().ok();
            Some(GpuDevice {
                minor: device.minor_number().unwrap_or(index),
                product_name: device.name().ok()?,
                memory_bytes: memory.as_ref().map_or(0, |m| m.total),
                memory_used_bytes: memory.map(|m| m.used),
                temperature: device.temperature(TemperatureSensor::Gpu).ok(),
                power_watts: device.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
                utilization: device.utilization_rates().ok().map(|u| u.gpu),
            })
        })
        .collect()
}

/// GPUs from `nvidia-smi`'s CSV; `None` when it cannot run.
fn nvidia_smi() -> Option<Vec<GpuDevice>> {
    let output = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,name,memory.total,memory.used,temperature.gpu,power.draw,utilization.gpu",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    Some(parse_smi(&String::from_utf8_lossy(&output.stdout)))
}

fn parse_smi(text: &str) -> Vec<GpuDevice> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let number = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
            let mib = |i: usize| number(i).map(|m| (m * 1_048_576.0) as u64);
            Some(GpuDevice {
                minor: fields.first()?.parse().ok()?,
                product_name: fields.get(1)?.to_string(),
                memory_bytes: mib(2).unwrap_or_default(),
                memory_used_bytes: mib(3),
                temperature: number(4).map(|t| t as u32),
                power_watts: number(5),
                utilization: number(6).map(|u| u as u32),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpus_parse() {
        assert_eq!(
            parse_gpus("8xA100,2xH100").unwrap(),
            vec![(8, "A100".into()), (2, "H100".into())]
        );
        assert_eq!(parse_gpus("T4").unwrap(), vec![(1, "T4".into())]);
        let fake = fake_gpus(&parse_gpus("2xA100,1xH100").unwrap());
        let minors: Vec<u32> = fake.iter().map(|g| g.minor).collect();
        assert_eq!(minors, [0, 1, 2]);
        assert_eq!(fake[2].product_name, "H100");
    }

    #[test]
    fn cpuinfo_counts_processors_and_names_the_model() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC 9654\n\nprocessor\t: 1\nmodel name\t: AMD EPYC 9654\n";
        let info = parse_cpuinfo(text);
        assert_eq!(
            (info.count, info.product_name.as_str()),
            (2, "AMD EPYC 9654")
        );
        assert!(cpus().count >= 1);
        assert!(memory_bytes() > 0);
    }

    #[test]
    fn nvidia_smi_csv_parses() {
        let text = "0, NVIDIA H200, 143771, 1024, 31, 75.50, 3\n1, NVIDIA H200, 143771, 0, [N/A], [N/A], 0\n";
        let gpus = parse_smi(text);
        assert_eq!(gpus.len(), 2);
        assert_eq!(gpus[0].product_name, "NVIDIA H200");
        assert_eq!(gpus[0].memory_bytes, 143_771 * 1_048_576);
        assert_eq!(gpus[0].temperature, Some(31));
        assert_eq!(gpus[0].power_watts, Some(75.5));
        assert_eq!(gpus[1].temperature, None);
    }
}
