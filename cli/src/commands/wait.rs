//! `dora wait KIND NAME --for=...`: follows the resource's watch until it meets the condition.

use std::process::ExitCode;

use anyhow::{Context, bail};
use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use super::{kind, label};
use crate::args::{Global, WaitArgs};
use crate::client::Client;
use crate::jsonpath::{Path, scalar};

/// What `--for` asks.
#[derive(Debug, PartialEq)]
enum Wanted {
    /// `condition=NAME[=VALUE]`: a condition of the status, true unless VALUE says otherwise.
    Condition(String, String),
    /// `status=WORD`: the status word (`status.phase`, else the reported state).
    Status(String),
    /// `jsonpath={.a.b}[=VALUE]`: a field equal to VALUE, or present and not false.
    JsonPath(String, Path, Option<String>),
    /// `delete`: the resource is gone.
    Delete,
}

impl Wanted {
    fn parse(text: &str) -> anyhow::Result<Wanted> {
        if text == "delete" {
            return Ok(Wanted::Delete);
        }
        let usage = "use --for=condition=NAME[=VALUE], --for=status=WORD, \
                     --for=jsonpath='{.field}'[=VALUE] or --for=delete";
        let (what, rest) = text
            .split_once('=')
            .with_context(|| format!("--for={text} is not understood; {usage}"))?;
        match what {
            "condition" => {
                let (name, value) = rest.split_once('=').unwrap_or((rest, "true"));
                if name.is_empty() {
                    bail!("--for=condition= needs a condition name, e.g. condition=Ready");
                }
                Ok(Wanted::Condition(name.into(), value.to_ascii_lowercase()))
            }
            "status" if !rest.is_empty() => Ok(Wanted::Status(rest.into())),
            "status" => bail!("--for=status= needs a status word, e.g. status=Running"),
            "jsonpath" => {
                let (path, value) = match rest.rsplit_once("}=") {
                    Some((path, value)) => (format!("{path}}}"), Some(value.to_string())),
                    None => (rest.to_string(), None),
                };
                let parsed = Path::parse(&path).with_context(|| {
                    format!("--for=jsonpath needs a path such as '{{.status.computed.ready}}', got {path:?}")
                })?;
                Ok(Wanted::JsonPath(path, parsed, value))
            }
            other => bail!("--for={other}=... is not understood; {usage}"),
        }
    }

    /// Whether `object` meets the condition, and what it shows instead when it does not.
    fn check(&self, object: &Value) -> (bool, String) {
        let status = &object["status"];
        match self {
            Wanted::Delete => (false, "it still exists".into()),
            Wanted::Status(word) => {
                let current = status_word(object);
                let met = current
                    .as_deref()
                    .is_some_and(|c| c.eq_ignore_ascii_case(word));
                (
                    met,
                    format!("its status is {}", current.as_deref().unwrap_or("<none>")),
                )
            }
            Wanted::Condition(name, value) => {
                let current = condition(status, name);
                let met = current.as_deref() == Some(value.as_str());
                let shown = current.unwrap_or_else(|| "<none>".into());
                (met, format!("condition {name} is {shown}"))
            }
            Wanted::JsonPath(text, path, value) => {
                let found = path.first(object);
                let met = match (found, value) {
                    (Some(found), Some(value)) => scalar(found) == *value,
                    (Some(found), None) => !matches!(found, Value::Null | Value::Bool(false)),
                    (None, _) => false,
                };
                let shown = found.map_or("<none>".into(), scalar);
                (met, format!("{text} is {shown}"))
            }
        }
    }
}

/// The status word people see: `status.phase` where the API renders one, else what the
/// resource's own status says (a container's reported state, a node's readiness).
fn status_word(object: &Value) -> Option<String> {
    let status = &object["status"];
    if let Some(phase) = status["phase"].as_str() {
        return Some(phase.to_string());
    }
    if let Some(state) = status["observed"]["state"].as_str() {
        return Some(state.to_string());
    }
    status["computed"]["ready"]
        .as_bool()
        .map(|ready| if ready { "Ready" } else { "NotReady" }.to_string())
}

