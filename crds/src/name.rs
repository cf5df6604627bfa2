use crate::ValidationError;

/// Longest name a resource, zone or workspace may have.
pub const MAX_NAME_LEN: usize = 253;

/// What one kind of name may hold, and how an error says so.
struct Rule {
    /// `name` or `product name`.
    what: &'static str,
    /// What to write instead.
    hint: &'static str,
    allowed: fn(char) -> bool,
    /// Whether the name starts and ends as it must, and what the error says when not.
    edges: (fn(&str) -> bool, &'static str),
}

fn alphanumeric(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

const NAME: Rule = Rule {
    what: "name",
    hint: "use lowercase letters, digits, '.' and '-', starting and ending with a letter or digit",
    allowed: |c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-',
    edges: (
        |name| name.starts_with(alphanumeric) && name.ends_with(alphanumeric),
        "it must start and end with a letter or digit",
    ),
};

/// Characters a product name may hold besides ASCII letters and digits: those of GPU and CPU
/// model strings (`Tesla V100-SXM2-16GB`, `Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz`).
const PRODUCT_PUNCTUATION: &str = " ._-()@,+:";

const PRODUCT: Rule = Rule {
    what: "product name",
    hint: "use the model string as nodes report it: letters, digits, spaces and \" ._-()@,+:\", starting with a letter or digit",
    allowed: |c| c.is_ascii_alphanumeric() || PRODUCT_PUNCTUATION.contains(c),
    edges: (
        |name| name.starts_with(alphanumeric) && !name.ends_with(' '),
        "it must start with a letter or digit and not end with a space",
    ),
};

fn check(rule: &Rule, field: &str, name: &str) -> Result<(), ValidationError> {
    let bad = |why: &str| {
        Err(ValidationError::new(
            field,
            format!(
                "invalid {} {}: {why}; {} (at most {MAX_NAME_LEN} characters)",
                rule.what,
                crate::limits::quote(name),
                rule.hint
            ),
        ))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("it is too long");
    }
    if let Some(c) = name.chars().find(|c| !(rule.allowed)(*c)) {
        return bad(&format!("character {c:?} is not allowed"));
    }
    let (edges_ok, why) = rule.edges;
    if !edges_ok(name) {
        return bad(why);
    }
    Ok(())
}

/// Checks a resource, zone or workspace name: `[a-z0-9.-]`, starting and ending with a letter
/// or digit, at most 253 characters. `field` names the field in the error.
pub fn validate_name(field: &str, name: &str) -> Result<(), ValidationError> {
    check(&NAME, field, name)
}

/// Checks the name of a Resourcecredit, which is the product it prices as nodes report it (the
/// original system's manifests name them so): ASCII letters of either case, digits, spaces and
/// `._-()@,+:`, starting with a letter or digit and not ending with a space, at most 253
/// characters. Such names are percent-encoded in paths ([`crate::Scope::object_path`]).
pub fn validate_product_name(field: &str, name: &str) -> Result<(), ValidationError> {
    check(&PRODUCT, field, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_dotted_names() {
        assert!(validate_name("metadata.name", "train.resnet-50").is_ok());
    }

    #[test]
    fn rejects_bad_names() {
        for bad in ["", "Upper", "a_b", "-a", "a.", "a/b", &"x".repeat(254)] {
            let err = validate_name("metadata.name", bad).unwrap_err();
            assert_eq!(err.field, "metadata.name");
        }
    }

    #[test]
    fn product_names_are_model_strings() {
        for good in [
            "Tesla V100-SXM2-16GB",
            "NVIDIA A100-SXM4-80GB",
            "NVIDIA H100 80GB HBM3",
            "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz",
            "cpu",
        ] {
            assert!(
                validate_product_name("metadata.name", good).is_ok(),
                "{good}"
            );
        }
        for bad in [
            "",
            " Tesla",
            "Tesla ",
            "a/b",
            "a%2Fb",
            "tab\there",
            &"x".repeat(254),
        ] {
            let err = validate_product_name("metadata.name", bad).unwrap_err();
            assert_eq!(err.field, "metadata.name");
        }
    }
}
