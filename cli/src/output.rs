//! Printing resources: kubectl-like tables, YAML and JSON.

use comfy_table::{CellAlignment, ColumnConstraint, Table, presets};
use dora_crds::Kind;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Renders rows under headers with kubectl's look: no borders, three spaces between columns.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING);
    table.set_header(headers.iter().map(|h| h.to_string()));
    for row in rows {
        table.add_row(row.clone());
    }
    let last = headers.len().saturating_sub(1);
    for (i, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if i == last { 0 } else { 3 }));
        column.set_cell_alignment(CellAlignment::Left);
        column.set_constraint(ColumnConstraint::ContentWidth);
    }
    table
        .lines()
        .map(|line| line.trim_end().to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `5s`, `3m`, `2h`, `4d` since an RFC 3339 timestamp.
pub fn age(timestamp: &Value) -> String {
    let Some(then) = timestamp
        .as_str()
        .and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok())
    else {
        return "<unknown>".into();
    };
    let secs = (OffsetDateTime::now_utc() - then).whole_seconds().max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "<none>".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn labels(item: &Value) -> String {
    match item["metadata"]["labels"].as_object() {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| format!("{k}={}", text(v)))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".into(),
    }
}

fn count(value: &Value) -> String {
    value
        .as_array()
        .map_or("0".into(), |items| items.len().to_string())
}

/// Fills a kind's own columns from one item.
type Cells = fn(&Value) -> Vec<String>;

