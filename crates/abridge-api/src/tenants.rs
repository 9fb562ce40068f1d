//! The operator's settings for each tenant over HTTP: `GET /v1/tenants`, `GET` and `PUT
//! /v1/tenants/{name}`, the same settings as `abridge tenant set/show/list`. Operator tokens
//! only: a tenant token is answered `403 operator_only`.

use abridge_core::Backend;
use abridge_store::tenants::{TenantPolicy, TenantView};
use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, ErrorBody};
use crate::params::{CostDays, CostQuery, Query};
use crate::views::rfc3339;

/// A tenant's settings, as the operator sets them (`PUT` replaces every one; an absent field
/// takes its default).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantSettings {
    /// Its share of the fleet against other tenants' (1 to 1000; default 1).
    #[schema(minimum = 1, maximum = 1000)]
    #[serde(default, deserialize_with = "whole")]
    pub weight: Option<i32>,
    /// Backends its batches may name; `null`: the fleet's default backend only.
    pub backends: Option<Vec<BackendName>>,
    /// Models its batches may name; `null`: only the configured ones.
    pub models: Option<Vec<ModelName>>,
    /// LLM tokens (in + out) its items may spend per UTC day; `null`: no limit.
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "whole")]
    pub daily_tokens: Option<i64>,
    /// Most of its items in flight at once across the fleet; `null`: no limit.
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "whole")]
    pub max_in_flight: Option<i32>,
    /// Most of its items queued at once; `null`: no limit.
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "whole")]
    pub max_queued: Option<i64>,
    /// Most batches it may create per minute; `null`: no limit.
    #[schema(minimum = 1)]
    #[serde(default, deserialize_with = "whole")]
    pub max_batches_per_minute: Option<i32>,
    /// The highest priority its batches may ask for; `null`: any.
    #[schema(value_type = Option<crate::views::PriorityName>)]
    pub max_priority: Option<abridge_core::Priority>,
    /// Days its finished batches (with their items and summaries) are kept before the pruner
    /// deletes them; `null`: the fleet's `ABRIDGE_RETENTION_DAYS` (default 30).
    #[schema(minimum = 1, maximum = 36500)]
    #[serde(default, deserialize_with = "whole")]
    pub retention_days: Option<i32>,
}

/// A whole number as JSON may write it (`75` or `75.0`: JSON Schema's `integer` allows both),
/// within `T`'s range.
fn whole<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i64>,
{
    use serde::de::Error as _;
    let Some(n) = Option::<serde_json::Number>::deserialize(d)? else {
        return Ok(None);
    };
    let whole = n.as_i64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && f.abs() < 9.0e15)
            .map(|f| f as i64)
    });
    whole
        .and_then(|w| T::try_from(w).ok())
        .map(Some)
        .ok_or_else(|| D::Error::custom(format!("expected a whole number in range, got {n}")))
}

/// A model name: 1 to 200 characters, none of them a control character.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ModelName(pub String);

impl utoipa::PartialSchema for ModelName {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(200))
            .pattern(Some(r"^[^\u0000-\u001f\u007f-\u009f]{1,200}$"))
            .into()
    }
}

impl ToSchema for ModelName {}

/// A backend a tenant may be allowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackendName {
    Extractive,
    Openai,
    Anthropic,
    Noop,
}

impl From<BackendName> for Backend {
    fn from(b: BackendName) -> Self {
        match b {
            BackendName::Extractive => Backend::Extractive,
            BackendName::Openai => Backend::Openai,
            BackendName::Anthropic => Backend::Anthropic,
            BackendName::Noop => Backend::Noop,
        }
    }
}

impl From<Backend> for BackendName {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Extractive => BackendName::Extractive,
            Backend::Openai => BackendName::Openai,
            Backend::Anthropic => BackendName::Anthropic,
            Backend::Noop => BackendName::Noop,
        }
    }
}

/// A tenant and its settings.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantInfo {
    pub name: String,
    pub settings: TenantSettings,
    pub created_at: String,
}

