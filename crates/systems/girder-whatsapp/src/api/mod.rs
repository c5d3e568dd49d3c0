//! WhatsApp's HTTP surface: the WebSocket upgrade, devices, chats, members, history,
//! receipts, presence, and the operator's stats and retention run; shapes with their
//! limits, and the one place its errors become problems.
//!
//! Who may see what: a chat and everything in it exist only for its members — to
//! anyone else it is 404, whether or not it exists. Presence is visible to the user
//! and to those who share a chat with them (404 otherwise).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use girder_http::extract::{Json, Path, Query};
use girder_http::identity::{Caller, Operator};
use girder_http::problem::Problem;
use girder_http::ws::{PROTOCOL, WsCaller};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};

use crate::store::{Chat, Cursor};
mod session;

use crate::{ClientFrame, MessageView, ReceiptState, ServerFrame, WhatsApp, WhatsAppError};

/// The OpenAPI description of WhatsApp's endpoints.
#[derive(OpenApi)]
#[openapi(
    paths(
        connect, list_devices, delete_device, create_chat, list_chats, get_chat, add_member,
        remove_member, send_message, list_messages, receipts, presence, stats, run_retention
    ),
    components(schemas(
        DeviceView, DevicesView, CreateChatRequest, ChatKind, ChatView, ChatPage,
        AddMemberRequest, SendRequest, MessageView, MessagePage, CursorView, ReceiptsView,
        PresenceView, WhatsAppStatsView, RetentionView, ClientFrame, ServerFrame, ReceiptState, Problem
    )),
    tags((name = "whatsapp", description = "WhatsApp: chats over WebSocket with receipts, an offline inbox and presence"))
)]
pub struct WhatsAppApi;

const ID_BYTES_MAX: usize = 128;
const CHAT_BYTES_MAX: usize = 40;
const CLIENT_ID_CHARS_MAX: usize = 64;
const BODY_CHARS_MAX: usize = 4_096;
const TITLE_CHARS_MAX: usize = 100;
const MEMBERS_MAX: usize = 256;
const PAGE_LIMIT_MAX: u32 = 100;

/// A device's id or a user's id: 1–128 bytes, printable.
fn check_id(what: &str, id: &str) -> Result<(), WhatsAppError> {
    if id.is_empty() || id.len() > ID_BYTES_MAX || id.chars().any(char::is_control) {
        return Err(WhatsAppError::Invalid(format!(
            "{what}: 1–{ID_BYTES_MAX} bytes without control characters"
        )));
    }
    Ok(())
}

/// A chat id: 1–40 of a-z 0-9 (as the server makes them).
pub(crate) fn check_chat(chat: &str) -> Result<(), WhatsAppError> {
    let ok = !chat.is_empty()
        && chat.len() <= CHAT_BYTES_MAX
        && chat.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(WhatsAppError::Invalid(format!("chat ids are 1–{CHAT_BYTES_MAX} of a-z 0-9")))
    }
}

/// A client message id: 1–64 characters, no control characters.
pub(crate) fn check_client_id(id: &str) -> Result<(), WhatsAppError> {
    let chars = id.chars().count();
    if chars == 0 || chars > CLIENT_ID_CHARS_MAX || id.chars().any(char::is_control) {
        return Err(WhatsAppError::Invalid(format!(
            "client_id: 1–{CLIENT_ID_CHARS_MAX} characters without control characters"
        )));
    }
    Ok(())
}

/// A message body: 1–4,096 characters, not all spaces; line breaks and tabs are the
/// only control characters allowed.
pub(crate) fn check_body(body: &str) -> Result<(), WhatsAppError> {
    let chars = body.chars().count();
    if chars == 0
        || chars > BODY_CHARS_MAX
        || body.trim().is_empty()
        || body.chars().any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(WhatsAppError::Invalid(format!(
            "body: 1–{BODY_CHARS_MAX} characters, not all spaces, no control characters but line breaks and tabs"
        )));
    }
    Ok(())
}