/// Kind-specific columns: headers and how to fill them.
fn kind_columns(kind: Kind) -> (Vec<&'static str>, Cells) {
    match kind {
        Kind::Workload => (vec!["READY", "DRIVER", "IMAGE", "GEN", "STATUS"], |i| {
            let spec = &i["spec"];
            let image = match spec["image"]["image"].as_str() {
                Some(image) => image.to_string(),
                None => match &spec["config"]["cmd"] {
                    Value::Array(args) => args.iter().map(text).collect::<Vec<_>>().join(" "),
                    other => text(other),
                },
            };
            let computed = &i["status"]["computed"];
            let status = computed["paused"]
                .as_str()
                .map(|why| format!("Paused: {why}"))
                .or_else(|| {
                    computed["reason"]
                        .as_str()
                        .map(|why| format!("Pending: {why}"))
                })
                .unwrap_or_default();
            vec![
                format!(
                    "{}/{}",
                    computed["ready"].as_u64().unwrap_or(0),
                    text(&spec["replica"]["count"])
                ),
                text(&spec["driver"]),
                image,
                text(&i["metadata"]["generation"]),
                status,
            ]
        }),
        Kind::Container => (vec!["WORKLOAD", "NODE", "STATE", "RESTARTS", "GPUS"], |i| {
            let computed = &i["status"]["computed"];
            let observed = &i["status"]["observed"];
            let current = observed["epoch"] == computed["epoch"] && computed["node"].is_string();
            let state = if computed["node"].is_null() {
                "Pending".to_string()
            } else if current {
                text(&observed["state"])
            } else {
                "Bound".to_string()
            };
            let gpus: Vec<String> = computed["gpus"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            vec![
                text(&i["spec"]["workload"]),
                text(&computed["node"]),
                state,
                computed["restarts"].as_u64().unwrap_or(0).to_string(),
                gpus.join(","),
            ]
        }),
        Kind::Node => (vec!["STATE", "SCHEDULING", "GPUS", "CPUS"], |i| {
            let observed = &i["status"]["observed"];
            let cordoned = i["spec"]["schedulingDisabled"].as_bool().unwrap_or(false);
            let state = match i["status"]["computed"]["ready"].as_bool() {
                Some(true) => "Ready",
                Some(false) => "NotReady",
                None => "Unknown",
            };
            vec![
                state.into(),
                if cordoned { "Disabled" } else { "Enabled" }.into(),
                count(&observed["gpus"]),
                text(&observed["cpu"]["count"]),
            ]
        }),
        Kind::User => (vec!["ZONE", "WORKSPACE", "ROLES"], |i| {
            let spec = &i["spec"];
            let mut roles: Vec<String> = spec["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|b| text(&b["role"]))
                .collect();
            roles.dedup();
            vec![
                text(&spec["default"]["zone"]),
                text(&spec["default"]["workspace"]),
                roles.join(","),
            ]
        }),
        Kind::Role => (vec!["KINDS"], |i| {
            let kinds: Vec<String> = i["spec"]["permission"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, _)| k.clone())
                .collect();
            vec![kinds.join(",")]
        }),
        Kind::Zone => (vec!["ENDPOINT"], |i| vec![text(&i["spec"]["endpoint"])]),
        Kind::Workspace => (vec![], |_| vec![]),
        Kind::Storage => (vec!["KIND", "MOUNTPATH"], |i| {
            vec![text(&i["spec"]["kind"]), text(&i["spec"]["mountpath"])]
        }),
        Kind::Volume => (vec!["STORAGE", "POLICY"], |i| {
            vec![text(&i["spec"]["storage"]), text(&i["spec"]["policy"])]
        }),
        Kind::Resourcecredit => (vec!["PRODUCT", "CREDIT/HOUR"], |i| {
            vec![
                text(&i["spec"]["product_name"]),
                text(&i["spec"]["credit"]["per"]["hour"]),
            ]
        }),
        Kind::Usercredit => (vec!["USER", "WEEKLY", "LIMIT", "OUT"], |i| {
            let account = &i["status"]["computed"];
            vec![
                text(&i["spec"]["user"]),
                format!("{:.2}", account["weekly"].as_f64().unwrap_or(0.0)),
                account["limit"]
                    .as_f64()
                    .map_or("-".into(), |l| format!("{l:.2}")),
                text(&account["outOfCredit"]),
            ]
        }),
        Kind::Gpu => (
            vec!["NODE", "MODEL", "MEMORY", "TEMP", "POWER", "BOOKED"],
            |i| {
                let device = &i["status"]["device"];
                vec![
                    text(&i["status"]["node"]),
                    text(&device["product_name"]),
                    format!(
                        "{}/{}",
                        text(&device["memory_used"]),
                        text(&device["memory_total"])
                    ),
                    text(&device["temperature"]),
                    text(&device["power"]),
                    text(&device["booked"]),
                ]
            },
        ),
        Kind::Cpu => (vec!["NODE", "MODEL"], |i| {
            vec![
                text(&i["status"]["node"]),
                text(&i["status"]["device"]["product_name"]),
            ]
        }),
    }
}

/// A table of resources of one kind; `event` adds a leading column with watch event types.
pub fn resource_table(
    kind: Kind,
    items: &[(Option<&str>, &Value)],
    wide: bool,
    show_workspace: bool,
) -> String {
    let (extra, cells) = kind_columns(kind);
    let watching = items.iter().any(|(event, _)| event.is_some());
    let mut headers = Vec::new();
    if watching {
        headers.push("EVENT");
    }
    headers.push("NAME");
    if show_workspace {
        headers.push("WORKSPACE");
    }
    headers.extend(extra);
    headers.push("AGE");
    if wide {
        headers.extend(["VERSION", "OWNER", "LABELS"]);
    }
    let rows: Vec<Vec<String>> = items
        .iter()
        .map(|(event, item)| {
            let meta = &item["metadata"];
            let mut row = Vec::new();
            if watching {
                row.push(event.unwrap_or_default().to_string());
            }
            row.push(text(&meta["name"]));
            if show_workspace {
                row.push(text(&meta["workspace"]));
            }
            row.extend(cells(item));
            row.push(if meta["created"].is_null() {
                "-".into()
            } else {
                age(&meta["created"])
            });
            if wide {
                row.extend([text(&meta["version"]), text(&meta["owner"]), labels(item)]);
            }
            row
        })
        .collect();
    table(&headers, &rows)
}

/// YAML of any value.
pub fn yaml(value: &Value) -> anyhow::Result<String> {
    Ok(serde_saphyr::to_string(value)?)
}

/// Pretty JSON of any value.
pub fn json_text(value: &Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default()
}

/// Prints `value` as JSON or YAML, or its `items` as a table of `headers` with `row`.
pub fn print_items(
    format: crate::args::Format,
    value: &Value,
    headers: &[&str],
    row: impl Fn(&Value) -> Vec<String>,
) -> anyhow::Result<()> {
    use crate::args::Format;
    match format {
        Format::Json => println!("{}", json_text(value)),
        Format::Yaml => print!("{}", yaml(value)?),
        Format::Table | Format::Wide => {
            let rows: Vec<Vec<String>> = value["items"]
                .as_array()
                .map(|items| items.iter().map(&row).collect())
                .unwrap_or_default();
            println!("{}", table(headers, &rows));
        }
    }
    Ok(())
}

/// A kubectl-style `List` of items.
pub fn list_object(items: Vec<Value>) -> Value {
    json!({"apiVersion": "v1", "kind": "List", "items": items})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_look_like_kubectl() {
        let out = table(
            &["NAME", "AGE"],
            &[
                vec!["train".into(), "5s".into()],
                vec!["a".into(), "10m".into()],
            ],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines, vec!["NAME    AGE", "train   5s", "a       10m"]);
    }

    #[test]
    fn ages_are_short() {
        let now = OffsetDateTime::now_utc();
        let ts = |secs: i64| {
            json!(
                (now - time::Duration::seconds(secs))
                    .format(&Rfc3339)
                    .unwrap()
            )
        };
        assert_eq!(age(&ts(5)), "5s");
        assert_eq!(age(&ts(600)), "10m");
        assert_eq!(age(&ts(3 * 86_400)), "3d");
        assert_eq!(age(&json!(null)), "<unknown>");
    }
}