/// A condition's value in lower case: from a `conditions` list (kubectl's shape) or a boolean
/// field of that name in the status or one of its columns.
fn condition(status: &Value, name: &str) -> Option<String> {
    let listed = status["conditions"].as_array().and_then(|conditions| {
        conditions.iter().find(|c| {
            c["type"]
                .as_str()
                .is_some_and(|t| t.eq_ignore_ascii_case(name))
        })
    });
    if let Some(found) = listed {
        return Some(scalar(&found["status"]).to_ascii_lowercase());
    }
    let mut chars = name.chars();
    let camel: String = chars
        .next()
        .map(|c| c.to_ascii_lowercase())
        .into_iter()
        .chain(chars)
        .collect();
    [
        status,
        &status["computed"],
        &status["observed"],
        &status["desired"],
    ]
    .into_iter()
    .find_map(|part| part.get(&camel).filter(|v| v.is_boolean()))
    .map(|v| v.to_string())
}

pub async fn run(global: &Global, args: WaitArgs) -> anyhow::Result<ExitCode> {
    let kind = kind(global, &args.kind).await?;
    let wanted = Wanted::parse(&args.condition)?;
    let mut client = Client::new(global)?;
    let (_, path) = client.object_path(kind, &args.name).await?;
    let name = label(kind.name(), &args.name);
    let mut last = String::from("nothing was seen yet");
    let waited = tokio::time::timeout(args.timeout, async {
        // The watch starts before the read below, so nothing between the two is missed.
        let mut stream = Box::pin(client.lines(&path, &[("watch", "true".into())]).await?);
        let response = client.send(Method::GET, &path, &[], None).await?;
        if response.status() == StatusCode::NOT_FOUND {
            if wanted == Wanted::Delete {
                return Ok(());
            }
            bail!("{name} not found");
        }
        if !response.status().is_success() {
            return Err(dora_client::failure(response).await.into());
        }
        let object: Value = response.json().await?;
        let (met, shown) = wanted.check(&object);
        if met {
            return Ok(());
        }
        last = shown;
        while let Some(event) = stream.next().await {
            let event = event?;
            match event["type"].as_str().unwrap_or_default() {
                "DELETED" if wanted == Wanted::Delete => return Ok(()),
                "DELETED" => bail!("{name} was deleted"),
                "ADDED" | "MODIFIED" => {
                    let (met, shown) = wanted.check(&event["object"]);
                    if met {
                        return Ok(());
                    }
                    last = shown;
                }
                "ERROR" => bail!(
                    "the watch ended: {}",
                    event["error"]["message"]
                        .as_str()
                        .unwrap_or("unknown error")
                ),
                _ => {}
            }
        }
        bail!("the watch of {name} ended before the condition was met")
    })
    .await;
    match waited {
        Ok(Ok(())) => {
            println!("{name} condition met");
            Ok(ExitCode::SUCCESS)
        }
        Ok(Err(e)) => Err(e),
        Err(_) => bail!(
            "timed out after {} waiting for {name} (--for={}): {last}",
            short_duration(args.timeout),
            args.condition
        ),
    }
}

/// `90s`, `2m` or `500ms`, as `--timeout` takes it.
fn short_duration(duration: std::time::Duration) -> String {
    let secs = duration.as_secs();
    if secs > 0 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else if secs > 0 {
        format!("{secs}s")
    } else {
        format!("{}ms", duration.as_millis())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn conditions_parse_and_check() {
        let workload = json!({"status": {"phase": "Running", "computed": {"ready": 3}}});
        assert!(Wanted::parse("status=running").unwrap().check(&workload).0);
        assert!(!Wanted::parse("status=Pending").unwrap().check(&workload).0);
        let ready = Wanted::parse("jsonpath={.status.computed.ready}=3").unwrap();
        assert!(ready.check(&workload).0);
        let (met, shown) = Wanted::parse("jsonpath={.status.computed.ready}=4")
            .unwrap()
            .check(&workload);
        assert!(!met);
        assert_eq!(shown, "{.status.computed.ready} is 3");
        let node = json!({"status": {"computed": {"ready": true, "drained": false}}});
        assert!(Wanted::parse("condition=Ready").unwrap().check(&node).0);
        assert!(!Wanted::parse("condition=Drained").unwrap().check(&node).0);
        assert!(
            Wanted::parse("condition=Drained=false")
                .unwrap()
                .check(&node)
                .0
        );
        assert_eq!(Wanted::parse("delete").unwrap(), Wanted::Delete);
        assert!(Wanted::parse("ready").is_err());
        assert!(Wanted::parse("jsonpath=status").is_err());
        assert!(Wanted::parse("phase=Running").is_err());
    }
}
