//! Records of the tokens the cluster issued: `Token` objects named by the token's id, made
//! when a token is minted, marked when it is revoked, their last use written every minute, and
//! removed once the token has expired. The directory keeps the ids of revoked tokens, which
//! every request checks; other API servers learn of a revocation through the change feed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use dora_crds::spec::{TokenPurpose, TokenSpec, Verb};
use dora_crds::{Kind, spec_hash};
use dora_store::{MetaWrite, ObjectKey, Precondition, Row, SpecWrite, StatusColumn, StoreError};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::token::{LEEWAY_SECS, now_secs};
use crate::{ApiError, Identity, IssuedToken, Service, TokenClaims, render};

/// How often the records of expired tokens are removed.
const SWEEP_EVERY: Duration = Duration::from_secs(600);
/// Most tokens whose last use waits to be written; more in one minute are written next time
/// they are used.
const MAX_PENDING_USES: usize = 100_000;

/// The key of the record of token `id`.
pub(crate) fn key(id: &str) -> ObjectKey {
    ObjectKey::new(Kind::Token, "", "", id)
}

/// Writes the record of a token just minted.
pub(crate) async fn record(
    service: &Service,
    issued: &IssuedToken,
    claims: &TokenClaims,
) -> Result<(), ApiError> {
    let purpose = if claims.join {
        TokenPurpose::Join
    } else if claims.node.is_some() {
        TokenPurpose::Node
    } else {
        TokenPurpose::User
    };
    let spec = TokenSpec {
        user: issued.user.clone(),
        purpose,
        zone: claims.zone.clone(),
        node: claims.node.clone(),
        expires: render::timestamp(seconds_to_millis(issued.expires)),
        revoked: None,
        revoked_by: None,
    };
    write(service, &issued.id, &spec).await
}

/// Writes a record as Dora writes the rows of its other system kinds: straight to the store
/// (no one applies them), then to the directory, which keeps the revoked ids.
async fn write(service: &Service, id: &str, spec: &TokenSpec) -> Result<(), ApiError> {
    let spec = serde_json::to_value(spec)
        .map_err(|e| ApiError::invalid("spec", format!("the token record: {e}")))?;
    let outcome = service
        .store
        .put_spec(SpecWrite {
            key: key(id),
            precondition: Precondition::None,
            owner: Identity::system().user,
            labels: Default::default(),
            meta: MetaWrite::default(),
            spec_hash: spec_hash(Kind::Token, &spec),
            spec,
            desired: Value::Null,
            computed: None,
            fence: None,
        })
        .await?;
    service.directory.put(outcome.row());
    Ok(())
}

fn seconds_to_millis(seconds: u64) -> i64 {
    i64::try_from(seconds).unwrap_or(i64::MAX / 1000) * 1000
}

/// Unix seconds of an RFC 3339 time; 0 when it does not parse.
fn unix_seconds(text: &str) -> u64 {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .and_then(|t| u64::try_from(t.unix_timestamp()).ok())
        .unwrap_or_default()
}

/// Whether `identity` may see and revoke the token `spec` records: its own user token, any
/// user's for an administrator (Token on User everywhere), a node's or a join token for whoever
/// may mint those in its zone.
pub(crate) fn may_manage(service: &Service, identity: &Identity, spec: &TokenSpec) -> bool {
    match spec.purpose {
        TokenPurpose::User => spec.user == identity.user || is_token_admin(service, identity),
        TokenPurpose::Node | TokenPurpose::Join => service
            .authorize(
                identity,
                Verb::Token,
                Kind::Node,
                spec.zone.as_deref().unwrap_or_default(),
                "",
            )
            .is_ok(),
    }
}

/// Whether `identity` may mint and revoke any user's tokens.
pub(crate) fn is_token_admin(service: &Service, identity: &Identity) -> bool {
    identity.system
        || service
            .directory
            .allows(&identity.user, Verb::Token, Kind::User, "All", "All")
}

