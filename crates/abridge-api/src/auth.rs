//! Bearer tokens. A token is `abr_` plus 32 random bytes (base64url); only its SHA-256 is
//! stored, so a database leak reveals no usable token. Every `/v1` handler takes a [`Caller`],
//! which resolves the token to its owner, a tenant or the operator (revocation takes effect on
//! the next request).

use abridge_store::Store;
use abridge_store::tenants::{Tenant, TenantPolicy, TokenOwner};
use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::ApiState;
use crate::error::ApiError;

/// Whom a request acts for.
#[derive(Clone, Debug)]
pub struct Caller {
    pub owner: TokenOwner,
    /// The stored form of the caller's token: a long-lived response (an event stream) looks
    /// it up again, so revocation ends it.
    pub token_hash: Vec<u8>,
}

impl Caller {
    /// The tenant whose batches the caller sees; `None` for the operator, who sees every
    /// batch (the CLI's too).
    pub fn tenant(&self) -> Option<&str> {
        match &self.owner {
            TokenOwner::Operator => None,
            TokenOwner::Tenant { name, .. } => Some(name),
        }
    }

    pub fn is_operator(&self) -> bool {
        self.owner == TokenOwner::Operator
    }

    /// The tenant's policy; `None` for the operator, whom nothing restricts.
    pub fn policy(&self) -> Option<&TenantPolicy> {
        match &self.owner {
            TokenOwner::Operator => None,
            TokenOwner::Tenant { policy, .. } => Some(policy),
        }
    }

    /// Refuses a tenant: the fleet's figures, workers and tenants' settings are the
    /// operator's.
    pub fn require_operator(&self) -> Result<(), ApiError> {
        if self.is_operator() {
            Ok(())
        } else {
            Err(ApiError::Forbidden(
                "this needs an operator token (`abridge token create --operator`)",
            ))
        }
    }
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
        let token_hash = hash_token(token);
        match state.store.token_owner(&token_hash).await? {
            Some(owner) => Ok(Caller { owner, token_hash }),
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
    /// `None` for an operator token.
    pub tenant: Option<Tenant>,
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

/// Whether `name` is a valid tenant name.
pub fn check_tenant_name(name: &str) -> Result<(), TokenError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(TokenError::BadTenant(name.to_owned()))
    }
}

/// Makes a token for `tenant`, creating the tenant (with a fresh webhook secret) if needed; or,
/// with `None`, an operator token.
pub async fn create_token(store: &Store, tenant: Option<&str>) -> Result<NewToken, TokenError> {
    let tenant = match tenant {
        Some(name) => {
            check_tenant_name(name)?;
            Some(store.ensure_tenant(name, &random_text("whsec_")).await?)
        }
        None => None,
    };
    let token = random_text("abr_");
    let id = uuid::Uuid::now_v7();
    store
        .insert_token(
            id,
            tenant.as_ref().map(|t| t.name.as_str()),
            &hash_token(&token),
        )
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