impl IntoResponse for WhatsAppError {
    fn into_response(self) -> Response {
        let detail = self.to_string();
        match &self {
            Self::NotFound => Problem::not_found(detail).into_response(),
            Self::Invalid(_) => Problem::invalid(detail).into_response(),
            Self::Forbidden(_) => Problem::forbidden(detail).into_response(),
            Self::Store(_) => {
                tracing::error!(error = &self as &dyn std::error::Error, "whatsapp store failure");
                Problem::unavailable("the message store is unavailable; retry later")
                    .into_response()
            }
        }
    }
}

type Result<T, E = WhatsAppError> = std::result::Result<T, E>;

/// Which device connects.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ConnectQuery {
    /// This device's id, 1–128 bytes (the client's choice; stable across reconnects,
    /// since its offline inbox is kept by it).
    #[param(min_length = 1, max_length = 128)]
    pub device: String,
}

/// A device of the caller.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceView {
    /// Its id.
    pub device: String,
    /// First connected, ms since the epoch.
    pub created_ms: i64,
    /// Last connected.
    pub seen_ms: i64,
    /// Connected to this instance now.
    pub connected_here: bool,
}

/// The caller's devices.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DevicesView {
    /// By id.
    pub items: Vec<DeviceView>,
}

/// The kind of chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChatKind {
    /// Two members; one chat per pair.
    Direct,
    /// Any members, with a title.
    Group,
}

/// A new chat.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateChatRequest {
    /// `direct` (one other member) or `group`.
    pub kind: ChatKind,
    /// The other members (1 for direct, 1–255 for a group), each 1–128 bytes.
    #[schema(min_items = 1, max_items = 255)]
    pub members: Vec<String>,
    /// A group's title, 1–100 characters (not for direct chats).
    #[schema(min_length = 1, max_length = 100)]
    pub title: Option<String>,
}

/// A chat.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChatView {
    /// Its id.
    pub id: String,
    /// `direct` or `group`.
    pub kind: String,
    /// Its title (empty for direct chats).
    pub title: String,
    /// Who created it.
    pub created_by: String,
    /// When, ms since the epoch.
    pub created_ms: i64,
    /// Its members.
    pub members: Vec<String>,
}

impl ChatView {
    fn of(chat: Chat, members: Vec<String>) -> Self {
        Self {
            id: chat.id,
            kind: chat.kind,
            title: chat.title,
            created_by: chat.created_by,
            created_ms: chat.created_ms,
            members,
        }
    }
}

/// A page of the caller's chats, by id.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ChatPage {
    /// The chats (members not listed; `GET /chats/{chat}` has them).
    pub items: Vec<ChatView>,
    /// Pass as `after` for the next page; absent on the last.
    pub next_after: Option<String>,
}

/// Paging through chats.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ChatPageQuery {
    /// Chats with ids after this [default: from the first].
    #[param(max_length = 40, pattern = r"^[a-z0-9]{0,40}$")]
    pub after: Option<String>,
    /// Page size, 1–100 [default: 50].
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// A member to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddMemberRequest {
    /// The user, 1–128 bytes.
    #[schema(min_length = 1, max_length = 128)]
    pub user: String,
}

/// A message sent over HTTP (as device `http`).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// The client's id for it, 1–64 characters: a resend with the same id is the
    /// same message.
    #[schema(min_length = 1, max_length = 64)]
    pub client_id: String,
    /// The text, 1–4,096 characters.
    #[schema(min_length = 1, max_length = 4096)]
    pub body: String,
}

/// A page of a chat's messages, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MessagePage {
    /// The messages.
    pub items: Vec<MessageView>,
    /// Pass as `before` for the next (older) page; absent on the last.
    pub next_before: Option<i64>,
}