/// The record of token `id` and its spec.
pub(crate) async fn read(service: &Service, id: &str) -> Result<(Row, TokenSpec), ApiError> {
    let key = key(id);
    let row = service.store.get(&key).await?.ok_or_else(|| {
        ApiError::object_not_found(&key).with_hint("`dora token list` shows the ids of your tokens")
    })?;
    let spec = dora_crds::decode(&row.resource)
        .map_err(|e| ApiError::invalid("spec", format!("the stored token record: {e}")))?;
    Ok((row, spec))
}

/// Revokes token `id` on behalf of `identity`: every API server refuses it from the moment the
/// record says so. Revoking a revoked token changes nothing.
pub(crate) async fn revoke(
    service: &Service,
    identity: &Identity,
    id: &str,
) -> Result<Row, ApiError> {
    let (row, mut spec) = read(service, id).await?;
    if !may_manage(service, identity, &spec) {
        // Someone else's token is not even said to exist.
        return Err(ApiError::object_not_found(&row.key));
    }
    if spec.revoked.is_none() {
        spec.revoked = Some(render::timestamp(dora_store::now_millis()));
        spec.revoked_by = Some(identity.user.clone());
        write(service, id, &spec).await?;
        tracing::info!(token = %id, user = %spec.user, by = %identity.user, "token revoked");
    }
    Ok(read(service, id).await?.0)
}

/// Revokes every credential of node `node` of `zone`: a deleted node's agent can no longer act.
pub(crate) async fn revoke_node(service: &Service, zone: &str, node: &str) -> Result<(), ApiError> {
    for row in service.objects(Kind::Token).await? {
        let Ok(spec) = dora_crds::decode::<TokenSpec>(&row.resource) else {
            continue;
        };
        if spec.purpose == TokenPurpose::Node
            && spec.zone.as_deref() == Some(zone)
            && spec.node.as_deref() == Some(node)
        {
            revoke(service, &Identity::system(), &row.key.name).await?;
        }
    }
    Ok(())
}

/// When each token was last used, since the last flush.
#[derive(Default)]
pub(crate) struct LastUses {
    pending: Mutex<HashMap<String, u64>>,
}

impl LastUses {
    /// Notes that token `id` was used now.
    pub fn touch(&self, id: &str) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let now = now_secs();
        if let Some(seen) = pending.get_mut(id) {
            *seen = now;
        } else if pending.len() < MAX_PENDING_USES {
            pending.insert(id.to_string(), now);
        }
    }

    fn take(&self) -> HashMap<String, u64> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// Writes the last uses every `flush_every` and removes the records of expired tokens every
/// ten minutes.
pub(crate) async fn maintain(
    service: Service,
    uses: std::sync::Arc<LastUses>,
    flush_every: Duration,
) {
    let mut swept = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(flush_every).await;
        flush(&service, &uses).await;
        if swept.elapsed() >= SWEEP_EVERY {
            swept = tokio::time::Instant::now();
            if let Err(e) = sweep(&service).await {
                tracing::warn!(error = %e.message, "removing expired token records failed");
            }
        }
    }
}

async fn flush(service: &Service, uses: &LastUses) {
    for (id, seen) in uses.take() {
        let used = json!({"lastUsed": render::timestamp(seconds_to_millis(seen))});
        match service
            .store
            .put_status(&key(&id), StatusColumn::Computed, None, used, None)
            .await
        {
            // A token minted before records existed has none.
            Ok(_) | Err(StoreError::NotFound) => {}
            Err(e) => tracing::warn!(error = %e, token = %id, "writing a token's last use failed"),
        }
    }
}

/// Removes the records of tokens that have expired: they are refused anyway.
pub(crate) async fn sweep(service: &Service) -> Result<usize, ApiError> {
    let now = now_secs();
    let mut removed = 0;
    for row in service.objects(Kind::Token).await? {
        let expires = row.resource["expires"].as_str().map(unix_seconds);
        if expires.is_some_and(|expires| expires + LEEWAY_SECS < now) {
            match service.store.delete(&row.key, Precondition::None).await {
                Ok(_) | Err(StoreError::NotFound) => {}
                Err(e) => return Err(e.into()),
            }
            service.directory.remove(Kind::Token, &row.key.name);
            removed += 1;
        }
    }
    Ok(removed)
}
