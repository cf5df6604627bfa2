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
                text: substitute(&text, &vars),
            });
            continue;
        }
        for file in files_of(path)? {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            manifests.push(Manifest {
                source: file.display().to_string(),
                text: substitute(&text, &vars),
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
            Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
            _ => bail!("-e takes KEY=VALUE, got {pair:?}"),
        })
        .collect()
}

/// Replaces `${KEY}` and `$KEY` (longest keys first, so `$AB` is not eaten by `$A`).
fn substitute(text: &str, vars: &[(String, String)]) -> String {
    let mut sorted: Vec<&(String, String)> = vars.iter().collect();
    sorted.sort_by_key(|(key, _)| std::cmp::Reverse(key.len()));
    let mut out = text.to_string();
    for (key, value) in sorted {
        out = out
            .replace(&format!("${{{key}}}"), value)
            .replace(&format!("${key}"), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_both_forms_longest_first() {
        let vars = parse_env(&["A=1".into(), "AB=2".into()]).unwrap();
        assert_eq!(substitute("$AB ${A} $A", &vars), "2 1 1");
        assert!(parse_env(&["novalue".into()]).is_err());
    }
}
