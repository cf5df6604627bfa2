//! `dora versions` and `dora events`.

use anyhow::bail;
use futures::StreamExt;
use reqwest::Method;
use serde_json::Value;

use super::kind;
use crate::args::{EventsArgs, Format, Global, VersionsArgs};
use crate::client::Client;
use crate::output;

pub async fn versions(global: &Global, args: VersionsArgs) -> anyhow::Result<()> {
    let kind = kind(global, &args.kind).await?;
    let mut client = Client::new(global)?;
    let (_, path) = client.object_path(kind, &args.name).await?;
    let path = format!("{path}/versions");
    let list = client.json(Method::GET, &path, &[], None).await?;
    match args.output {
        Format::Yaml => print!("{}", output::yaml(&list)?),
        Format::Json => println!("{}", output::json_text(&list)),
        Format::Table | Format::Wide => {
            let rows: Vec<Vec<String>> = list["items"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|v| {
                    let when = if v["current"].as_bool() == Some(true) {
                        &v["updated"]
                    } else {
                        &v["replaced"]
                    };
                    vec![
                        v["generation"].to_string(),
                        v["specHash"].as_str().unwrap_or_default().to_string(),
                        output::age(when),
                        if v["current"].as_bool() == Some(true) {
                            "*".into()
                        } else {
                            String::new()
                        },
                    ]
                })
                .collect();
            println!(
                "{}",
                output::table(&["GENERATION", "HASH", "AGE", "CURRENT"], &rows)
            );
        }
    }
    Ok(())
}

/// When an event was last seen; a repeated one also says how often since its first
/// (`5s (x3 over 2m)`, as kubectl shows event series).
fn last_seen(event: &Value) -> String {
    let age = output::age(&event["time"]);
    match event["count"].as_u64() {
        Some(count) if count > 1 => {
            format!("{age} (x{count} over {})", output::age(&event["firstTime"]))
        }
        _ => age,
    }
}

/// Events as a table: when last seen, type, reason, object, message.
pub fn event_table(events: &[Value], with_object: bool) -> String {
    let mut headers = vec!["LAST SEEN", "TYPE", "REASON"];
    if with_object {
        headers.push("OBJECT");
    }
    headers.push("MESSAGE");
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            let mut row = vec![last_seen(e), text(&e["type"]), text(&e["reason"])];
            if with_object {
                row.push(super::label(
                    e["object"]["kind"].as_str().unwrap_or_default(),
                    e["object"]["metadata"]["name"].as_str().unwrap_or_default(),
                ));
            }
            row.push(text(&e["message"]));
            row
        })
        .collect();
    output::table(&headers, &rows)
}

fn text(value: &Value) -> String {
    value.as_str().unwrap_or_default().to_string()
}

pub async fn events(global: &Global, args: EventsArgs) -> anyhow::Result<()> {
    let mut client = Client::new(global)?;
    let mut query = vec![("limit", args.limit.to_string())];
    let place = match &args.kind {
        Some(kind_text) => {
            let kind = kind(global, kind_text).await?;
            query.push(("kind", kind.name().to_string()));
            if let Some(name) = &args.name {
                query.push(("name", name.clone()));
            }
            client.place(kind, args.name.is_none()).await?
        }
        None if args.name.is_some() => bail!("give the kind too: `dora events KIND NAME`"),
        None => client.place(dora_crds::Kind::Node, true).await?,
    };
    if !place.zone.is_empty() {
        query.push(("zone", place.zone));
    }
    if let Some(workspace) = place.workspace {
        query.push(("workspace", workspace));
    }
    if !args.watch {
        let list = client.json(Method::GET, "/v1/events", &query, None).await?;
        let items = list["items"].as_array().cloned().unwrap_or_default();
        match args.output {
            Format::Yaml => print!("{}", output::yaml(&output::list_object(items))?),
            Format::Json => println!("{}", output::json_text(&output::list_object(items))),
            Format::Table | Format::Wide if items.is_empty() => eprintln!("No events found."),
            Format::Table | Format::Wide => println!("{}", event_table(&items, true)),
        }
        return Ok(());
    }
    query.push(("watch", "true".into()));
    let mut stream = Box::pin(client.lines("/v1/events", &query).await?);
    let mut header_printed = false;
    while let Some(event) = stream.next().await {
        let event = event?;
        match event["type"].as_str() {
            Some("BOOKMARK") => continue,
            Some("ERROR") => bail!(
                "the watch ended: {}",
                event["error"]["message"]
                    .as_str()
                    .unwrap_or("unknown error")
            ),
            _ => {}
        }
        match args.output {
            Format::Yaml => print!("---\n{}", output::yaml(&event)?),
            Format::Json => println!("{}", serde_json::to_string(&event)?),
            Format::Table | Format::Wide => {
                let table = event_table(std::slice::from_ref(&event), true);
                let mut lines = table.lines();
                let header = lines.next().unwrap_or_default();
                if !header_printed {
                    println!("{header}");
                    header_printed = true;
                }
                lines.for_each(|line| println!("{line}"));
            }
        }
    }
    Ok(())
}