/// Every tenant.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantList {
    pub tenants: Vec<TenantInfo>,
}

impl From<TenantView> for TenantInfo {
    fn from(v: TenantView) -> Self {
        let p = v.policy;
        Self {
            name: v.name,
            settings: TenantSettings {
                weight: Some(p.weight),
                backends: p
                    .backends
                    .map(|b| b.into_iter().map(BackendName::from).collect()),
                models: p.models.map(|m| m.into_iter().map(ModelName).collect()),
                daily_tokens: p.daily_tokens,
                max_in_flight: p.max_in_flight,
                max_queued: p.max_queued,
                max_batches_per_minute: p.max_batches_per_minute,
                max_priority: p.max_priority,
                retention_days: p.retention_days,
            },
            created_at: rfc3339(&v.created_at),
        }
    }
}

impl TenantSettings {
    fn into_policy(self) -> Result<TenantPolicy, ApiError> {
        let weight = self.weight.unwrap_or(1);
        if !(1..=1000).contains(&weight) {
            return Err(ApiError::invalid("weight: must be from 1 to 1000"));
        }
        let at_least_one = |field: &str, v: Option<i64>| match v {
            Some(n) if n < 1 => Err(ApiError::invalid(format!(
                "{field}: must be at least 1 (null: no limit)"
            ))),
            _ => Ok(()),
        };
        at_least_one("daily_tokens", self.daily_tokens)?;
        at_least_one("max_in_flight", self.max_in_flight.map(i64::from))?;
        at_least_one("max_queued", self.max_queued)?;
        at_least_one(
            "max_batches_per_minute",
            self.max_batches_per_minute.map(i64::from),
        )?;
        if let Some(days) = self.retention_days
            && !(1..=36_500).contains(&days)
        {
            return Err(ApiError::invalid(
                "retention_days: must be from 1 to 36500 (null: the fleet's retention)",
            ));
        }
        if let Some(models) = &self.models
            && models.iter().any(|ModelName(m)| {
                m.is_empty() || m.chars().count() > 200 || m.chars().any(char::is_control)
            })
        {
            return Err(ApiError::invalid(
                "models: each must be 1 to 200 characters, none of them a control character",
            ));
        }
        Ok(TenantPolicy {
            backends: self
                .backends
                .map(|b| b.into_iter().map(Backend::from).collect()),
            models: self
                .models
                .map(|m| m.into_iter().map(|ModelName(m)| m).collect()),
            daily_tokens: self.daily_tokens,
            weight,
            max_in_flight: self.max_in_flight,
            max_queued: self.max_queued,
            max_batches_per_minute: self.max_batches_per_minute,
            max_priority: self.max_priority,
            retention_days: self.retention_days,
        })
    }
}

fn check_name(name: &str) -> Result<(), ApiError> {
    crate::auth::check_tenant_name(name)
        .map_err(|e| ApiError::bad_request("invalid_tenant", e.to_string()))
}

