//! Label selectors in kubectl's syntax: `key=value`, `key==value`, `key!=value`,
//! `key in (a,b)`, `key notin (a,b)`, `key`, `!key`; requirements separated by commas must all
//! hold.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

/// A parsed label selector. The empty selector matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

/// One requirement on one label.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// Why a selector does not parse: the selector and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectorError {
    pub selector: String,
    pub problem: String,
}

impl fmt::Display for SelectorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid label selector {:?}: {}; expected requirements such as key=value, key!=value, \
             key in (a,b), key notin (a,b), key or !key, separated by commas",
            self.selector, self.problem
        )
    }
}

impl std::error::Error for SelectorError {}

impl Selector {
    /// Parses `text`; an empty or blank text is the selector that matches everything.
    pub fn parse(text: &str) -> Result<Selector, SelectorError> {
        let fail = |problem: String| SelectorError {
            selector: text.to_string(),
            problem,
        };
        let mut requirements = Vec::new();
        for part in split_top_level(text).map_err(fail)? {
            let part = part.trim();
            if part.is_empty() {
                if text.trim().is_empty() {
                    continue;
                }
                return Err(fail("an empty requirement (two commas in a row?)".into()));
            }
            requirements.push(Requirement::parse(part).map_err(fail)?);
        }
        Ok(Selector { requirements })
    }

    /// Whether labels satisfy every requirement.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        self.requirements.iter().all(|r| r.matches(labels))
    }

    /// Whether this selector matches everything.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Selector, SelectorError> {
        Selector::parse(text)
    }
}

/// Splits at commas outside parentheses.
fn split_top_level(text: &str) -> Result<Vec<&str>, String> {
    let mut parts = Vec::new();
    let mut depth = 0u32;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '(' if depth > 0 => return Err("nested parentheses".into()),
            '(' => depth = 1,
            ')' if depth == 0 => return Err("a ')' without its '('".into()),
            ')' => depth = 0,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if depth > 0 {
        return Err("a '(' without its ')'".into());
    }
    parts.push(&text[start..]);
    Ok(parts)
}

impl Requirement {
    fn parse(part: &str) -> Result<Requirement, String> {
        if let Some(key) = part.strip_prefix('!') {
            return Ok(Requirement::NotExists(label_key(key.trim())?));
        }
        for (operator, make) in [
            (
                "!=",
                Requirement::NotEquals as fn(String, String) -> Requirement,
            ),
            ("==", Requirement::Equals),
            ("=", Requirement::Equals),
        ] {
            if let Some((key, value)) = part.split_once(operator) {
                return Ok(make(label_key(key.trim())?, label_value(value.trim())?));
            }
        }
        if let Some(open) = part.find('(') {
            let (head, list) = part.split_at(open);
            let mut words = head.split_whitespace();
            let (Some(key), Some(operator), None) = (words.next(), words.next(), words.next())
            else {
                return Err(format!(
                    "{part:?} should read `key in (a,b)` or `key notin (a,b)`"
                ));
            };
            let inner = list
                .strip_prefix('(')
                .and_then(|l| l.strip_suffix(')'))
                .ok_or_else(|| format!("nothing may follow the ')' in {part:?}"))?;
            let values = inner
                .split(',')
                .map(|v| label_value(v.trim()))
                .collect::<Result<Vec<_>, _>>()?;
            if values.iter().all(String::is_empty) {
                return Err(format!("{part:?} lists no values"));
            }
            let key = label_key(key)?;
            return match operator {
                "in" => Ok(Requirement::In(key, values)),
                "notin" => Ok(Requirement::NotIn(key, values)),
                other => Err(format!(
                    "unknown operator {other:?} in {part:?}; use in or notin"
                )),
            };
        }
        if part.split_whitespace().count() > 1 {
            return Err(format!(
                "{part:?} is not a requirement; use =, ==, !=, in (...), notin (...) or a bare key"
            ));
        }
        Ok(Requirement::Exists(label_key(part)?))
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        match self {
            Requirement::Equals(key, value) => labels.get(key) == Some(value),
            Requirement::NotEquals(key, value) => labels.get(key) != Some(value),
            Requirement::In(key, values) => labels.get(key).is_some_and(|v| values.contains(v)),
            Requirement::NotIn(key, values) => labels.get(key).is_none_or(|v| !values.contains(v)),
            Requirement::Exists(key) => labels.contains_key(key),
            Requirement::NotExists(key) => !labels.contains_key(key),
        }
    }
}

