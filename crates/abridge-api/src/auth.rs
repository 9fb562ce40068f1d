//! Bearer tokens. A token is `abr_` plus 32 random bytes (base64url); only its SHA-256 is
//! stored, so a database leak reveals no usable token. Every `/v1` handler takes a [`Caller`],
//! which resolves the token to its tenant (revocation takes effect on the next request).

use abridge_store::Store;
use abridge_store::tenants::Tenant;
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::ApiState;
use crate::error::ApiError;

/// The tenant a request acts for.
#[derive(Clone, Debug)]
pub struct Caller {
    pub tenant: String,
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or(ApiError::Unauthorized(
                "missing bearer token: send `Authorization: Bearer <token>`",
            ))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| h.split_once(' '))
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim())
            .filter(|t| !t.is_empty())
            .ok_or(ApiError::Unauthorized(
                "malformed Authorization header: expected `Bearer <token>`",
            ))?;
        match state.store.tenant_for_token(&hash_token(token)).await? {
            Some(tenant) => Ok(Caller { tenant }),
            None => Err(ApiError::Unauthorized("invalid or revoked token")),
        }
    }
}

/// The stored form of a token.
pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn random_text(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// A token just made: the only time its text exists outside the caller's hands.
#[derive(Debug)]
pub struct NewToken {
    pub id: uuid::Uuid,
    pub token: String,
    pub tenant: Tenant,
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "tenant name {0:?} is not valid: use 1 to 64 characters of a-z, A-Z, 0-9, '_', '-' and '.'"
    )]
    BadTenant(String),
    #[error(transparent)]
    Store(#[from] abridge_store::StoreError),
}

/// Makes a token for `tenant`, creating the tenant (with a fresh webhook secret) if needed.
pub async fn create_token(store: &Store, tenant: &str) -> Result<NewToken, TokenError> {
    let ok = !tenant.is_empty()
        && tenant.len() <= 64
        && tenant
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !ok {
        return Err(TokenError::BadTenant(tenant.to_owned()));
    }
    let tenant = store.ensure_tenant(tenant, &random_text("whsec_")).await?;
    let token = random_text("abr_");
    let id = uuid::Uuid::now_v7();
    store
        .insert_token(id, &tenant.name, &hash_token(&token))
        .await?;
    Ok(NewToken { id, token, tenant })
}

/// Revokes a token given by id or by its text; false if no unrevoked token matched.
pub async fn revoke_token(store: &Store, id_or_token: &str) -> Result<bool, TokenError> {
    let id_or_token = id_or_token.trim();
    Ok(match id_or_token.parse::<uuid::Uuid>() {
        Ok(id) => store.revoke_token(Some(id), None).await?,
        Err(_) => {
            store
                .revoke_token(None, Some(&hash_token(id_or_token)))
                .await?
        }
    })
}
