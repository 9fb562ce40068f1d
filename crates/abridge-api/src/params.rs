//! What handlers read from the URL: the batch id in `/v1/batches/{id}/...` ([`BatchPath`]) and
//! typed query strings ([`Query`] over the structs below). Each struct is both the extractor
//! and its OpenAPI parameters (`IntoParams`), and each value type both parses and describes
//! itself ([`PageSize`], [`BatchCursor`], ...), so the document declares exactly what the
//! server accepts. A value the declaration does not allow is answered 400 in the error shape,
//! naming the parameter; an empty value (`?limit=`) is such a value, not an absent one.
//! Unknown query parameters are ignored (the document's description says so).

use abridge_core::{BatchId, BatchStatus, ItemId, ItemStatus};
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{KnownFormat, RefOr, Schema};
use utoipa::{IntoParams, PartialSchema, ToSchema};

use crate::error::ApiError;
use crate::views::{BatchStatusName, ItemStatusName};

/// Most items or batches in one page of a list.
pub const MAX_PAGE: i64 = 1_000;
/// Page size when `limit` is not given.
pub const DEFAULT_PAGE: i64 = 50;
/// Longest history `/v1/history` answers, in minutes (one day).
pub const MAX_HISTORY_MINUTES: i32 = 24 * 60;
/// History length when `minutes` is not given.
pub const DEFAULT_HISTORY_MINUTES: i32 = 60;

/// A decimal whole number: ASCII digits with an optional leading `-`, as a query string
/// carries an `integer` parameter (no `+`, no spaces). `None` if `raw` is not one or does
/// not fit an `i64`.
fn whole_number(raw: &str) -> Option<i64> {
    let digits = raw.strip_prefix('-').unwrap_or(raw);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse().ok()
}

/// A query value as text.
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    String::deserialize(d)
}

fn integer_schema(minimum: i64, maximum: i64, format: KnownFormat) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(format)))
        .minimum(Some(minimum as f64))
        .maximum(Some(maximum as f64))
        .into()
}

/// `limit`: a page size from 1 to [`MAX_PAGE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageSize(pub i64);

impl Default for PageSize {
    fn default() -> Self {
        PageSize(DEFAULT_PAGE)
    }
}

impl<'de> Deserialize<'de> for PageSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = text(d)?;
        whole_number(&raw)
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .map(PageSize)
            .ok_or_else(|| {
                D::Error::custom(format!(
                    "expected a whole number from 1 to {MAX_PAGE}, got {raw:?}"
                ))
            })
    }
}

impl PartialSchema for PageSize {
    fn schema() -> RefOr<Schema> {
        integer_schema(1, MAX_PAGE, KnownFormat::Int64)
    }
}

impl ToSchema for PageSize {}

/// `minutes` of `/v1/history`: 1 to [`MAX_HISTORY_MINUTES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryMinutes(pub i32);

impl Default for HistoryMinutes {
    fn default() -> Self {
        HistoryMinutes(DEFAULT_HISTORY_MINUTES)
    }
}

impl<'de> Deserialize<'de> for HistoryMinutes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = text(d)?;
        whole_number(&raw)
            .filter(|n| (1..=i64::from(MAX_HISTORY_MINUTES)).contains(n))
            .map(|n| HistoryMinutes(n as i32))
            .ok_or_else(|| {
                D::Error::custom(format!(
                    "expected a whole number from 1 to {MAX_HISTORY_MINUTES}, got {raw:?}"
                ))
            })
    }
}

impl PartialSchema for HistoryMinutes {
    fn schema() -> RefOr<Schema> {
        integer_schema(1, i64::from(MAX_HISTORY_MINUTES), KnownFormat::Int32)
    }
}

impl ToSchema for HistoryMinutes {}

/// `days` of a tenant's costs: 1 to [`MAX_COST_DAYS`] (default 30).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CostDays(pub u32);

