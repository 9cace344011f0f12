//! The OpenAPI 3.1 description of the admin API (`GET /v1/openapi.json`),
//! built with `utoipa` from the route table: each [`Operation`] names its
//! request body type, its success response type and its query parameters,
//! and those types' `ToSchema` / `IntoParams` derives give the schemas. The
//! handlers serialize the same types, so the description and the wire agree.

use std::borrow::Cow;

use serde::Serialize;
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, LicenseBuilder, OpenApiBuilder, Paths, Ref, RefOr, Required, ResponseBuilder, Schema,
};
use utoipa::ToSchema;

use super::Operation;

/// Named schemas an operation needs (a type and everything it refers to).
pub type Components = Vec<(String, RefOr<Schema>)>;

/// Registers a type's schema (and those it refers to); answers a `$ref` to it.
pub type SchemaFn = fn(&mut Components) -> RefOr<Schema>;

/// What an operation takes as its request body.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    None,
    /// `application/json` of this type.
    Json(SchemaFn),
    /// Bytes of this media type (an upload as is).
    Raw(&'static str),
    /// Either: JSON of this type, or bytes of this media type.
    JsonOrRaw(SchemaFn, &'static str),
}

/// What an operation answers on success.
#[derive(Debug, Clone, Copy)]
pub enum Reply {
    /// `application/json` of this type.
    Json(SchemaFn),
    /// Bytes of this media type.
    Raw(&'static str),
    /// No body (204).
    Empty,
}

/// The [`SchemaFn`] of `T`.
pub fn component<T: ToSchema>(c: &mut Components) -> RefOr<Schema> {
    let name = T::name().into_owned();
    c.push((name.clone(), T::schema()));
    T::schemas(c);
    RefOr::Ref(Ref::from_schema_name(name))
}

/// Every error's body: `{"error": "…"}`, with more fields where an error has them.
#[derive(Debug, Serialize, ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    /// What went wrong, for a person.
    pub error: String,
    /// A server failure's id (also in `X-Request-Id`): the log has the cause.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Every problem of a refused command, profile or declaration (`path`, `message`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<crate::protocol::schema::Problem>>,
    /// A push certificate whose topic would strand enrolled devices: how many (409).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stranded_devices: Option<u64>,
}

impl ErrorBody {
    /// `{"error": msg}`.
    pub fn new(msg: impl Into<String>) -> Self {
        ErrorBody {
            error: msg.into(),
            request_id: None,
            problems: None,
            stranded_devices: None,
        }
    }
}

const OPEN: &[&str] = &["/health", "/healthz", "/readyz", "/.well-known/jwks.json"];

fn operation_id(op: &Operation) -> String {
    let id: String = format!("{}{}", op.method, op.path)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    id.trim_matches('_').to_owned()
}

fn method(m: &str) -> HttpMethod {
    match m {
        "post" => HttpMethod::Post,
        "put" => HttpMethod::Put,
        "delete" => HttpMethod::Delete,
        "patch" => HttpMethod::Patch,
        _ => HttpMethod::Get,
    }
}

fn json_content(schema: RefOr<Schema>) -> utoipa::openapi::Content {
    ContentBuilder::new().schema(Some(schema)).build()
}

fn raw_content(media: &str) -> utoipa::openapi::Content {
    let s = ObjectBuilder::new()
        .schema_type(Type::String)
        .content_media_type(media)
        .description(Some(format!("{media}, as is")))
        .build();
    ContentBuilder::new().schema(Some(Schema::Object(s))).build()
}

/// The errors an operation can answer, by status.
fn errors(op: &Operation) -> Vec<(&'static str, &'static str)> {
    let mut e = vec![("400", "The request is wrong (the path, query or body)")];
    if !OPEN.contains(&op.path) {
        e.push(("401", "Missing or wrong credentials"));
        e.push(("403", "This account's role may not do this"));
        e.push(("429", "Too many failed credential checks from this source (Retry-After)"));
    }
    e.push(("404", "Not found (or not set up on this server)"));
    if op.method != "get" {
        e.push(("409", "Conflicts with the current state"));
    }
    if !matches!(op.body, Body::None) {
        e.push(("413", "The body is too large"));
    }
    if matches!(op.body, Body::Raw(_) | Body::JsonOrRaw(..)) {
        e.push(("415", "Not a content type this operation takes"));
    }
    if matches!(op.tag, "ade" | "apps" | "credentials") || op.path.starts_with("/v1/acme") {
        e.push(("502", "Apple, the CA or the ACME server refused or failed (the error says which)"));
    }
    if op.tag == "credentials" {
        e.push(("504", "The CA did not answer in time"));
    }
    e.push(("500", "Our failure: the body has a request id, the log the cause"));
    e.push(("503", "Storage unavailable or busy: try again (Retry-After)"));
    e
}

/// The OpenAPI 3.1 description of the operations with `public_doc`.
pub fn document(ops: &[Operation]) -> utoipa::openapi::OpenApi {
    let mut components: Components = Vec::new();
    let error = component::<ErrorBody>(&mut components);
    let mut paths = Paths::new();
    for op in ops.iter().filter(|o| o.public_doc) {
        let mut b = OperationBuilder::new()
            .operation_id(Some(operation_id(op)))
            .summary(Some(op.summary))
            .tag(op.tag);
        for name in op
            .path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        {
            b = b.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
            );
        }
        if let Some(q) = op.query {
            b = b.parameters(Some(q()));
        }
        match op.body {
            Body::None => {}
            Body::Json(f) => {
                let s = f(&mut components);
                b = b.request_body(Some(
                    RequestBodyBuilder::new()
                        .required(Some(Required::True))
                        .content("application/json", json_content(s))
                        .build(),
                ));
            }
            Body::Raw(media) => {
                b = b.request_body(Some(
                    RequestBodyBuilder::new()
                        .required(Some(Required::True))
                        .content(media, raw_content(media))
                        .build(),
                ));
            }
            Body::JsonOrRaw(f, media) => {
                let s = f(&mut components);
                b = b.request_body(Some(
                    RequestBodyBuilder::new()
                        .required(Some(Required::True))
                        .content("application/json", json_content(s))
                        .content(media, raw_content(media))
                        .build(),
                ));
            }
        }
        let ok = match op.reply {
            Reply::Json(f) => ResponseBuilder::new()
                .description("OK")
                .content("application/json", json_content(f(&mut components)))
                .build(),
            Reply::Raw(media) => ResponseBuilder::new().description("OK").content(media, raw_content(media)).build(),
            Reply::Empty => ResponseBuilder::new().description("Done (no body)").build(),
        };
        for st in op.statuses {
            b = b.response(st.to_string(), ok.clone());
        }
        for (status, what) in errors(op) {
            if op.statuses.iter().any(|s| s.to_string() == status) {
                continue;
            }
            b = b.response(
                status,
                ResponseBuilder::new()
                    .description(what)
                    .content("application/json", json_content(error.clone()))
                    .build(),
            );
        }
        if OPEN.contains(&op.path) {
            b = b.securities(Some(Vec::<SecurityRequirement>::new()));
        }
        paths.add_path_operation(op.path, vec![method(op.method)], b.build());
    }
    let mut cb = ComponentsBuilder::new()
        .security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("The admin API key or an account secret NAME.RANDOM"))
                    .build(),
            ),
        )
        .security_scheme(
            "basic",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Basic)
                    .description(Some("admin:<api key> or NAME:SECRET"))
                    .build(),
            ),
        );
    let mut seen = std::collections::BTreeMap::new();
    for (name, mut schema) in components {
        if name == "Value" {
            // `serde_json::Value` in a type: content mdmd passes through as is.
            schema = RefOr::T(Schema::Object(
                ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::SchemaType::AnyValue)
                    .description(Some(
                        "Any JSON: content Apple (or an app, for its configuration) defines, passed through as is",
                    ))
                    .build(),
            ));
        }
        match seen.get(&name) {
            None => {
                seen.insert(name.clone(), schema.clone());
                cb = cb.schema(name, schema);
            }
            // Two types under one name would describe one of them wrongly.
            Some(first) => debug_assert!(first == &schema, "two schemas named {name}"),
        }
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("mdmd admin API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "Apple MDM server administration. Generated from the server's route table and its Rust types.",
                ))
                .license(Some(LicenseBuilder::new().name("MIT").identifier(Some("MIT")).build())),
        )
        .security(Some(vec![
            SecurityRequirement::new("bearer", Vec::<String>::new()),
            SecurityRequirement::new("basic", Vec::<String>::new()),
        ]))
        .components(Some(cb.build()))
        .paths(paths)
        .build()
}