#[utoipa::path(
    get, path = "/v1/tenants", tag = "tenants",
    responses(
        (status = 200, description = "Every tenant and its settings", body = TenantList),
        (status = 403, description = "Not an operator token (`operator_only`)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn list_tenants(
    State(state): State<ApiState>,
    caller: Caller,
) -> Result<Json<TenantList>, ApiError> {
    caller.require_operator()?;
    let tenants = state.store.tenants(None).await?;
    Ok(Json(TenantList {
        tenants: tenants.into_iter().map(TenantInfo::from).collect(),
    }))
}

#[utoipa::path(
    get, path = "/v1/tenants/{name}", tag = "tenants",
    params(("name" = String, Path, pattern = r"^[A-Za-z0-9_.-]{1,64}$", description = "The tenant's name")),
    responses(
        (status = 200, description = "The tenant and its settings", body = TenantInfo),
        (status = 400, description = "Not a tenant name (`invalid_tenant`)", body = ErrorBody),
        (status = 403, description = "Not an operator token (`operator_only`)", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn get_tenant(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<Json<TenantInfo>, ApiError> {
    caller.require_operator()?;
    check_name(&name)?;
    tenant_info(&state, &name).await.map(Json)
}

async fn tenant_info(state: &ApiState, name: &str) -> Result<TenantInfo, ApiError> {
    let view = state
        .store
        .tenant(name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no tenant {name:?}")))?;
    Ok(view.into())
}

#[utoipa::path(
    put, path = "/v1/tenants/{name}", tag = "tenants",
    params(("name" = String, Path, pattern = r"^[A-Za-z0-9_.-]{1,64}$", description = "The tenant's name")),
    request_body = TenantSettings,
    responses(
        (status = 200, description = "The tenant with its new settings", body = TenantInfo),
        (status = 400, description = "Not a tenant name (`invalid_tenant`), or the body is not JSON (`malformed_json`)", body = ErrorBody),
        (status = 403, description = "Not an operator token (`operator_only`)", body = ErrorBody),
        (status = 404, description = "No such tenant (`abridge token create --tenant NAME` makes one)", body = ErrorBody),
        (status = 415, description = "A content type other than JSON (`unsupported_media_type`)", body = ErrorBody),
        (status = 422, description = "A wrong type, an unknown field, or a value outside its range (`invalid_request`, naming the field)", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn put_tenant(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    body: Result<Json<TenantSettings>, JsonRejection>,
) -> Result<Json<TenantInfo>, ApiError> {
    caller.require_operator()?;
    check_name(&name)?;
    let settings = crate::error::json_body(body, "the settings")?;
    let policy = settings.into_policy()?;
    if !abridge_control::set_tenant_policy(&state.store, &state.queue, &name, &policy).await? {
        return Err(ApiError::NotFound(format!("no tenant {name:?}")));
    }
    tenant_info(&state, &name).await.map(Json)
}

/// A tenant's model spend per UTC day (`GET /v1/tenants/{name}/costs`).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct TenantCosts {
    pub tenant: String,
    /// Newest day first; days without spend are left out.
    pub days: Vec<DayCost>,
    /// The sum over `days`, US dollars.
    pub total_usd: f64,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DayCost {
    /// `YYYY-MM-DD`, UTC.
    pub day: String,
    pub cost_usd: f64,
    pub requests: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Some requests went to a model without a price: their cost is not in `cost_usd`.
    pub unpriced: bool,
}

#[utoipa::path(
    get, path = "/v1/tenants/{name}/costs", tag = "tenants",
    params(("name" = String, Path, pattern = r"^[A-Za-z0-9_.-]{1,64}$", description = "The tenant's name"), CostQuery),
    responses(
        (status = 200, description = "What the tenant's batches' model requests cost per UTC day", body = TenantCosts),
        (status = 400, description = "Not a tenant name (`invalid_tenant`), or `days` is not 1 to 366", body = ErrorBody),
        (status = 403, description = "Not an operator token (`operator_only`)", body = ErrorBody),
        (status = 404, description = "No such tenant", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn tenant_costs(
    State(state): State<ApiState>,
    caller: Caller,
    Path(name): Path<String>,
    Query(query): Query<CostQuery>,
) -> Result<Json<TenantCosts>, ApiError> {
    caller.require_operator()?;
    check_name(&name)?;
    if state.store.tenant(&name).await?.is_none() {
        return Err(ApiError::NotFound(format!("no tenant {name:?}")));
    }
    let CostDays(days) = query.days.unwrap_or_default();
    let days: Vec<DayCost> = state
        .store
        .tenant_spend(Some(&name), days)
        .await?
        .into_iter()
        .map(|d| DayCost {
            day: d.day.to_string(),
            cost_usd: d.spend.cost_usd,
            requests: d.spend.requests,
            input_tokens: d.spend.input_tokens,
            output_tokens: d.spend.output_tokens,
            unpriced: d.spend.unpriced,
        })
        .collect();
    Ok(Json(TenantCosts {
        tenant: name,
        total_usd: days.iter().map(|d| d.cost_usd).sum(),
        days,
    }))
}