/// Paging back through a chat.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct MessagePageQuery {
    /// Messages with seqs below this [default: the newest].
    #[param(minimum = 1)]
    pub before: Option<i64>,
    /// Page size, 1–100 [default: 50].
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// How far one device of one member has got.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct CursorView {
    /// The member.
    pub user: String,
    /// Their device.
    pub device: String,
    /// Every message up to this seq reached the device.
    pub delivered_seq: i64,
    /// Every message up to this seq was read there.
    pub read_seq: i64,
}

impl From<Cursor> for CursorView {
    fn from(c: Cursor) -> Self {
        Self {
            user: c.user,
            device: c.device,
            delivered_seq: c.delivered_seq,
            read_seq: c.read_seq,
        }
    }
}

/// A chat's receipts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReceiptsView {
    /// The chat's last seq.
    pub last_seq: i64,
    /// Every device that acknowledged anything, by user and device.
    pub devices: Vec<CursorView>,
}

/// Whether a user is online.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PresenceView {
    /// The user.
    pub user: String,
    /// Any device connected (on any instance).
    pub online: bool,
    /// Devices connected.
    pub devices: usize,
    /// When last seen, ms since the epoch (absent if never).
    pub last_seen_ms: Option<u64>,
}

/// This instance's counters.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WhatsAppStatsView {
    /// WebSocket connections here now.
    pub connections: usize,
    /// Users with a connection here.
    pub users: usize,
    /// Messages stored by this instance.
    pub sent: u64,
    /// Resends answered with a stored message.
    pub duplicates: u64,
    /// Frames put in outboxes here.
    pub pushed: u64,
    /// Times the router fell behind and every connection drained from the table.
    pub resyncs: u64,
    /// Messages deleted by retention here.
    pub retention_deleted: u64,
}

/// A retention run.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RetentionView {
    /// Messages deleted.
    pub deleted: u64,
}

impl WhatsApp {
    /// The API routes, to be nested at `/api/whatsapp`.
    pub fn api_router(self: &Arc<Self>) -> Router {
        Router::new()
            .route("/ws", get(connect))
            .route("/devices", get(list_devices))
            .route("/devices/{device}", delete(delete_device))
            .route("/chats", post(create_chat).get(list_chats))
            .route("/chats/{chat}", get(get_chat))
            .route("/chats/{chat}/members", post(add_member))
            .route("/chats/{chat}/members/{user}", delete(remove_member))
            .route("/chats/{chat}/messages", post(send_message).get(list_messages))
            .route("/chats/{chat}/receipts", get(receipts))
            .route("/users/{user}/presence", get(presence))
            .route("/stats", get(stats))
            .route("/retention", post(run_retention))
            .with_state(Arc::clone(self))
    }

    /// `chat` if `user` is in it; 404 otherwise (existence not disclosed).
    async fn member_chat(&self, chat: &str, user: &str) -> Result<Chat> {
        check_chat(chat)?;
        if self.store.membership(chat, user).await?.is_none() {
            return Err(WhatsAppError::NotFound);
        }
        self.store.chat(chat).await?.ok_or(WhatsAppError::NotFound)
    }
}