/// A label key: an optional `prefix/` then letters, digits, `-`, `_` and `.`.
fn label_key(key: &str) -> Result<String, String> {
    if key.is_empty() {
        return Err("a requirement has no label key".into());
    }
    let name = key.rsplit_once('/').map_or(key, |(_, name)| name);
    if name.is_empty()
        || !key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
    {
        return Err(format!(
            "{key:?} is not a label key (letters, digits, '-', '_', '.', an optional prefix/)"
        ));
    }
    Ok(key.to_string())
}

/// A label value: letters, digits, `-`, `_` and `.`; possibly empty.
fn label_value(value: &str) -> Result<String, String> {
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!(
            "{value:?} is not a label value (letters, digits, '-', '_', '.')"
        ));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn matches(selector: &str, pairs: &[(&str, &str)]) -> bool {
        Selector::parse(selector).unwrap().matches(&labels(pairs))
    }

    #[test]
    fn equality_and_inequality() {
        assert!(matches("team=demo", &[("team", "demo")]));
        assert!(matches("team==demo", &[("team", "demo")]));
        assert!(!matches("team=demo", &[("team", "ml")]));
        assert!(!matches("team=demo", &[]));
        assert!(matches("team!=demo", &[("team", "ml")]));
        assert!(matches("team!=demo", &[]), "a missing label is not equal");
        assert!(!matches("team!=demo", &[("team", "demo")]));
    }

    #[test]
    fn sets() {
        assert!(matches("tier in (a, b)", &[("tier", "b")]));
        assert!(!matches("tier in (a,b)", &[("tier", "c")]));
        assert!(!matches("tier in (a,b)", &[]));
        assert!(matches("tier notin (a,b)", &[("tier", "c")]));
        assert!(matches("tier notin (a,b)", &[]));
        assert!(!matches("tier notin (a,b)", &[("tier", "a")]));
    }

    #[test]
    fn existence() {
        assert!(matches("gpu", &[("gpu", "")]));
        assert!(!matches("gpu", &[]));
        assert!(matches("!gpu", &[]));
        assert!(!matches("!gpu", &[("gpu", "yes")]));
    }

    #[test]
    fn commas_and_every_requirement() {
        let both = &[("team", "demo"), ("tier", "a")];
        assert!(matches("team=demo,tier in (a,b),!gone", both));
        assert!(!matches("team=demo,tier notin (a,b)", both));
        assert!(matches("", both), "the empty selector matches everything");
        assert!(Selector::parse(" ").unwrap().is_empty());
        assert!(matches(
            "example.com/team=demo",
            &[("example.com/team", "demo")]
        ));
    }

    #[test]
    fn errors_name_the_selector_and_the_problem() {
        for (text, problem) in [
            ("tier in (a,b", "without its ')'"),
            ("tier in a,b)", "without its '('"),
            ("tier within (a)", "unknown operator \"within\""),
            ("team=demo,,tier=a", "empty requirement"),
            ("team=de mo", "not a label value"),
            ("=demo", "no label key"),
            ("team demo", "not a requirement"),
            ("tier in ()", "lists no values"),
            ("te$m", "not a label key"),
        ] {
            let error = Selector::parse(text).unwrap_err();
            assert_eq!(error.selector, text);
            assert!(error.problem.contains(problem), "{text}: {error}");
            assert!(error.to_string().contains(&format!("{text:?}")), "{error}");
        }
    }
}
