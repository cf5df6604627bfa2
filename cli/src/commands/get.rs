//! `dora get` and `dora describe`.

use dora_apiserver::collection_path;
use dora_crds::{Kind, Scope};
use futures::StreamExt;
use reqwest::Method;
use serde_json::Value;

use super::kind;
use crate::args::{DescribeArgs, Format, GetArgs, Global};
use crate::client::Client;
use crate::output;

fn print_items(
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

pub async fn get(global: &Global, args: GetArgs) -> anyhow::Result<()> {
    let kind = kind(&args.kind)?;
    let format = if args.json { Format::Json } else { args.output };
    let mut client = Client::new(global)?;
    let all_workspaces =
        args.all_workspaces && kind.scope() == Scope::ZonedWorkspaced && args.name.is_none();
    let place = client.place(kind, all_workspaces).await?;
    let collection = collection_path(kind, &place.zone, place.workspace.as_deref());
    let path = match &args.name {
        Some(name) => format!("{collection}/{name}"),
        None => collection,
    };
    let selector: Vec<(&str, String)> = args
        .selector
        .iter()
        .map(|s| ("labelSelector", s.clone()))
        .collect();
    if args.watch {
        return watch(&client, kind, &path, &selector, format, all_workspaces).await;
    }
    if args.name.is_some() || kind.is_view() {
        // A view (gpu, cpu) comes whole, in one answer.
        let item = client.json(Method::GET, &path, &selector, None).await?;
        if args.name.is_some() {
            return print_one(kind, &item, format);
        }
        let items = item["items"].as_array().cloned().unwrap_or_default();
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
    print_items(kind, &items, format, all_workspaces)
}

async fn watch(
    client: &Client,
    kind: Kind,
    path: &str,
    selector: &[(&str, String)],
    format: Format,
    show_workspace: bool,
) -> anyhow::Result<()> {
    let mut query = vec![("watch", "true".to_string())];
    query.extend(selector.iter().cloned());
    let mut stream = Box::pin(client.lines(path, &query).await?);
    let mut header_printed = false;
    while let Some(event) = stream.next().await {
        let event = event?;
        let kind_of_event = event["type"].as_str().unwrap_or_default();
        match kind_of_event {
            "BOOKMARK" => continue,
            "ERROR" => anyhow::bail!(
                "the watch ended: {}",
                event["error"]["message"]
                    .as_str()
                    .unwrap_or("unknown error")
            ),
            _ => {}
        }
        let object = &event["object"];
        match format {
            Format::Table | Format::Wide => {
                let text = output::resource_table(
                    kind,
                    &[(Some(kind_of_event), object)],
                    format == Format::Wide,
                    show_workspace,
                );
                let mut lines = text.lines();
                let header = lines.next().unwrap_or_default();
                if !header_printed {
                    println!("{header}");
                    header_printed = true;
                }
                for line in lines {
                    println!("{line}");
                }
            }
            Format::Yaml => print!("---\n{}", output::yaml(&event)?),
            Format::Json => println!("{}", serde_json::to_string(&event)?),
        }
    }
    Ok(())
}

pub async fn describe(global: &Global, args: DescribeArgs) -> anyhow::Result<()> {
    let kind = kind(&args.kind)?;
    let mut client = Client::new(global)?;
    let place = client.place(kind, false).await?;
    let path = format!(
        "{}/{}",
        collection_path(kind, &place.zone, place.workspace.as_deref()),
        args.name
    );
    let item = client.json(Method::GET, &path, &[], None).await?;
    let meta = &item["metadata"];
    let field = |name: &str, value: &Value| {
        let text = match value {
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
    field("Labels", &meta["labels"]);
    field("Owner", &meta["owner"]);
    field("Created", &meta["created"]);
    field("Updated", &meta["updated"]);
    field("Version", &meta["version"]);
    field("Generation", &meta["generation"]);
    field("Spec hash", &meta["specHash"]);
    for (title, value) in [("Spec", &item["spec"]), ("Status", &item["status"])] {
        if !value.is_null() {
            println!("{title}:");
            for line in output::yaml(value)?.lines() {
                println!("  {line}");
            }
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
