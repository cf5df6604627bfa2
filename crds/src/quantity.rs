//! Scalars that manifests of the original system write in more than one way.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A non-negative integer written as a number or a numeric string (`3` or `"3"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Count(pub u32);

impl Serialize for Count {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(self.0)
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Number(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Count)
                .ok_or_else(|| de::Error::custom(format!("expected a whole number ≥ 0, got {n}"))),
            serde_json::Value::String(s) => {
                s.trim().parse().map(Count).map_err(|_| {
                    de::Error::custom(format!("expected a whole number ≥ 0, got {s:?}"))
                })
            }
            other => Err(de::Error::custom(format!(
                "expected a whole number ≥ 0, got {other}"
            ))),
        }
    }
}

impl JsonSchema for Count {
    fn schema_name() -> Cow<'static, str> {
        "Count".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A whole number ≥ 0, as a number or a numeric string.",
            "type": ["integer", "string"],
            "minimum": 0,
            "maximum": u32::MAX,
            "pattern": "^[0-9]+$"
        })
    }
}

/// CPU quantity in millicores: `2` (cores), `"2"`, or `"500m"`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MilliCpu(pub u64);

impl MilliCpu {
    fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        match text.strip_suffix('m') {
            Some(milli) => milli.parse().ok().map(MilliCpu),
            None => text.parse::<u64>().ok().map(|cores| MilliCpu(cores * 1000)),
        }
    }
}

impl fmt::Display for MilliCpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

impl Serialize for MilliCpu {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_multiple_of(1000) {
            s.serialize_u64(self.0 / 1000)
        } else {
            s.serialize_str(&self.to_string())
        }
    }
}

impl<'de> Deserialize<'de> for MilliCpu {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let parsed = match &value {
            serde_json::Value::Number(n) => n.as_u64().map(|cores| MilliCpu(cores * 1000)),
            serde_json::Value::String(s) => MilliCpu::parse(s),
            _ => None,
        };
        parsed.ok_or_else(|| {
            de::Error::custom(format!(
                "expected cores (2) or millicores (\"500m\"), got {value}"
            ))
        })
    }
}

impl JsonSchema for MilliCpu {
    fn schema_name() -> Cow<'static, str> {
        "MilliCpu".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "CPU cores as a number (2) or millicores as a string (\"500m\").",
            "type": ["integer", "string"],
            "minimum": 0,
            "pattern": "^[0-9]+m?$"
        })
    }
}

/// A duration written as `<n>s`, `<n>m`, `<n>h` or `<n>d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// Parses `90s`, `15m`, `2h`, `7d`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let unit = text.chars().last()?;
        let number = text.strip_suffix(unit)?;
        let n: u64 = number.parse().ok()?;
        let secs = match unit {
            's' => n,
            'm' => n.checked_mul(60)?,
            'h' => n.checked_mul(3600)?,
            'd' => n.checked_mul(86_400)?,
            _ => return None,
        };
        Some(Duration(std::time::Duration::from_secs(secs)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        match secs {
            s if s != 0 && s.is_multiple_of(86_400) => write!(f, "{}d", s / 86_400),
            s if s != 0 && s.is_multiple_of(3600) => write!(f, "{}h", s / 3600),
            s if s != 0 && s.is_multiple_of(60) => write!(f, "{}m", s / 60),
            s => write!(f, "{s}s"),
        }
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Duration::parse(&text).ok_or_else(|| {
            de::Error::custom(format!(
                "expected a duration like 30s, 15m, 2h or 7d, got {text:?}"
            ))
        })
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A duration: <n>s, <n>m, <n>h or <n>d.",
            "type": "string",
            "pattern": "^[0-9]+[smhd]$"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_accepts_number_and_numeric_string() {
        assert_eq!(serde_json::from_str::<Count>("3").unwrap(), Count(3));
        assert_eq!(serde_json::from_str::<Count>("\"3\"").unwrap(), Count(3));
        assert!(serde_json::from_str::<Count>("\"x\"").is_err());
        assert!(serde_json::from_str::<Count>("-1").is_err());
    }

    #[test]
    fn cpu_accepts_cores_and_millicores() {
        assert_eq!(
            serde_json::from_str::<MilliCpu>("2").unwrap(),
            MilliCpu(2000)
        );
        assert_eq!(
            serde_json::from_str::<MilliCpu>("\"500m\"").unwrap(),
            MilliCpu(500)
        );
        assert_eq!(serde_json::to_string(&MilliCpu(500)).unwrap(), "\"500m\"");
        assert_eq!(serde_json::to_string(&MilliCpu(3000)).unwrap(), "3");
    }

    #[test]
    fn durations_round_trip() {
        for text in ["30s", "15m", "2h", "7d"] {
            assert_eq!(Duration::parse(text).unwrap().to_string(), text);
        }
        assert!(Duration::parse("10x").is_none());
        assert!(Duration::parse("").is_none());
    }

    #[test]
    fn durations_ending_in_other_scripts_are_refused_not_a_panic() {
        for text in [
            "1ü",
            "ü",
            "5é",
            "10日",
            "7d\u{301}",
            "s",
            "-1s",
            "99999999999999999999d",
        ] {
            assert!(Duration::parse(text).is_none(), "{text:?}");
        }
    }
}

/// A size in bytes: a number, or a string with a unit (`512Mi`, `16Gi`, `1G`, `64k`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bytes(pub u64);

impl Bytes {
    fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().ok()?;
        let scale: u64 = match unit {
            "" => 1,
            "k" | "K" => 1_000,
            "M" => 1_000_000,
            "G" => 1_000_000_000,
            "T" => 1_000_000_000_000,
            "Ki" => 1 << 10,
            "Mi" => 1 << 20,
            "Gi" => 1 << 30,
            "Ti" => 1 << 40,
            _ => return None,
        };
        number.checked_mul(scale).map(Bytes)
    }
}

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let parsed = match &value {
            serde_json::Value::Number(n) => n.as_u64().map(Bytes),
            serde_json::Value::String(s) => Bytes::parse(s),
            _ => None,
        };
        parsed.ok_or_else(|| {
            de::Error::custom(format!(
                "expected bytes as a number or with a unit (\"512Mi\", \"16Gi\", \"1G\"), got {value}"
            ))
        })
    }
}

impl JsonSchema for Bytes {
    fn schema_name() -> Cow<'static, str> {
        "Bytes".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Bytes as a number, or a string with a unit: k, M, G, T, Ki, Mi, Gi, Ti.",
            "type": ["integer", "string"],
            "minimum": 0,
            "pattern": "^[0-9]+([kKMGT]|[KMGT]i)?$"
        })
    }
}

#[cfg(test)]
mod bytes_tests {
    use super::Bytes;

    #[test]
    fn units_scale() {
        assert_eq!(Bytes::parse("512Mi"), Some(Bytes(512 << 20)));
        assert_eq!(Bytes::parse("2G"), Some(Bytes(2_000_000_000)));
        assert_eq!(Bytes::parse("7"), Some(Bytes(7)));
        assert_eq!(Bytes::parse("7 parsecs"), None);
    }
}
