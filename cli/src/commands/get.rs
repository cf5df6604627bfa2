//! `dora get` and `dora describe`.

use anyhow::bail;
use dora_crds::Kind;
use futures::StreamExt;
use reqwest::Method;
use serde_json::Value;

use super::kind;
use crate::args::{DescribeArgs, Format, GetArgs, GetOutput, Global};
use crate::client::Client;
use crate::jsonpath::{Path, Template, scalar};
use crate::output;

pub(crate) fn print_items(
    kind: Kind,
    items: &[Value],
    format: Format,
    show_workspace: bool,
) -> anyhow::Result<()> {
    match format {
        Format::Table | Format::Wide => {
            if items.is_empty() {
                eprintln!("No {} found.", kind.plural());
            } else {
                let rows: Vec<(Option<&str>, &Value)> = items.iter().map(|i| (None, i)).collect();
                println!(
                    "{}",
                    output::resource_table(kind, &rows, format == Format::Wide, show_workspace)
                );
            }
        }
        Format::Yaml => print!("{}", output::yaml(&output::list_object(items.to_vec()))?),
        Format::Json => println!(
            "{}",
            output::json_text(&output::list_object(items.to_vec()))
        ),
    }
    Ok(())
}

fn print_one(kind: Kind, item: &Value, format: Format) -> anyhow::Result<()> {
    match format {
        Format::Table | Format::Wide => println!(
            "{}",
            output::resource_table(kind, &[(None, item)], format == Format::Wide, false)
        ),
        Format::Yaml => print!("{}", output::yaml(item)?),
        Format::Json => println!("{}", output::json_text(item)),
    }
    Ok(())
}

/// Prints what `get` read in a kubectl template, when `-o` asks for one: `true` then.
fn print_template(output: &GetOutput, root: &Value, items: &[Value]) -> bool {
    match output {
        GetOutput::Format(_) => return false,
        // As kubectl: exactly the template, without a newline of its own.
        GetOutput::JsonPath(template) => print!("{}", template.render(root)),
        GetOutput::CustomColumns(columns) => {
            let headers: Vec<&str> = columns.iter().map(|(h, _)| h.as_str()).collect();
            let rows: Vec<Vec<String>> = items
                .iter()
                .map(|item| {
                    columns
                        .iter()
                        .map(|(_, path)| {
                            let values: Vec<String> =
                                path.values(item).into_iter().map(scalar).collect();
                            if values.is_empty() {
                                "<none>".into()
                            } else {
                                values.join(",")
                            }
                        })
                        .collect()
                })
                .collect();
            println!("{}", output::table(&headers, &rows));
        }
    }
    true
}

/// Orders items by the value at `path`: numbers by size, everything else as text, items
/// without it last.
fn sort_items(items: &mut [Value], path: &Path) {
    items.sort_by(|a, b| match (path.first(a), path.first(b)) {
        (Some(Value::Number(x)), Some(Value::Number(y))) => x
            .as_f64()
            .partial_cmp(&y.as_f64())
            .unwrap_or(std::cmp::Ordering::Equal),
        (Some(x), Some(y)) => scalar(x).cmp(&scalar(y)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => std::cmp::Ordering::Equal,
    });
}

pub async fn get(global: &Global, args: GetArgs) -> anyhow::Result<()> {
    let kind = kind(global, &args.kind).await?;
    let format = match (&args.output, args.json) {
        (_, true) => Format::Json,
        (GetOutput::Format(format), false) => *format,
        _ => Format::Json,
    };
    let mut client = Client::new(global)?;
    let all_workspaces = args.all_workspaces && kind.scope().has_workspace() && args.name.is_none();
    let place = client.place(kind, all_workspaces).await?;
    let path = match &args.name {
        Some(name) => kind.object_path(&place.zone, place.workspace.as_deref(), name),
        None => kind.collection_path(&place.zone, place.workspace.as_deref()),
    };
    let selector: Vec<(&str, String)> = args
        .selector
        .iter()
        .map(|s| ("labelSelector", s.clone()))
        .collect();
    if args.watch {
        if kind.is_view() {
            bail!(
                "{kind} is a view made from the nodes' reports at each read and cannot be watched; `dora get node -w` follows the nodes"
            );
        }
        if matches!(args.output, GetOutput::CustomColumns(_)) {
            bail!("-o custom-columns cannot follow a watch; use -o jsonpath=... with -w");
        }
        let template = match &args.output {
            GetOutput::JsonPath(template) => Some(template),
            _ => None,
        };
        return watch(
            &client,
            kind,
            &path,
            &selector,
            format,
            template,
            all_workspaces,
        )
        .await;
    }
    if args.name.is_some() || kind.is_view() {
        // A view (gpu, cpu) comes whole, in one answer.
        let item = client.json(Method::GET, &path, &selector, None).await?;
        if args.name.is_some() {
            if print_template(&args.output, &item, std::slice::from_ref(&item)) {
                return Ok(());
            }
            return print_one(kind, &item, format);
        }
        let mut items = item["items"].as_array().cloned().unwrap_or_default();
        if let Some(path) = &args.sort_by {
            sort_items(&mut items, path);
        }
        if print_template(&args.output, &output::list_object(items.clone()), &items) {
            return Ok(());
        }
        return print_items(kind, &items, format, all_workspaces);
    }
    let mut items = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let mut query = vec![("limit", "1000".to_string())];
        query.extend(selector.iter().cloned());
        if let Some(token) = &next {
            query.push(("continue", token.clone()));
        }
        let page = client.json(Method::GET, &path, &query, None).await?;
        items.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["metadata"]["continue"].as_str() {
            Some(token) => next = Some(token.to_string()),
            None => break,
        }
    }
    if let Some(path) = &args.sort_by {
        sort_items(&mut items, path);
    }
    if print_template(&args.output, &output::list_object(items.clone()), &items) {
        return Ok(());
    }
    print_items(kind, &items, format, all_workspaces)
}