/// A free-form JSON object, said so (`what`).
pub fn free_form(what: &str) -> Schema {
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .additional_properties(Some(utoipa::openapi::schema::AdditionalProperties::<Schema>::FreeForm(true)))
            .description(Some(what))
            .build(),
    )
}

/// A free-form JSON object that Apple defines and mdmd passes through (`null` too when `nullable`).
pub fn apple_object(what: &str, nullable: bool) -> Schema {
    use utoipa::openapi::schema::{AdditionalProperties, SchemaType};
    let ty = if nullable {
        SchemaType::from_iter([Type::Object, Type::Null])
    } else {
        SchemaType::new(Type::Object)
    };
    Schema::Object(
        ObjectBuilder::new()
            .schema_type(ty)
            .additional_properties(Some(AdditionalProperties::<Schema>::FreeForm(true)))
            .description(Some(format!("{what}: defined by Apple, passed through as is (free-form)")))
            .build(),
    )
}

/// `schema_with` functions for the free-form Apple content.
pub mod apple {
    use utoipa::openapi::Schema;

    pub fn command() -> Schema {
        super::apple_object("The command dictionary (secrets redacted)", true)
    }
    pub fn result() -> Schema {
        super::apple_object("The device's answer to the command (secrets redacted)", true)
    }
    pub fn inventory() -> Schema {
        super::apple_object("The device's answer to an inventory query", false)
    }
    pub fn payload() -> Schema {
        super::apple_object("The declaration's payload", false)
    }
    pub fn ade_profile() -> Schema {
        super::apple_object("The ADE profile (Apple's JSON)", false)
    }
    pub fn ade_device() -> Schema {
        super::apple_object("What Apple's device service says of the device", false)
    }
    pub fn status_value() -> Schema {
        super::apple_object("A status item's value as the device reported it (any JSON)", true)
    }
    pub fn status_errors() -> Schema {
        use utoipa::openapi::schema::ArrayBuilder;
        Schema::Array(
            ArrayBuilder::new()
                .items(utoipa::openapi::RefOr::T(super::apple_object(
                    "An error the device reported on its status channel",
                    false,
                )))
                .build(),
        )
    }
    pub fn commands() -> Schema {
        use utoipa::openapi::schema::ArrayBuilder;
        Schema::Array(
            ArrayBuilder::new()
                .items(utoipa::openapi::RefOr::T(super::apple_object(
                    "A command dictionary (Apple's keys)",
                    false,
                )))
                .build(),
        )
    }
    pub fn configuration() -> Schema {
        super::apple_object("A managed app configuration (the app's keys)", true)
    }
    /// A command as JSON (Apple's keys) or as a plist XML string.
    pub fn command_input() -> utoipa::openapi::RefOr<Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        Schema::OneOf(
            OneOfBuilder::new()
                .item(super::apple_object(
                    "The command dictionary (Apple's keys, RequestType first)",
                    false,
                ))
                .item(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .description(Some("The command as a plist XML dictionary")),
                )
                .build(),
        )
        .into()
    }
}

/// The name of `T`'s schema (tests).
pub fn name_of<T: ToSchema>() -> Cow<'static, str> {
    T::name()
}