/// The longest cost history asked for at once (a year and a day).
pub const MAX_COST_DAYS: u32 = 366;

impl Default for CostDays {
    fn default() -> Self {
        CostDays(30)
    }
}

impl<'de> Deserialize<'de> for CostDays {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = text(d)?;
        whole_number(&raw)
            .filter(|n| (1..=i64::from(MAX_COST_DAYS)).contains(n))
            .map(|n| CostDays(n as u32))
            .ok_or_else(|| {
                D::Error::custom(format!(
                    "expected a whole number from 1 to {MAX_COST_DAYS}, got {raw:?}"
                ))
            })
    }
}

impl PartialSchema for CostDays {
    fn schema() -> RefOr<Schema> {
        integer_schema(1, i64::from(MAX_COST_DAYS), KnownFormat::Int32)
    }
}

impl ToSchema for CostDays {}

/// `q` of a search: 1 to 200 characters, none of them control characters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SearchText(pub String);

/// Longest search text, in characters.
pub const MAX_SEARCH_CHARS: usize = 200;

impl<'de> Deserialize<'de> for SearchText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = text(d)?;
        let n = raw.chars().count();
        if (1..=MAX_SEARCH_CHARS).contains(&n) && !raw.chars().any(|c| c.is_control()) {
            Ok(SearchText(raw))
        } else {
            Err(D::Error::custom(format!(
                "expected 1 to {MAX_SEARCH_CHARS} characters, none of them control characters"
            )))
        }
    }
}

impl SearchText {
    /// The text for `websearch_to_tsquery`, with a word that is a video id quoted: an id may
    /// start with `-`, which would otherwise mean "without".
    pub fn terms(&self) -> String {
        self.0
            .split_whitespace()
            .map(|w| {
                if abridge_core::VideoId::parse(w).is_ok() && w.len() == 11 {
                    format!("\"{w}\"")
                } else {
                    w.to_owned()
                }
            })
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Refuses a search with nothing to match (only `-word`s): a bulk action on it would take
    /// everything else.
    pub fn require_a_match(&self) -> Result<(), ApiError> {
        let positive = self.0.split_whitespace().any(|w| {
            !w.starts_with('-') || w.len() == 11 && abridge_core::VideoId::parse(w).is_ok()
        });
        if positive {
            Ok(())
        } else {
            Err(ApiError::invalid(
                "q: a bulk action needs a word to match, not only words to leave out",
            ))
        }
    }
}

impl PartialSchema for SearchText {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX_SEARCH_CHARS))
            .pattern(Some(r"^[^\u0000-\u001f\u007f-\u009f]*$"))
            .into()
    }
}

impl ToSchema for SearchText {}

/// `tenant` of the batch list: a tenant's name (1 to 64 of A-Z, a-z, 0-9, `_`, `-`, `.`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TenantFilter(pub String);

impl<'de> Deserialize<'de> for TenantFilter {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = text(d)?;
        crate::auth::check_tenant_name(&raw)
            .map(|()| TenantFilter(raw.clone()))
            .map_err(|_| {
                D::Error::custom(format!(
                    "expected a tenant name (1 to 64 of A-Z, a-z, 0-9, '_', '-', '.'), got {raw:?}"
                ))
            })
    }
}

impl PartialSchema for TenantFilter {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(r"^[A-Za-z0-9_.-]{1,64}$"))
            .into()
    }
}

impl ToSchema for TenantFilter {}

/// `item` of a retry: an item id (any 64-bit integer; one that is not a failed item of the
/// batch requeues nothing).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ItemIdParam(pub ItemId);

impl<'de> Deserialize<'de> for ItemIdParam {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = text(d)?;
        whole_number(&raw)
            .map(|n| ItemIdParam(ItemId(n)))
            .ok_or_else(|| D::Error::custom(format!("expected an item id, got {raw:?}")))
    }
}

