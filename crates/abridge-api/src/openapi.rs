//! `GET /openapi.json`: the OpenAPI 3.1 document, generated from the handlers' `utoipa`
//! annotations and the schemas of [`crate::views`], so it cannot drift from the code.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, ErrorDetail};
use crate::views::*;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "abridge producer API",
        description = "Enqueue batches of YouTube videos to summarize, watch their progress, cancel or retry them, and export the results. Every /v1 call needs `Authorization: Bearer <token>` (made with `abridge token create`). Errors are `{\"error\": {\"code\", \"message\", \"details\"?}}`."
    ),
    paths(
        crate::batches::create_batch,
        crate::batches::list_batches,
        crate::batches::get_batch,
        crate::batches::list_items,
        crate::batches::cancel_batch,
        crate::batches::retry_batch,
        crate::events::batch_events,
        crate::export::export_batch,
        crate::batches::fleet_stats,
        crate::dashboard::history,
        crate::dashboard::failed,
        crate::healthz,
        crate::readyz,
    ),
    components(schemas(
        CreateBatch, ItemSpec, Summarizer, LengthName, PriorityName, BatchStatusName,
        ItemStatusName, RejectedInput, Created, CountsView, BatchStatusView, BatchPage,
        ItemStatusView, ItemPage, Retried, ErrorBody, ErrorDetail,
        crate::dashboard::History, crate::dashboard::HistoryMinute, crate::dashboard::FailedItems,
    )),
    modifiers(&BearerAuth),
    tags(
        (name = "batches", description = "Batches and their items"),
        (name = "fleet", description = "The worker fleet"),
        (name = "health", description = "Liveness and readiness"),
    )
)]
pub struct ApiDoc;

/// Declares the `bearer` security scheme the paths refer to.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A token from `abridge token create --tenant NAME`"))
                    .build(),
            ),
        );
    }
}

pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
