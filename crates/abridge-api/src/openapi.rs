//! `GET /openapi.json`: the OpenAPI document, generated from the handlers' `utoipa`
//! annotations, the parameter types of [`crate::params`] and the schemas of [`crate::views`],
//! so it cannot drift from the code. Modifiers finish it:
//!
//! - `AtLeastOneInput` states the create body's rule that `urls` or `items` has an input.
//! - `ErrorResponses` adds the error answers that follow from what an operation takes:
//!   with a security requirement, 401 and 503 (the token is checked in Postgres); with the
//!   batch id, 400 `invalid_batch_id` and 404; with query parameters, 400 `invalid_query` or
//!   `invalid_cursor`. Handlers list only the answers of their own logic.
//! - `EventStream` describes each event of the SSE operation (`itemSchema`).
//!
//! utoipa writes OpenAPI 3.1; [`document`] declares 3.2, the version whose `itemSchema`
//! describes the events of a `text/event-stream` (nothing else in the document differs).
//! The contract test (`tests/e2e/contract.rs`) validates the document and fuzzes the server
//! against it.

use std::sync::OnceLock;

use axum::Json;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::Schema;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, PathItem, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::error::{ErrorBody, ErrorDetail};
use crate::views::*;

/// The OpenAPI version [`document`] declares.
pub const OPENAPI_VERSION: &str = "3.2.0";

#[derive(OpenApi)]
#[openapi(
    info(
        title = "abridge producer API",
        description = "Enqueue batches of YouTube videos to summarize, watch their progress, cancel or retry them, and export the results. Every /v1 call needs `Authorization: Bearer <token>` (made with `abridge token create`). Errors are `{\"error\": {\"code\", \"message\", \"details\"?}}`. Query parameters the operation does not declare are ignored; a declared one with a value outside its schema, an empty one included, is 400."
    ),
    paths(
        crate::batches::create_batch,
        crate::intake::check_input,
        crate::search::search_items,
        crate::search::retry_found,
        crate::search::cancel_found,
        crate::intake::options,
        crate::batches::list_batches,
        crate::batches::get_batch,
        crate::batches::list_items,
        crate::batches::cancel_batch,
        crate::batches::retry_batch,
        crate::events::batch_events,
        crate::export::export_batch,
        crate::batches::fleet_stats,
        crate::batches::pause_queue,
        crate::batches::resume_queue,
        crate::dashboard::history,
        crate::dashboard::failed,
        crate::tenants::list_tenants,
        crate::tenants::get_tenant,
        crate::tenants::put_tenant,
        crate::tenants::tenant_costs,
        crate::healthz,
        crate::readyz,
    ),
    components(schemas(
        CreateBatch, ItemSpec, Summarizer, LengthName, PriorityName, BatchStatusName,
        ItemStatusName, RejectedInput, Created, CountsView, BatchStatusView, CostView, WebhookView, BatchPage,
        crate::tenants::TenantSettings, crate::tenants::BackendName, crate::tenants::ModelName, crate::tenants::TenantInfo,
        crate::tenants::TenantList, crate::tenants::TenantCosts, crate::tenants::DayCost,
        ItemStatusView, ItemPage, Retried, ErrorBody, ErrorDetail, crate::batches::QueueState,
        crate::intake::CheckInput, crate::intake::InputFormat, crate::intake::CheckedInput,
        crate::intake::CheckedItem, crate::intake::CheckedList, crate::intake::RejectedLine, crate::intake::Options,
        crate::search::FoundItem, crate::search::SearchPage, crate::search::BulkDone,
        crate::dashboard::History, crate::dashboard::HistoryMinute, crate::dashboard::FailedItems,
    )),
    modifiers(&BearerAuth, &AtLeastOneInput, &ErrorResponses, &EventStream),
    tags(
        (name = "batches", description = "Batches and their items"),
        (name = "fleet", description = "The worker fleet"),
        (name = "tenants", description = "The operator's settings for each tenant (operator tokens only)"),
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

/// `CreateBatch` needs an input in `urls` or `items` (the create handler's `no inputs` rule):
/// `anyOf` "`urls` is a non-empty array" or "`items` is".
struct AtLeastOneInput;

impl Modify for AtLeastOneInput {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let create = openapi
            .components
            .as_mut()
            .and_then(|c| c.schemas.get_mut("CreateBatch"));
        let Some(RefOr::T(Schema::Object(create))) = create else {
            return;
        };
        let non_empty = |field: &str| {
            serde_json::json!({
                "required": [field],
                "properties": { field: { "type": "array", "minItems": 1 } }
            })
        };
        // utoipa's object has no `anyOf` of its own: it goes in as an extra member.
        create
            .extensions
            .get_or_insert_with(Extensions::default)
            .insert(
                "anyOf".to_owned(),
                serde_json::json!([non_empty("urls"), non_empty("items")]),
            );
    }
}

/// Adds the error answers an operation's inputs imply (see the module's documentation).
struct ErrorResponses;