/// How long a watch waits for more events before it prints what it has, so that the first
/// list comes out as one table.
const WATCH_BATCH: std::time::Duration = std::time::Duration::from_millis(100);

async fn watch(
    client: &Client,
    kind: Kind,
    path: &str,
    selector: &[(&str, String)],
    format: Format,
    template: Option<&Template>,
    show_workspace: bool,
) -> anyhow::Result<()> {
    let mut query = vec![("watch", "true".to_string())];
    query.extend(selector.iter().cloned());
    let mut stream = Box::pin(client.lines(path, &query).await?);
    let mut printer = WatchTable::default();
    while let Some(event) = stream.next().await {
        let mut batch = vec![event?];
        while let Ok(Some(more)) = tokio::time::timeout(WATCH_BATCH, stream.next()).await {
            batch.push(more?);
        }
        for event in &batch {
            match event["type"].as_str().unwrap_or_default() {
                "ERROR" => anyhow::bail!(
                    "the watch ended: {}",
                    event["error"]["message"]
                        .as_str()
                        .unwrap_or("unknown error")
                ),
                "BOOKMARK" => {}
                _ if template.is_some() => {
                    println!(
                        "{}",
                        template.map_or_else(String::new, |t| t.render(&event["object"]))
                    );
                }
                _ if matches!(format, Format::Table | Format::Wide) => {}
                _ if format == Format::Yaml => print!("---\n{}", output::yaml(event)?),
                _ => println!("{}", serde_json::to_string(event)?),
            }
        }
        if template.is_none() && matches!(format, Format::Table | Format::Wide) {
            printer.print(kind, &batch, format == Format::Wide, show_workspace);
        }
    }
    Ok(())
}

/// The rows of a watch as one growing table: columns keep the widths they had (growing when a
/// value needs more), and a deleted object shows as it last was.
#[derive(Default)]
struct WatchTable {
    widths: Vec<usize>,
    last: std::collections::HashMap<(String, String), Value>,
}

impl WatchTable {
    fn print(&mut self, kind: Kind, batch: &[Value], wide: bool, show_workspace: bool) {
        let mut items = Vec::new();
        for event in batch {
            let event_type = event["type"].as_str().unwrap_or_default();
            if event_type == "BOOKMARK" {
                continue;
            }
            let object = &event["object"];
            let key = (
                object["metadata"]["workspace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
            let shown = if event_type == "DELETED" {
                self.last.remove(&key).unwrap_or_else(|| object.clone())
            } else {
                self.last.insert(key, object.clone());
                object.clone()
            };
            items.push((event_type, shown));
        }
        if items.is_empty() {
            return;
        }
        let rows: Vec<(Option<&str>, &Value)> = items
            .iter()
            .map(|(event, item)| (Some(*event), item))
            .collect();
        let table = output::resource_rows(kind, &rows, wide, show_workspace);
        let header_pending = self.widths.is_empty();
        if header_pending {
            // EVENT holds ADDED, MODIFIED or DELETED: wide enough for each from the start.
            self.widths.push("MODIFIED".len());
        }
        let headers: Vec<String> = table.headers.iter().map(|h| h.to_string()).collect();
        for line in std::iter::once(&headers).chain(&table.rows) {
            self.widths.resize(self.widths.len().max(line.len()), 0);
            for (width, cell) in self.widths.iter_mut().zip(line) {
                *width = (*width).max(cell.chars().count());
            }
        }
        if header_pending {
            println!("{}", self.line(&headers));
        }
        for row in &table.rows {
            println!("{}", self.line(row));
        }
    }

    fn line(&self, cells: &[String]) -> String {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < cells.len() {
                let pad = self.widths[i] - cell.chars().count() + 3;
                out.extend(std::iter::repeat_n(' ', pad));
            }
        }
        out
    }
}

/// `key=value` per label, one per line as `describe` prints them; `<none>` without labels.
fn labels(labels: &Value) -> String {
    match labels.as_object() {
        Some(map) if !map.is_empty() => map
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_string)))
            .collect::<Vec<_>>()
            .join("\n            "),
        _ => "<none>".into(),
    }
}