impl PartialSchema for ItemIdParam {
    fn schema() -> RefOr<Schema> {
        integer_schema(i64::MIN, i64::MAX, KnownFormat::Int64)
    }
}

impl ToSchema for ItemIdParam {}

/// A batch id as the API writes it, for both the path and the cursor.
fn parse_hyphenated_uuid(raw: &str) -> Option<BatchId> {
    // Only the hyphenated form the API writes (`format: uuid`): not the simple, braced or
    // URN spellings `Uuid::parse_str` would also take.
    (raw.len() == 36)
        .then(|| uuid::Uuid::try_parse(raw).ok())
        .flatten()
        .map(BatchId)
}

/// `cursor` of the batch list: the `next_cursor` of the previous page (a batch id).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchCursor(pub BatchId);

impl<'de> Deserialize<'de> for BatchCursor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = text(d)?;
        parse_hyphenated_uuid(&raw)
            .map(BatchCursor)
            .ok_or_else(|| not_a_cursor(&raw))
    }
}

impl PartialSchema for BatchCursor {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
            .into()
    }
}

impl ToSchema for BatchCursor {}

/// `cursor` of an item list: the `next_cursor` of the previous page (an input position).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ItemCursor(pub i32);

impl<'de> Deserialize<'de> for ItemCursor {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = text(d)?;
        whole_number(&raw)
            .and_then(|n| i32::try_from(n).ok())
            .filter(|n| *n >= 0)
            .map(ItemCursor)
            .ok_or_else(|| not_a_cursor(&raw))
    }
}

impl PartialSchema for ItemCursor {
    fn schema() -> RefOr<Schema> {
        integer_schema(0, i64::from(i32::MAX), KnownFormat::Int32)
    }
}

impl ToSchema for ItemCursor {}

fn not_a_cursor<E: serde::de::Error>(raw: &str) -> E {
    E::custom(format!("{raw:?} is not a cursor from a previous page"))
}

/// A query string parsed into `T`. A value `T` does not accept is `400 invalid_query`
/// (`invalid_cursor` for `cursor`) with a message that starts with the parameter's name.
#[derive(Debug, Default)]
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let pairs = url::form_urlencoded::parse(query.as_bytes());
        serde_path_to_error::deserialize(serde_urlencoded::Deserializer::new(pairs))
            .map(Query)
            .map_err(|e| {
                let name = e.path().to_string();
                let code = if name == "cursor" {
                    "invalid_cursor"
                } else {
                    "invalid_query"
                };
                ApiError::bad_request(code, format!("{name}: {}", e.inner()))
            })
    }
}

/// `GET /v1/batches`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct BatchListQuery {
    /// Only batches in this state.
    #[param(value_type = Option<BatchStatusName>)]
    pub status: Option<BatchStatus>,
    /// Page size (default 50).
    #[param(inline)]
    pub limit: Option<PageSize>,
    /// `next_cursor` of the previous page.
    #[param(inline)]
    pub cursor: Option<BatchCursor>,
    /// Only this tenant's batches (an operator's filter; a tenant token sees its own anyway).
    #[param(inline)]
    pub tenant: Option<TenantFilter>,
}

/// `GET /v1/batches/{id}/items`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ItemListQuery {
    /// Only items in this state.
    #[param(value_type = Option<ItemStatusName>)]
    pub status: Option<ItemStatus>,
    /// Page size (default 50).
    #[param(inline)]
    pub limit: Option<PageSize>,
    /// `next_cursor` of the previous page.
    #[param(inline)]
    pub cursor: Option<ItemCursor>,
}

/// `POST /v1/batches/{id}/retry`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RetryQuery {
    /// Retry only this item (its `id`); `requeued` is 0 if it is not a failed item of the batch.
    #[param(inline)]
    pub item: Option<ItemIdParam>,
}

/// `GET /v1/history`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// How many minutes back (default 60).
    #[param(inline)]
    pub minutes: Option<HistoryMinutes>,
}

