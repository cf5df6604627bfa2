use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a token lets its bearer do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum TokenPurpose {
    /// Acts as `user`, within the user's roles.
    User,
    /// A node agent's credential: reports for one node of a zone.
    Node,
    /// Obtains the credential of a new node of a zone.
    Join,
}

/// The record of a token the API server issued, named by the token's id: whom it is for,
/// until when, and whether it was revoked. The token itself is never stored. Records are made
/// by Dora when it mints a token and removed when the token expires.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TokenSpec {
    /// The token's subject: a user, `node:NAME` or `join:ZONE`.
    pub user: String,
    pub purpose: TokenPurpose,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zone: Option<String>,
    /// The node of a node credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// When the token expires (RFC 3339).
    pub expires: String,
    /// When the token was revoked (RFC 3339); it is refused from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<String>,
    /// Who revoked it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
}