/// `Kind name (uid)` per owner reference, one per line as `describe` prints them; `<none>`
/// without owners.
fn owners(references: &Value) -> String {
    match references.as_array() {
        Some(owners) if !owners.is_empty() => owners
            .iter()
            .map(|o| {
                let controller = if o["controller"] == true {
                    ", controller"
                } else {
                    ""
                };
                format!(
                    "{} {} (uid {}{controller})",
                    o["kind"].as_str().unwrap_or_default(),
                    o["name"].as_str().unwrap_or_default(),
                    o["uid"].as_str().unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n            "),
        _ => "<none>".into(),
    }
}

/// Conditions as `describe` prints them, like kubectl: type, status, reason, time since the
/// last transition, message.
fn condition_table(conditions: &[Value]) -> String {
    let rows: Vec<Vec<String>> = conditions
        .iter()
        .map(|c| {
            let text = |field: &str| c[field].as_str().unwrap_or_default().to_string();
            vec![
                text("type"),
                text("status"),
                text("reason"),
                output::age(&c["lastTransitionTime"]),
                text("message"),
            ]
        })
        .collect();
    output::table(&["TYPE", "STATUS", "REASON", "SINCE", "MESSAGE"], &rows)
}

/// Status fields that hold Unix milliseconds (`startedAt`, `heartbeat`, ...), as RFC 3339
/// times for people.
fn readable_times(value: &Value) -> Value {
    const TIMES: [&str; 6] = [
        "heartbeat",
        "since",
        "reset",
        "weekStart",
        "time",
        "expires",
    ];
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(key, v)| {
                    let is_time =
                        key.ends_with("At") || key == "notBefore" || TIMES.contains(&key.as_str());
                    let v = match v.as_i64() {
                        Some(millis) if is_time && millis > 0 => {
                            dora_apiserver::timestamp(millis).into()
                        }
                        _ => readable_times(v),
                    };
                    (key.clone(), v)
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(readable_times).collect()),
        other => other.clone(),
    }
}

pub async fn describe(global: &Global, args: DescribeArgs) -> anyhow::Result<()> {
    let kind = kind(global, &args.kind).await?;
    let mut client = Client::new(global)?;
    let (place, path) = client.object_path(kind, &args.name).await?;
    let item = client.json(Method::GET, &path, &[], None).await?;
    let meta = &item["metadata"];
    let field = |name: &str, value: &Value| {
        let text = match value {
            // A view (GPU, CPU) is not stored: it has no owner, times or versions.
            Value::Null if kind.is_view() => return,
            Value::Null => "<none>".to_string(),
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        println!("{:<12}{text}", format!("{name}:"));
    };
    field("Name", &meta["name"]);
    field("Kind", &item["kind"]);
    if kind.scope().has_zone() {
        field("Zone", &meta["zone"]);
    }
    if kind.scope().has_workspace() {
        field("Workspace", &meta["workspace"]);
    }
    field("Labels", &Value::String(labels(&meta["labels"])));
    if meta["annotations"].is_object() {
        // One column wider than the others' labels: the lines below it align with its values.
        let annotations = labels(&meta["annotations"]).replace('\n', "\n ");
        println!("Annotations: {annotations}");
    }
    field("Owned by", &Value::String(owners(&meta["ownerReferences"])));
    if let Some(finalizers) = meta["finalizers"].as_array() {
        let names: Vec<&str> = finalizers.iter().filter_map(Value::as_str).collect();
        field("Finalizers", &Value::String(names.join(", ")));
    }
    if !meta["deletionTimestamp"].is_null() {
        field("Deleting", &meta["deletionTimestamp"]);
    }
    field("Owner", &meta["owner"]);
    field("Created", &meta["created"]);
    field("Updated", &meta["updated"]);
    field("Version", &meta["version"]);
    field("Generation", &meta["generation"]);
    field("Spec hash", &meta["specHash"]);
    let mut status = item["status"].clone();
    let conditions = status
        .as_object_mut()
        .and_then(|status| status.remove("conditions"));
    for (title, value) in [("Spec", &item["spec"]), ("Status", &status)] {
        if !value.is_null() {
            println!("{title}:");
            for line in output::yaml(&readable_times(value))?.lines() {
                println!("  {line}");
            }
        }
    }
    if let Some(Value::Array(conditions)) = conditions {
        println!("Conditions:");
        for line in condition_table(&conditions).lines() {
            println!("  {line}");
        }
    }
    let mut query = vec![
        ("kind", kind.name().to_string()),
        ("name", args.name.clone()),
        ("limit", "20".to_string()),
    ];
    if !place.zone.is_empty() {
        query.push(("zone", place.zone.clone()));
    }
    if let Some(workspace) = &place.workspace {
        query.push(("workspace", workspace.clone()));
    }
    let events = client.json(Method::GET, "/v1/events", &query, None).await?;
    let events = events["items"].as_array().cloned().unwrap_or_default();
    println!("Events:");
    if events.is_empty() {
        println!("  <none>");
    } else {
        for line in super::history::event_table(&events, false).lines() {
            println!("  {line}");
        }
    }
    Ok(())
}