/// The path parameter every batch route names its batch by.
const BATCH_ID_PARAMETER: &str = "id";

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for operation in operations(item) {
                let parameters = operation.parameters.as_deref().unwrap_or_default();
                let takes_batch_id = parameters
                    .iter()
                    .any(|p| p.parameter_in == ParameterIn::Path && p.name == BATCH_ID_PARAMETER);
                let takes_query = parameters
                    .iter()
                    .any(|p| p.parameter_in == ParameterIn::Query);
                let mut bad_request = Vec::new();
                if takes_batch_id {
                    bad_request.push("the batch id is not a UUID (`invalid_batch_id`)");
                    add_error(
                        operation,
                        404,
                        "No such batch for this tenant (another tenant's batch is answered the same)",
                    );
                }
                if takes_query {
                    bad_request.push(
                        "a query parameter's value is outside its schema, or empty (`invalid_query`; `invalid_cursor` for `cursor`)",
                    );
                }
                if !bad_request.is_empty() {
                    let mut description = bad_request.join("; or ");
                    if let Some(first) = description.get_mut(..1) {
                        first.make_ascii_uppercase();
                    }
                    add_error(operation, 400, &description);
                }
                if operation.security.as_ref().is_some_and(|s| !s.is_empty()) {
                    add_error(
                        operation,
                        401,
                        "The bearer token is missing, malformed, unknown or revoked (`unauthorized`)",
                    );
                    add_error(
                        operation,
                        503,
                        "Postgres or Redis does not answer; try again shortly (`unavailable`)",
                    );
                }
            }
        }
    }
}

fn operations(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// Adds an error answer, or, if the handler declared this status itself, adds `description`
/// to its own as another case.
fn add_error(operation: &mut Operation, status: u16, description: &str) {
    let responses = &mut operation.responses.responses;
    match responses.get_mut(&status.to_string()) {
        Some(RefOr::T(declared)) => {
            if !declared.description.contains(description) {
                declared.description = format!("{}; or: {description}", declared.description);
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let response = ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    Content::new(Some(Ref::from_schema_name("ErrorBody"))),
                )
                .build();
            responses.insert(status.to_string(), RefOr::T(response));
        }
    }
}

/// Describes each event of `GET /v1/batches/{id}/events` with OpenAPI 3.2's `itemSchema`.
struct EventStream;

impl Modify for EventStream {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let stream = openapi
            .paths
            .paths
            .get_mut("/v1/batches/{id}/events")
            .and_then(|item| item.get.as_mut())
            .and_then(|op| op.responses.responses.get_mut("200"));
        if let Some(RefOr::T(response)) = stream {
            // utoipa models 3.1, which has no `itemSchema`: it goes in as an extra member
            // (its builder would prefix the name with `x-`).
            let mut members = Extensions::default();
            members.insert("itemSchema".to_owned(), crate::events::event_item_schema());
            let mut content = Content::default();
            content.extensions = Some(members);
            response
                .content
                .insert("text/event-stream".to_owned(), content);
        }
    }
}

/// The finished document, as `GET /openapi.json` serves it (built once).
pub fn document() -> &'static serde_json::Value {
    static DOCUMENT: OnceLock<serde_json::Value> = OnceLock::new();
    DOCUMENT.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        doc["openapi"] = OPENAPI_VERSION.into();
        doc
    })
}

pub async fn serve_document() -> Json<&'static serde_json::Value> {
    Json(document())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_documents_the_errors_its_inputs_imply() {
        let doc = document();
        assert_eq!(doc["openapi"], OPENAPI_VERSION);
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                let responses = op["responses"].as_object().unwrap();
                let params = op["parameters"].as_array().cloned().unwrap_or_default();
                let secured = op["security"].as_array().is_some_and(|s| !s.is_empty());
                let mut expected = Vec::new();
                if path.contains("{id}") {
                    expected.extend(["400", "404"]);
                }
                if params.iter().any(|p| p["in"] == "query") {
                    expected.push("400");
                }
                if secured {
                    expected.extend(["401", "503"]);
                }
                for status in expected {
                    assert!(
                        responses.contains_key(status),
                        "{method} {path} documents {status}: {responses:?}"
                    );
                }
            }
        }
        let id = &doc["paths"]["/v1/batches/{id}"]["get"]["parameters"][0];
        assert_eq!(
            (id["in"].as_str(), id["schema"]["format"].as_str()),
            (Some("path"), Some("uuid"))
        );
    }

    #[test]
    fn a_create_body_needs_an_input_in_urls_or_items() {
        let create = &document()["components"]["schemas"]["CreateBatch"];
        let either: Vec<&serde_json::Value> = create["anyOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|branch| &branch["required"][0])
            .collect();
        assert_eq!(either, ["urls", "items"], "{create}");
        assert_eq!(create["additionalProperties"], false);
    }

    #[test]
    fn the_event_stream_declares_each_event() {
        let content = &document()["paths"]["/v1/batches/{id}/events"]["get"]["responses"]["200"]["content"]
            ["text/event-stream"];
        let events: Vec<&str> = content["itemSchema"]["oneOf"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["properties"]["event"]["const"].as_str().unwrap())
            .collect();
        assert_eq!(events, ["progress", "completed", "cancelled"]);
        assert!(content.get("schema").is_none(), "{content}");
    }
}
