//! Printing resources: kubectl-like tables, YAML and JSON.

use comfy_table::{CellAlignment, ColumnConstraint, Table, presets};
use dora_crds::{Column, Format, Kind};
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

/// `5s`, `3m`, `2h`, `4d` since an RFC 3339 timestamp (or Unix milliseconds).
pub fn age(timestamp: &Value) -> String {
    match instant(timestamp) {
        Some(then) => span((OffsetDateTime::now_utc() - then).whole_seconds().max(0)),
        None => "<unknown>".into(),
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "<none>".into(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.is_empty() => "<none>".into(),
        Value::Array(items) => {
            let mut words: Vec<String> = items.iter().map(text).collect();
            words.dedup();
            words.join(",")
        }
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

/// An instant given as Unix milliseconds or RFC 3339 text.
fn instant(value: &Value) -> Option<OffsetDateTime> {
    match value {
        Value::Number(n) => {
            OffsetDateTime::from_unix_timestamp_nanos(n.as_i64()? as i128 * 1_000_000).ok()
        }
        Value::String(t) => OffsetDateTime::parse(t, &Rfc3339).ok(),
        _ => None,
    }
}

fn span(secs: i64) -> String {
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 2 * 3600 => format!("{}m", s / 60),
        s if s < 2 * 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// `16Gi`, `512Mi`, `900`: bytes in the largest binary unit that keeps a whole number.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["Ki", "Mi", "Gi", "Ti", "Pi"];
    let mut value = n as f64;
    let mut unit = "";
    for next in UNITS {
        if value < 1024.0 {
            break;
        }
        value /= 1024.0;
        unit = next;
    }
    if unit.is_empty() {
        n.to_string()
    } else if value >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}{unit}")
    } else {
        format!("{value:.1}{unit}")
    }
}

/// The text of one declared column for one object.
pub fn cell(column: &Column, item: &Value) -> String {
    let Some(value) = column.value(item) else {
        return match column.format {
            Format::Of(other) => format!("0/{}", text(item.pointer(other).unwrap_or(&Value::Null))),
            Format::Counter => "0".into(),
            _ => "<none>".into(),
        };
    };
    match column.format {
        Format::Text => text(&value),
        Format::Count => value.as_array().map_or(0, Vec::len).to_string(),
        Format::Counter => text(&value),
        Format::Command => match &value {
            Value::Array(words) => words.iter().map(text).collect::<Vec<_>>().join(" "),
            other => text(other),
        },
        Format::Keys => value
            .as_object()
            .map(|map| map.keys().cloned().collect::<Vec<_>>().join(","))
            .unwrap_or_else(|| text(&value)),
        Format::Bytes => value.as_u64().map_or_else(|| text(&value), bytes),
        Format::Decimal => value
            .as_f64()
            .map_or_else(|| text(&value), |n| format!("{n:.2}")),
        Format::Age => instant(&value).map_or_else(
            || text(&value),
            |then| span((OffsetDateTime::now_utc() - then).whole_seconds().max(0)),
        ),
        Format::Until => instant(&value).map_or_else(
            || text(&value),
            |then| match (then - OffsetDateTime::now_utc()).whole_seconds() {
                secs if secs > 0 => format!("in {}", span(secs)),
                _ => "now".into(),
            },
        ),
        Format::Of(other) => format!(
            "{}/{}",
            text(&value),
            text(item.pointer(other).unwrap_or(&Value::Null))
        ),
    }
}

/// The headers and rows of a table of resources of one kind.
pub struct ResourceTable {
    pub headers: Vec<&'static str>,
    pub rows: Vec<Vec<String>>,
}

/// A table of resources of one kind; `event` adds a leading column with watch event types.
pub fn resource_rows(
    kind: Kind,
    items: &[(Option<&str>, &Value)],
    wide: bool,
    show_workspace: bool,
) -> ResourceTable {
    let columns: Vec<&Column> = kind.columns().iter().filter(|c| wide || !c.wide).collect();
    let watching = items.iter().any(|(event, _)| event.is_some());
    let mut headers = Vec::new();
    if watching {
        headers.push("EVENT");
    }
    headers.push("NAME");
    if show_workspace {
        headers.push("WORKSPACE");
    }
    headers.extend(columns.iter().map(|c| c.name));
    headers.push("AGE");
    if wide {
        headers.extend(["VERSION", "OWNER", "LABELS"]);
    }
    // A kind whose columns do not show the phase still shows that a delete waits on
    // finalizers, in a column of its own while any object listed does.
    let terminating = |item: &Value| !item["metadata"]["deletionTimestamp"].is_null();
    let status_column = !columns
        .iter()
        .any(|c| c.pointers.contains(&"/status/phase"))
        && items.iter().any(|(_, item)| terminating(item));
    if status_column {
        headers.push("STATUS");
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
            row.extend(columns.iter().map(|c| cell(c, item)));
            row.push(if meta["created"].is_null() {
                "-".into()
            } else {
                age(&meta["created"])
            });
            if wide {
                row.extend([text(&meta["version"]), text(&meta["owner"]), labels(item)]);
            }
            if status_column {
                row.push(if terminating(item) {
                    text(&item["status"]["phase"])
                } else {
                    String::new()
                });
            }
            row
        })
        .collect();
    ResourceTable { headers, rows }
}

/// [`resource_rows`] as text.
pub fn resource_table(
    kind: Kind,
    items: &[(Option<&str>, &Value)],
    wide: bool,
    show_workspace: bool,
) -> String {
    let ResourceTable { headers, rows } = resource_rows(kind, items, wide, show_workspace);
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
    fn objects_waiting_on_finalizers_show_terminating_in_any_kind() {
        let zone = |name: &str, terminating: bool| {
            let mut item = json!({"metadata": {"name": name, "created": null}});
            if terminating {
                item["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
                item["status"] = json!({"phase": "Terminating"});
            }
            item
        };
        let (a, b) = (zone("a", false), zone("b", true));
        let table = resource_rows(Kind::Zone, &[(None, &a), (None, &b)], false, false);
        assert_eq!(table.headers.last(), Some(&"STATUS"));
        assert_eq!(table.rows[0].last().map(String::as_str), Some(""));
        assert_eq!(
            table.rows[1].last().map(String::as_str),
            Some("Terminating")
        );
        let table = resource_rows(Kind::Zone, &[(None, &a)], false, false);
        assert!(
            !table.headers.contains(&"STATUS"),
            "only while one is terminating"
        );
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

    #[test]
    fn byte_counts_use_binary_units() {
        assert_eq!(bytes(900), "900");
        assert_eq!(bytes(16 << 30), "16Gi");
        assert_eq!(bytes(1536 << 20), "1.5Gi");
    }
}
