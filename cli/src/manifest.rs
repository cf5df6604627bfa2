//! Reading manifests from files, folders and standard input, with `$KEY` substitution.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// A manifest and where it came from.
pub struct Manifest {
    pub source: String,
    pub text: String,
}

/// Reads every manifest named: files, `.yaml`/`.yml`/`.json` files of folders (sorted), or `-`.
pub fn read_all(paths: &[PathBuf], env: &[String]) -> anyhow::Result<Vec<Manifest>> {
    let vars = parse_env(env)?;
    let mut manifests = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read standard input")?;
            manifests.push(Manifest {
                source: "<stdin>".into(),
                text: substitute(&text, &vars).context("<stdin>")?,
            });
            continue;
        }
        for file in files_of(path)? {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            manifests.push(Manifest {
                source: file.display().to_string(),
                text: substitute(&text, &vars).with_context(|| file.display().to_string())?,
            });
        }
    }
    Ok(manifests)
}

fn files_of(path: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let meta =
        std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in
        std::fs::read_dir(path).with_context(|| format!("cannot list {}", path.display()))?
    {
        let file = entry?.path();
        let manifest = file
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        if manifest && file.is_file() {
            files.push(file);
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("{} holds no .yaml, .yml or .json files", path.display());
    }
    Ok(files)
}

fn parse_env(env: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    env.iter()
        .map(|pair| match pair.split_once('=') {
            Some((key, value)) if is_name(key) => Ok((key.to_string(), value.to_string())),
            Some((key, _)) => {
                bail!("-e {key:?}: a name is letters, digits and _ and does not start with a digit")
            }
            None => bail!("-e takes KEY=VALUE, got {pair:?}"),
        })
        .collect()
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Whether `text` is a variable name: `[A-Za-z_][A-Za-z0-9_]*`.
fn is_name(text: &str) -> bool {
    text.chars().all(is_name_char) && text.chars().next().is_some_and(|c| !c.is_ascii_digit())
}

/// The variable named right after a `$`: `{NAME}` or `NAME` up to the first character that
/// cannot be part of a name. Returns the name and how many bytes the reference takes.
fn reference(text: &str) -> Option<(&str, usize)> {
    if let Some(braced) = text.strip_prefix('{') {
        let end = braced.find('}')?;
        let name = &braced[..end];
        return is_name(name).then_some((name, end + 2));
    }
    let end = text.find(|c| !is_name_char(c)).unwrap_or(text.len());
    let name = &text[..end];
    is_name(name).then_some((name, end))
}

/// Replaces `${KEY}` and `$KEY` in one pass: a `$KEY` reference runs to the end of the name
/// (`$APPLE` is not `$A` followed by `PPLE`), values are not scanned again, and `$$` stands
/// for a `$` that is kept (`$$HOME` for a shell's own variable). Without variables the text is
/// left as it is; with them, a reference to one not given is an error naming it.
fn substitute(text: &str, vars: &[(String, String)]) -> anyhow::Result<String> {
    if vars.is_empty() {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut missing: Vec<String> = Vec::new();
    let mut rest = text;
    while let Some(dollar) = rest.find('$') {
        out.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        if let Some(escaped) = after.strip_prefix('$') {
            out.push('$');
            rest = escaped;
            continue;
        }
        match reference(after) {
            Some((name, len)) => {
                match vars.iter().rev().find(|(key, _)| key == name) {
                    Some((_, value)) => out.push_str(value),
                    None => {
                        let line = text[..text.len() - rest.len() + dollar]
                            .lines()
                            .count()
                            .max(1);
                        missing.push(format!("${name} (line {line})"));
                    }
                }
                rest = &after[len..];
            }
            None => {
                out.push('$');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    if !missing.is_empty() {
        bail!(
            "not set: {}; pass -e NAME=VALUE for each, or write $$NAME to keep a literal $NAME",
            missing.join(", ")
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[&str]) -> Vec<(String, String)> {
        let pairs: Vec<String> = pairs.iter().map(|p| p.to_string()).collect();
        parse_env(&pairs).unwrap()
    }

    #[test]
    fn substitutes_both_forms_by_whole_name() {
        let vars = vars(&["A=1", "AB=2"]);
        assert_eq!(substitute("$AB ${A} $A", &vars).unwrap(), "2 1 1");
        assert_eq!(
            substitute("$A-$AB.$$A_x ${A}B", &vars).unwrap(),
            "1-2.$A_x 1B"
        );
        assert!(parse_env(&["novalue".into()]).is_err());
    }

    #[test]
    fn a_name_is_not_replaced_inside_a_longer_one() {
        let vars = vars(&["A=1", "APPLE=2", "A9=3", "A_=4"]);
        assert_eq!(
            substitute("$APPLE ${APPLE} $A9 $A_ $A", &vars).unwrap(),
            "2 2 3 4 1"
        );
        assert_eq!(substitute("image: \"$A\"", &vars).unwrap(), "image: \"1\"");
    }

    #[test]
    fn a_variable_not_given_is_named() {
        let vars = vars(&["A=1"]);
        let error = substitute("a: $A\nb: ${MISSING}\nc: $$HOME $OTHER", &vars)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("$MISSING (line 2), $OTHER (line 3)"),
            "{error}"
        );
        assert_eq!(substitute("$$HOME", &vars).unwrap(), "$HOME");
        assert_eq!(substitute("$B", &[]).unwrap(), "$B");
    }

    #[test]
    fn values_are_not_substituted_again() {
        let vars = vars(&["A=$B", "B=x", "C=${A}"]);
        assert_eq!(substitute("$A ${C} $B", &vars).unwrap(), "$B ${A} x");
    }

    #[test]
    fn stray_dollars_stay() {
        let vars = vars(&["A=1"]);
        for text in [
            "$", "$ A", "${", "${A", "${}", "${1A}", "$1", "cost: 5$", "ü$ü",
        ] {
            assert_eq!(substitute(text, &vars).unwrap(), text, "{text:?}");
        }
        assert_eq!(substitute("$$", &vars).unwrap(), "$");
        assert_eq!(substitute("$$$A", &vars).unwrap(), "$1");
        assert_eq!(substitute("ü$Aü", &vars).unwrap(), "ü1ü");
    }

    #[test]
    fn keys_must_be_names() {
        for bad in ["=1", "A-B=1", "1A=1", "A B=1", "$A=1"] {
            assert!(parse_env(&[bad.into()]).is_err(), "{bad:?}");
        }
        assert_eq!(vars(&["_a1=x=y"]), vec![("_a1".into(), "x=y".into())]);
    }
}