/// `GET /v1/tenants/{name}/costs`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CostQuery {
    /// How many UTC days back, today included (default 30).
    #[param(inline)]
    pub days: Option<CostDays>,
}

/// `GET /v1/failed`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FailedQuery {
    /// At most this many (default 50).
    #[param(inline)]
    pub limit: Option<PageSize>,
}

/// The `{id}` of `/v1/batches/{id}/...`: a batch id, or `400 invalid_batch_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, IntoParams)]
#[into_params(names("id"), parameter_in = Path)]
pub struct BatchPath(
    /// Batch id, as `POST /v1/batches` answered it.
    #[param(value_type = uuid::Uuid)]
    pub BatchId,
);

impl<S: Send + Sync> FromRequestParts<S> for BatchPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let raw = axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request("invalid_batch_id", format!("the batch id: {e}")))?
            .0;
        parse_hyphenated_uuid(&raw)
            .map(BatchPath)
            .ok_or_else(|| not_a_batch_id(&raw))
    }
}

fn not_a_batch_id(raw: &str) -> ApiError {
    ApiError::bad_request(
        "invalid_batch_id",
        format!("{raw:?} is not a batch id (a UUID such as 0193a1b2-...)"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query<T: DeserializeOwned>(q: &str) -> Result<T, (String, String)> {
        let pairs = url::form_urlencoded::parse(q.as_bytes());
        serde_path_to_error::deserialize(serde_urlencoded::Deserializer::new(pairs))
            .map_err(|e| (e.path().to_string(), e.inner().to_string()))
    }

    #[test]
    fn typed_queries_accept_what_they_declare_and_name_what_they_refuse() {
        let q: BatchListQuery = query("").unwrap();
        assert_eq!((q.limit, q.status, q.cursor), (None, None, None));
        let q: BatchListQuery = query("limit=1000&status=running&unknown=x").unwrap();
        assert_eq!(q.limit, Some(PageSize(1000)));
        assert_eq!(q.status, Some(BatchStatus::Running));
        let q: ItemListQuery = query("cursor=0&limit=1").unwrap();
        assert_eq!(
            (q.cursor, q.limit),
            (Some(ItemCursor(0)), Some(PageSize(1)))
        );

        for (q, name) in [
            ("limit=", "limit"),
            ("limit=0", "limit"),
            ("limit=1001", "limit"),
            ("limit=+5", "limit"),
            ("limit=-9223372036854775808", "limit"),
            ("limit=99999999999999999999", "limit"),
            ("status=", "status"),
            ("status=RUNNING", "status"),
            ("cursor=", "cursor"),
            ("cursor=01a208c6", "cursor"),
        ] {
            let (path, _) = query::<BatchListQuery>(q).unwrap_err();
            assert_eq!(path, name, "{q}");
        }
        assert_eq!(query::<ItemListQuery>("cursor=-4").unwrap_err().0, "cursor");
        assert_eq!(
            query::<ItemListQuery>("cursor=2147483648").unwrap_err().0,
            "cursor"
        );
        assert_eq!(query::<HistoryQuery>("minutes=").unwrap_err().0, "minutes");
        assert_eq!(
            query::<HistoryQuery>("minutes=1441").unwrap_err().0,
            "minutes"
        );
        let q: RetryQuery = query("item=-9223372036854775808").unwrap();
        assert_eq!(q.item, Some(ItemIdParam(ItemId(i64::MIN))));
        assert_eq!(query::<RetryQuery>("item=first").unwrap_err().0, "item");
    }

    #[test]
    fn a_batch_id_is_the_hyphenated_uuid_only() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(parse_hyphenated_uuid(&id.to_string()), Some(BatchId(id)));
        for other in [
            id.simple().to_string(),
            id.braced().to_string(),
            id.urn().to_string(),
            format!(" {id}"),
            "0".to_owned(),
        ] {
            assert_eq!(parse_hyphenated_uuid(&other), None, "{other}");
        }
    }
}
