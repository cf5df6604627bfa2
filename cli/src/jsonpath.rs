//! kubectl's JSONPath templates: `{.metadata.name}`, `{.items[*].status.phase}`,
//! `{range .items[*]}{.metadata.name}{"\t"}{end}`, used by `-o jsonpath=`,
//! `-o custom-columns=`, `--sort-by` and `dora wait --for=jsonpath=`.

use anyhow::{Context, bail};
use serde_json::Value;

/// One step of a path.
#[derive(Debug, Clone, PartialEq)]
enum Step {
    Field(String),
    Index(usize),
    /// Every item of a list (or value of a map).
    All,
}

/// A path such as `.status.computed.gpus[0]` or `.items[*].metadata.name`.
#[derive(Debug, Clone, PartialEq)]
pub struct Path(Vec<Step>);

impl Path {
    /// Parses `.a.b[0][*]` (a leading `{` `}` pair, as kubectl writes it, is accepted).
    pub fn parse(text: &str) -> anyhow::Result<Path> {
        let inner = text
            .trim()
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(text.trim());
        let mut rest = inner
            .strip_prefix('.')
            .or_else(|| {
                inner
                    .strip_prefix('$')
                    .map(|r| r.strip_prefix('.').unwrap_or(r))
            })
            .with_context(|| format!("{text:?} is not a JSONPath; write it as {{.field.sub}}"))?;
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(after) = rest.strip_prefix('[') {
                let end = after
                    .find(']')
                    .with_context(|| format!("{text:?}: a [ is not closed"))?;
                let index = after[..end].trim();
                steps.push(match index {
                    "*" => Step::All,
                    quoted if quoted.starts_with('\'') || quoted.starts_with('"') => {
                        Step::Field(quoted.trim_matches(|c| c == '\'' || c == '"').to_string())
                    }
                    number => Step::Index(number.parse().with_context(|| {
                        format!("{text:?}: [{number}] is neither an index nor *")
                    })?),
                });
                rest = &after[end + 1..];
            } else {
                let rest_after_dot = rest.strip_prefix('.').unwrap_or(rest);
                let end = rest_after_dot
                    .find(['.', '['])
                    .unwrap_or(rest_after_dot.len());
                let name = &rest_after_dot[..end];
                if name.is_empty() {
                    bail!("{text:?}: an empty field name");
                }
                steps.push(if name == "*" {
                    Step::All
                } else {
                    Step::Field(name.to_string())
                });
                rest = &rest_after_dot[end..];
            }
        }
        Ok(Path(steps))
    }

    /// Every value the path reaches from `root`, in order.
    pub fn values<'a>(&self, root: &'a Value) -> Vec<&'a Value> {
        let mut current = vec![root];
        for step in &self.0 {
            current = current
                .into_iter()
                .flat_map(|value| -> Vec<&'a Value> {
                    match (step, value) {
                        (Step::Field(name), Value::Object(map)) => {
                            map.get(name).into_iter().collect()
                        }
                        (Step::Index(i), Value::Array(items)) => {
                            items.get(*i).into_iter().collect()
                        }
                        (Step::All, Value::Array(items)) => items.iter().collect(),
                        (Step::All, Value::Object(map)) => map.values().collect(),
                        _ => Vec::new(),
                    }
                })
                .collect();
        }
        current
    }

    /// The first value the path reaches.
    pub fn first<'a>(&self, root: &'a Value) -> Option<&'a Value> {
        self.values(root).into_iter().next()
    }
}

/// A value as a template prints it: strings bare, everything else as JSON.
pub fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Text(String),
    Path(Path),
    Range(Path, Vec<Node>),
}

/// A parsed template: text with `{path}`, `{"literal"}` and `{range path}...{end}`.
#[derive(Debug, Clone, PartialEq)]
pub struct Template(Vec<Node>);

impl Template {
    pub fn parse(text: &str) -> anyhow::Result<Template> {
        let mut root = Vec::new();
        // The `{range}`s open around the text being read, innermost last.
        let mut ranges: Vec<(Path, Vec<Node>)> = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            let nodes = ranges.last_mut().map_or(&mut root, |(_, body)| body);
            let Some(open) = rest.find('{') else {
                nodes.push(Node::Text(rest.to_string()));
                break;
            };
            if open > 0 {
                nodes.push(Node::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .map(|c| open + c)
                .with_context(|| format!("jsonpath {text:?}: a {{ is not closed"))?;
            let inner = rest[open + 1..close].trim();
            rest = &rest[close + 1..];
            if let Some(quoted) = inner.strip_prefix('"').and_then(|i| i.strip_suffix('"')) {
                let literal = quoted
                    .replace("\\n", "\n")
                    .replace("\\t", "\t")
                    .replace("\\\"", "\"");
                nodes.push(Node::Text(literal));
            } else if let Some(path) = inner.strip_prefix("range ") {
                ranges.push((Path::parse(path)?, Vec::new()));
            } else if inner == "end" {
                let Some((path, body)) = ranges.pop() else {
                    bail!("jsonpath {text:?}: {{end}} without {{range ...}}");
                };
                let parent = ranges.last_mut().map_or(&mut root, |(_, body)| body);
                parent.push(Node::Range(path, body));
            } else {
                nodes.push(Node::Path(Path::parse(inner)?));
            }
        }
        if !ranges.is_empty() {
            bail!("jsonpath {text:?}: {{range ...}} without {{end}}");
        }
        Ok(Template(root))
    }

    /// The template filled from `root`; several values of one path are joined by spaces.
    pub fn render(&self, root: &Value) -> String {
        let mut out = String::new();
        render_nodes(&self.0, root, &mut out);
        out
    }
}

fn render_nodes(nodes: &[Node], root: &Value, out: &mut String) {
    for node in nodes {
        match node {
            Node::Text(text) => out.push_str(text),
            Node::Path(path) => {
                let values: Vec<String> = path.values(root).into_iter().map(scalar).collect();
                out.push_str(&values.join(" "));
            }
            Node::Range(path, body) => {
                for value in path.values(root) {
                    render_nodes(body, value, out);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn list() -> Value {
        json!({"items": [
            {"metadata": {"name": "a"}, "status": {"gpus": [0, 1], "phase": "Running"}},
            {"metadata": {"name": "b"}, "status": {"phase": "Pending"}},
        ]})
    }

    #[test]
    fn paths_reach_fields_indices_and_every_item() {
        let list = list();
        let names = Path::parse("{.items[*].metadata.name}").unwrap();
        assert_eq!(names.values(&list), vec!["a", "b"]);
        let gpu = Path::parse(".items[0].status.gpus[1]").unwrap();
        assert_eq!(gpu.first(&list), Some(&json!(1)));
        assert!(
            Path::parse(".items[0].nothing")
                .unwrap()
                .first(&list)
                .is_none()
        );
        assert!(Path::parse("items").is_err());
        assert!(Path::parse(".items[x]").is_err());
    }

    #[test]
    fn templates_print_text_values_and_ranges() {
        let list = list();
        let names = Template::parse("{.items[*].metadata.name}").unwrap();
        assert_eq!(names.render(&list), "a b");
        let rows =
            Template::parse(r#"{range .items[*]}{.metadata.name}{"\t"}{.status.phase}{"\n"}{end}"#)
                .unwrap();
        assert_eq!(rows.render(&list), "a\tRunning\nb\tPending\n");
        assert!(Template::parse("{range .items[*]}{.a}").is_err());
        assert!(Template::parse("{end}").is_err());
        assert!(Template::parse("{.a").is_err());
    }
}