/// Open the caller's WebSocket for one device. Authenticate with `Authorization:
/// Bearer <token>` or, from a browser, the subprotocols `girder.v1` and
/// `bearer.<token>`; the server selects `girder.v1`. Frames are JSON text: the client
/// sends `ClientFrame`s, the server `ServerFrame`s — `hello`, the offline inbox as
/// `message`s, `synced`, then live frames. Close codes: 1001 shutdown, 1003 binary
/// frame, 1008 too many devices, 1009 frame too big, 1013 server full or store down,
/// 4001 token expired, 4002 replaced by a newer connection of the device, 4008 outbox
/// full, 4009 no pong.
#[utoipa::path(
    get,
    path = "/api/whatsapp/ws",
    tag = "whatsapp",
    params(ConnectQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid device id", body = Problem, content_type = "application/problem+json"),
        (status = 426, description = "Not a WebSocket upgrade", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn connect(
    State(wa): State<Arc<WhatsApp>>,
    caller: WsCaller,
    Query(query): Query<ConnectQuery>,
    upgrade: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response> {
    check_id("device", &query.device)?;
    check_id("user", &caller.caller.id)?;
    let Ok(upgrade) = upgrade else {
        return Ok(Problem::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade-required",
            "Upgrade required",
        )
        .detail("this endpoint speaks WebSocket only")
        .into_response());
    };
    let max = wa.config.max_frame_bytes;
    let user = caller.caller.id;
    let expires_at = caller.expires_at;
    let device = query.device;
    Ok(upgrade
        .protocols([PROTOCOL])
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| session::run(wa, socket, user, device, expires_at)))
}

/// The caller's devices.
#[utoipa::path(
    get,
    path = "/api/whatsapp/devices",
    tag = "whatsapp",
    responses(
        (status = 200, description = "The devices", body = DevicesView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_devices(
    State(wa): State<Arc<WhatsApp>>,
    caller: Caller,
) -> Result<axum::Json<DevicesView>> {
    let here = wa.registry.devices(&caller.id);
    let items = wa
        .store
        .devices(&caller.id)
        .await?
        .into_iter()
        .map(|d| DeviceView {
            connected_here: here.contains(&d.device),
            device: d.device,
            created_ms: d.created_ms,
            seen_ms: d.seen_ms,
        })
        .collect();
    Ok(axum::Json(DevicesView { items }))
}

/// Forget one of the caller's devices and its offline inbox position (a device
/// connecting again later starts from each chat's join).
#[utoipa::path(
    delete,
    path = "/api/whatsapp/devices/{device}",
    tag = "whatsapp",
    params(("device" = String, Path, description = "Device id", min_length = 1, max_length = 128)),
    responses(
        (status = 204, description = "Forgotten"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such device", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid device id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn delete_device(
    State(wa): State<Arc<WhatsApp>>,
    caller: Caller,
    Path(device): Path<String>,
) -> Result<StatusCode> {
    check_id("device", &device)?;
    if wa.store.delete_device(&caller.id, &device).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(WhatsAppError::NotFound)
    }
}

/// Create a chat with the caller in it. A direct chat with a user who already has
/// one with the caller answers that chat (200).
#[utoipa::path(
    post,
    path = "/api/whatsapp/chats",
    tag = "whatsapp",
    request_body = CreateChatRequest,
    responses(
        (status = 201, description = "Created", body = ChatView),
        (status = 200, description = "The existing direct chat", body = ChatView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid members or title", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn create_chat(
    State(wa): State<Arc<WhatsApp>>,
    caller: Caller,
    Json(request): Json<CreateChatRequest>,
) -> Result<Response> {
    check_id("user", &caller.id)?;
    for member in &request.members {
        check_id("members[]", member)?;
    }
    let (kind, title) = match request.kind {
        ChatKind::Direct => {
            if request.title.is_some() {
                return Err(WhatsAppError::Invalid("a direct chat has no title".into()));
            }
            let others = request.members.iter().filter(|m| **m != caller.id).count();
            if request.members.len() != 1 || others != 1 {
                return Err(WhatsAppError::Invalid(
                    "members: a direct chat has exactly one other member".into(),
                ));
            }
            ("direct", String::new())
        }
        ChatKind::Group => {
            if request.members.is_empty() || request.members.len() >= MEMBERS_MAX {
                return Err(WhatsAppError::Invalid(format!(
                    "members: 1–{} other members",
                    MEMBERS_MAX - 1
                )));
            }
            let title = request.title.unwrap_or_default();
            let chars = title.chars().count();
            if chars == 0
                || chars > TITLE_CHARS_MAX
                || title.trim().is_empty()
                || title.chars().any(char::is_control)
            {
                return Err(WhatsAppError::Invalid(format!(
                    "title: 1–{TITLE_CHARS_MAX} characters, not all spaces, no control characters"
                )));
            }
            ("group", title)
        }
    };
    let (chat, members, created) =
        wa.create_chat(&caller.id, kind, &title, &request.members).await?;
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(ChatView::of(chat, members))).into_response())
}

/// The caller's chats, by id.
#[utoipa::path(
    get,
    path = "/api/whatsapp/chats",
    tag = "whatsapp",
    params(ChatPageQuery),
    responses(
        (status = 200, description = "A page", body = ChatPage),
        (status = 400, description = "Malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_chats(
    State(wa): State<Arc<WhatsApp>>,
    caller: Caller,
    Query(query): Query<ChatPageQuery>,
) -> Result<axum::Json<ChatPage>> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=PAGE_LIMIT_MAX).contains(&limit) {
        return Err(WhatsAppError::Invalid(format!("limit: 1–{PAGE_LIMIT_MAX}")));
    }
    let after = query.after.unwrap_or_default();
    if !after.is_empty() {
        check_chat(&after)?;
    }
    let chats = wa.store.chats_of(&caller.id, &after, limit).await?;
    let next_after =
        (chats.len() == limit as usize).then(|| chats.last().map(|c| c.id.clone())).flatten();
    Ok(axum::Json(ChatPage {
        items: chats.into_iter().map(|c| ChatView::of(c, Vec::new())).collect(),
        next_after,
    }))
}

/// One of the caller's chats, with its members.
#[utoipa::path(
    get,
    path = "/api/whatsapp/chats/{chat}",
    tag = "whatsapp",
    params(("chat" = String, Path, description = "Chat id", min_length = 1, max_length = 40, pattern = r"^[a-z0-9]{1,40}$")),
    responses(
        (status = 200, description = "The chat", body = ChatView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such chat among the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid chat id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn get_chat(
    State(wa): State<Arc<WhatsApp>>,
    caller: Caller,
    Path(chat): Path<String>,
) -> Result<axum::Json<ChatView>> {
    let chat = wa.member_chat(&chat, &caller.id).await?;
    let members = wa.store.members(&chat.id).await?;
    Ok(axum::Json(ChatView::of(chat, members)))
}

/// Add a member to a group the caller is in; they see messages from now on.
#[utoipa::path(
    post,
    path = "/api/whatsapp/chats/{chat}/members",
    tag = "whatsapp",
    params(("chat" = String, Path, description = "Chat id", min_length = 1, max_length = 40, pattern = r"^[a-z0-9]{1,40}$")),
    request_body = AddMemberRequest,
    responses(
        (status = 200, description = "The chat with its members", body = ChatView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "A direct chat's members are fixed", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such chat among the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid chat or user id, or the group is full", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn add_member(
    State(wa): State<Arc<WhatsApp>>,
    caller: Caller,
    Path(chat): Path<String>,
    Json(request): Json<AddMemberRequest>,
) -> Result<axum::Json<ChatView>> {
    check_id("user", &request.user)?;
    let chat = wa.member_chat(&chat, &caller.id).await?;
    if chat.kind == "direct" {
        return Err(WhatsAppError::Forbidden("a direct chat's members are fixed".into()));
    }
    if wa.store.members(&chat.id).await?.len() >= MEMBERS_MAX {
        return Err(WhatsAppError::Invalid(format!("a group has at most {MEMBERS_MAX} members")));
    }
    let joined_seq = wa.store.last_seq(&chat.id).await?;
    wa.store.add_member(&chat.id, &request.user, joined_seq, wa.now_ms()).await?;
    let members = wa.store.members(&chat.id).await?;
    Ok(axum::Json(ChatView::of(chat, members)))
}

/// Leave a group, or (its creator) remove a member.
#[utoipa::path(
    delete,
    path = "/api/whatsapp/chats/{chat}/members/{user}",
    tag = "whatsapp",
    params(
        ("chat" = String, Path, description = "Chat id", min_length = 1, max_length = 40, pattern = r"^[a-z0-9]{1,40}$"),
        ("user" = String, Path, description = "The member", min_length = 1, max_length = 128),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Only the creator removes others; direct chats cannot be left", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such chat among the caller's, or no such member", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid chat or user id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn remove_member(
    State(wa): State<Arc<WhatsApp>>,
    caller: Caller,
    Path((chat, user)): Path<(String, String)>,
) -> Result<StatusCode> {
    check_id("user", &user)?;
    let chat = wa.member_chat(&chat, &caller.id).await?;
    if chat.kind == "direct" {
        return Err(WhatsAppError::Forbidden("a direct chat cannot be left".into()));
    }
    if user != caller.id && chat.created_by != caller.id {
        return Err(WhatsAppError::Forbidden("only the group's creator removes others".into()));
    }
    if wa.store.remove_member(&chat.id, &user).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(WhatsAppError::NotFound)
    }
}

/// Send a message over HTTP (as the caller's device `http`); the WebSocket's `send`
/// does the same. A resend with a stored `client_id` answers the stored message with
/// 200.
#[utoipa::path(
    post,
    path = "/api/whatsapp/chats/{chat}/messages",
    tag = "whatsapp",
    params(("chat" = String, Path, description = "Chat id", min_length = 1, max_length = 40, pattern = r"^[a-z0-9]{1,40}$")),
    request_body = SendRequest,
    responses(
        (status = 201, description = "Stored and pushed", body = MessageView),
        (status = 200, description = "A resend: the stored message", body = MessageView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such chat among the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid chat id, client id or body", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn send_message(
    State(wa): State<Arc<WhatsApp>>,
    caller: Caller,
    Path(chat): Path<String>,
    Json(request): Json<SendRequest>,
) -> Result<Response> {
    check_chat(&chat)?;
    check_id("user", &caller.id)?;
    check_client_id(&request.client_id)?;
    check_body(&request.body)?;
    let (message, duplicate) =
        wa.send(&caller.id, "http", &chat, &request.client_id, &request.body).await?;
    let status = if duplicate { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, axum::Json(MessageView::from(message))).into_response())
}

/// A chat's messages, newest first, a page at a time (those since the caller joined).
#[utoipa::path(
    get,
    path = "/api/whatsapp/chats/{chat}/messages",
    tag = "whatsapp",
    params(("chat" = String, Path, description = "Chat id", min_length = 1, max_length = 40, pattern = r"^[a-z0-9]{1,40}$"), MessagePageQuery),
    responses(
        (status = 200, description = "A page", body = MessagePage),
        (status = 400, description = "Malformed query", body = Problem, content_type = "application/problem+json"),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such chat among the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid chat id, limit or cursor", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn list_messages(
    State(wa): State<Arc<WhatsApp>>,
    caller: Caller,
    Path(chat): Path<String>,
    Query(query): Query<MessagePageQuery>,
) -> Result<axum::Json<MessagePage>> {
    let limit = query.limit.unwrap_or(50);
    if !(1..=PAGE_LIMIT_MAX).contains(&limit) {
        return Err(WhatsAppError::Invalid(format!("limit: 1–{PAGE_LIMIT_MAX}")));
    }
    let before = query.before.unwrap_or(i64::MAX);
    if before < 1 {
        return Err(WhatsAppError::Invalid("before: at least 1".into()));
    }
    check_chat(&chat)?;
    let joined = wa.store.membership(&chat, &caller.id).await?.ok_or(WhatsAppError::NotFound)?;
    let items = wa.store.before(&chat, before, joined, limit).await?;
    let next_before =
        (items.len() == limit as usize).then(|| items.last().map(|m| m.seq)).flatten();
    Ok(axum::Json(MessagePage {
        items: items.into_iter().map(MessageView::from).collect(),
        next_before,
    }))
}

/// How far every device of the chat's members has received and read.
#[utoipa::path(
    get,
    path = "/api/whatsapp/chats/{chat}/receipts",
    tag = "whatsapp",
    params(("chat" = String, Path, description = "Chat id", min_length = 1, max_length = 40, pattern = r"^[a-z0-9]{1,40}$")),
    responses(
        (status = 200, description = "The receipts", body = ReceiptsView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such chat among the caller's", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid chat id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn receipts(
    State(wa): State<Arc<WhatsApp>>,
    caller: Caller,
    Path(chat): Path<String>,
) -> Result<axum::Json<ReceiptsView>> {
    let chat = wa.member_chat(&chat, &caller.id).await?;
    let last_seq = wa.store.last_seq(&chat.id).await?;
    let devices = wa.store.cursors(&chat.id).await?.into_iter().map(CursorView::from).collect();
    Ok(axum::Json(ReceiptsView { last_seq, devices }))
}

/// Whether a user is online and when they were last seen: for the user and those
/// who share a chat with them.
#[utoipa::path(
    get,
    path = "/api/whatsapp/users/{user}/presence",
    tag = "whatsapp",
    params(("user" = String, Path, description = "The user", min_length = 1, max_length = 128)),
    responses(
        (status = 200, description = "Presence", body = PresenceView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Not a user the caller shares a chat with", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid user id", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store or presence unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn presence(
    State(wa): State<Arc<WhatsApp>>,
    caller: Caller,
    Path(user): Path<String>,
) -> Result<Response> {
    check_id("user", &user)?;
    if user != caller.id && !wa.store.share_a_chat(&caller.id, &user).await? {
        return Err(WhatsAppError::NotFound);
    }
    match wa.presence_of(&user).await {
        Ok((online, devices, last_seen_ms)) => {
            Ok(axum::Json(PresenceView { user, online, devices, last_seen_ms }).into_response())
        }
        Err(e) => {
            tracing::warn!(error = %e, "presence unavailable");
            Ok(Problem::unavailable("presence is unavailable; retry later").into_response())
        }
    }
}

/// This instance's connections and counters (operators).
#[utoipa::path(
    get,
    path = "/api/whatsapp/stats",
    tag = "whatsapp",
    responses(
        (status = 200, description = "The counters", body = WhatsAppStatsView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn stats(
    State(wa): State<Arc<WhatsApp>>,
    _operator: Operator,
) -> axum::Json<WhatsAppStatsView> {
    let c = &wa.counters;
    axum::Json(WhatsAppStatsView {
        connections: wa.registry.connections(),
        users: wa.registry.users(),
        sent: c.sent.load(Ordering::Relaxed),
        duplicates: c.duplicates.load(Ordering::Relaxed),
        pushed: c.pushed.load(Ordering::Relaxed),
        resyncs: c.resyncs.load(Ordering::Relaxed),
        retention_deleted: c.retention_deleted.load(Ordering::Relaxed),
    })
}

/// Delete the messages past the retention now (operators); at most 100 batches of
/// 1,000 per shard per call.
#[utoipa::path(
    post,
    path = "/api/whatsapp/retention",
    tag = "whatsapp",
    responses(
        (status = 200, description = "The run", body = RetentionView),
        (status = 401, description = "No valid token", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an operator", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Store unavailable", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
async fn run_retention(
    State(wa): State<Arc<WhatsApp>>,
    _operator: Operator,
) -> Result<axum::Json<RetentionView>> {
    let deleted = wa.run_retention(100).await?;
    Ok(axum::Json(RetentionView { deleted }))
}

/// The OpenAPI document.
#[must_use]
pub(crate) fn document() -> utoipa::openapi::OpenApi {
    <WhatsAppApi as OpenApi>::openapi()
}
