use crate::ValidationError;

/// Longest name a resource, zone or workspace may have.
pub const MAX_NAME_LEN: usize = 253;

/// Checks a resource, zone or workspace name: `[a-z0-9.-]`, starting and ending with a letter
/// or digit, at most 253 characters. `field` names the field in the error.
pub fn validate_name(field: &str, name: &str) -> Result<(), ValidationError> {
    let bad = |why: &str| {
        Err(ValidationError::new(
            field,
            format!(
                "invalid name {name:?}: {why}; use lowercase letters, digits, '.' and '-', starting and ending with a letter or digit (at most {MAX_NAME_LEN} characters)"
            ),
        ))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("it is too long");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '.' || *c == '-'))
    {
        return bad(&format!("character {c:?} is not allowed"));
    }
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    if !edge_ok(name.chars().next()) || !edge_ok(name.chars().last()) {
        return bad("it must start and end with a letter or digit");
    }
    Ok(())
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
}
