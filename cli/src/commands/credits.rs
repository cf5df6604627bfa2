//! `dora credits`: credit use, limit and next reset per zone.

use dora_crds::Kind;
use reqwest::Method;
use serde_json::Value;

use crate::args::{CreditsArgs, Format, Global};
use crate::client::Client;
use crate::output;

pub async fn run(global: &Global, args: CreditsArgs) -> anyhow::Result<()> {
    let mut client = Client::new(global)?;
    let place = client.place(Kind::Usercredit, false).await?;
    let path = Kind::Usercredit.collection_path(&place.zone, None);
    let page = client
        .json(Method::GET, &path, &[("limit", "1000".into())], None)
        .await?;
    let items = page["items"].as_array().cloned().unwrap_or_default();
    match args.output {
        Format::Json => println!("{}", output::json_text(&output::list_object(items))),
        Format::Yaml => print!("{}", output::yaml(&output::list_object(items))?),
        Format::Table | Format::Wide => {
            if items.is_empty() {
                eprintln!("No credit accounts in zone {} yet.", place.zone);
                return Ok(());
            }
            if args.workloads {
                println!("{}", workload_table(&items));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = items.iter().map(|item| row(&place.zone, item)).collect();
            println!(
                "{}",
                output::table(
                    &[
                        "USER",
                        "ZONE",
                        "USED THIS WEEK",
                        "LIMIT",
                        "TOTAL",
                        "RESET",
                        "STATE"
                    ],
                    &rows
                )
            );
        }
    }
    Ok(())
}

fn row(zone: &str, item: &Value) -> Vec<String> {
    let account = &item["status"]["computed"];
    let number = |v: &Value| v.as_f64().map_or("-".to_string(), |n| format!("{n:.2}"));
    let reset = account["reset"]
        .as_i64()
        .map(dora_apiserver::timestamp)
        .unwrap_or_default();
    let state = if account["outOfCredit"].as_bool() == Some(true) {
        "OutOfCredit"
    } else {
        "Ok"
    };
    vec![
        item["spec"]["user"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        zone.to_string(),
        number(&account["weekly"]),
        number(&account["limit"]),
        number(&account["total"]),
        reset,
        state.into(),
    ]
}

/// Use this week per workload of every account shown, largest first.
fn workload_table(items: &[Value]) -> String {
    let mut rows: Vec<(f64, Vec<String>)> = Vec::new();
    for item in items {
        let user = item["spec"]["user"].as_str().unwrap_or_default();
        let used = item["status"]["computed"]["workloads"].as_object();
        for (workload, credits) in used.into_iter().flatten() {
            let credits = credits.as_f64().unwrap_or_default();
            let (workspace, name) = workload.split_once('/').unwrap_or(("", workload));
            rows.push((
                credits,
                vec![
                    name.to_string(),
                    workspace.to_string(),
                    user.to_string(),
                    format!("{credits:.2}"),
                ],
            ));
        }
    }
    rows.sort_by(|a, b| b.0.total_cmp(&a.0));
    let rows: Vec<Vec<String>> = rows.into_iter().map(|(_, row)| row).collect();
    output::table(&["WORKLOAD", "WORKSPACE", "USER", "USED THIS WEEK"], &rows)
}
