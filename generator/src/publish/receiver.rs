//! `fedstac receive`: the write side of a static site. Item transactions
//! (STAC Transactions extension) and signed site uploads arrive over HTTP;
//! every request is authenticated ([`super::auth`]) before its body is read,
//! checked against the client's grant, and handed to one applier thread that
//! owns the site: it takes whatever requests are queued, applies them in
//! order to an in-memory overlay of the site's items, regenerates the site
//! once ([`Site::apply`]) and answers them all (group commit: bulk writers
//! share one regeneration). Each write is logged to the audit log.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use ed25519_dalek::VerifyingKey;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};

use super::audit::{self, AuditLog};
use super::auth::{AuthError, Authenticator, Principal};
use super::bundle::{self, ReplayState};
use super::config::{Grant, ReceiverConfig};
use super::grants;
use super::partner::{self, PartnerWrites};
use super::store::{Change, Site};

/// An HTTP answer: status and JSON body.
#[derive(Debug)]
struct Answer {
    status: StatusCode,
    body: Value,
    location: Option<String>,
}

impl Answer {
    fn error(status: StatusCode, description: impl Into<String>) -> Answer {
        let code = status.canonical_reason().unwrap_or("Error").replace(' ', "");
        Answer { status, body: json!({"code": code, "description": description.into()}), location: None }
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        let mut r = (self.status, axum::Json(self.body)).into_response();
        if let Some(l) = self.location.and_then(|l| HeaderValue::from_str(&l).ok()) {
            r.headers_mut().insert(header::LOCATION, l);
        }
        r
    }
}

/// What a request asks for.
enum Op {
    Create { collection: String, body: Value },
    Replace { collection: String, id: String, body: Value },
    Patch { collection: String, id: String, patch: Value, json_patch: bool },
    Delete { collection: String, id: String },
    Publish { upload: tempfile::TempPath },
}

struct Job {
    who: Principal,
    op: Op,
    reply: oneshot::Sender<Answer>,
}

struct App {
    config: ReceiverConfig,
    auth: Authenticator,
    site: Arc<Site>,
    jobs: mpsc::Sender<Job>,
}

pub async fn serve(config: ReceiverConfig) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("listening on {}", config.listen))?;
    run(config, listener).await
}

pub async fn run(config: ReceiverConfig, listener: tokio::net::TcpListener) -> Result<()> {
    std::fs::create_dir_all(&config.state_dir).with_context(|| format!("creating {}", config.state_dir.display()))?;
    // Uploads half-received or half-staged when a previous receiver died.
    let uploads = config.state_dir.join("uploads");
    if uploads.exists() {
        std::fs::remove_dir_all(&uploads).with_context(|| format!("clearing {}", uploads.display()))?;
    }
    let recipes = if config.recipes.is_empty() { crate::recipe::builtin_names().map(String::from).collect() } else { config.recipes.clone() };
    let site = Arc::new(Site::open(&config.site_dir, &config.site, &recipes, config.templates.as_deref())?);
    let auth = Authenticator::discover(&config.auth).await.context("setting up token checks")?;
    let mut keys = HashMap::new();
    for p in &config.publishers {
        let b64 = match (&p.public_key, &p.public_key_file) {
            (Some(k), _) => k.clone(),
            (None, Some(f)) => std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
            (None, None) => anyhow::bail!("publisher {} has no public key", p.key_id),
        };
        keys.insert(p.key_id.clone(), (bundle::parse_public_key(&b64).with_context(|| format!("publisher {}", p.key_id))?, p.client.clone()));
    }
    let (tx, rx) = mpsc::channel::<Job>(4096);
    let partners = PartnerWrites::open(&config.state_dir).context("loading the partner writes")?;
    let applier = Applier { site: site.clone(), config: config.clone(), audit: AuditLog::open(&config.state_dir)?, keys, partners };
    std::thread::Builder::new().name("applier".into()).spawn(move || applier.run(rx)).context("starting the applier")?;
    let app = Arc::new(App { config: config.clone(), auth, site, jobs: tx });

    let items = Router::new()
        .route("/collections/{collection}/items", post(create))
        .route("/collections/{collection}/items/{id}", axum::routing::put(replace).patch(patch).delete(delete))
        .layer(DefaultBodyLimit::max(config.max_body_bytes));
    let publish = Router::new().route("/publish", post(publish)).route("/publish/manifest", get(manifest)).layer(DefaultBodyLimit::disable());
    let router = items.merge(publish).layer(axum::middleware::from_fn_with_state(app.clone(), authenticate)).with_state(app);
    tracing::info!("receiving on {} for {}", listener.local_addr()?, config.site_dir.display());
    axum::serve(listener, router).await.context("serving")
}

/// Every route needs a valid bearer token; the body is not read before this passes.
async fn authenticate(State(app): State<Arc<App>>, mut req: Request, next: Next) -> Response {
    let header = req.headers().get(header::AUTHORIZATION).and_then(|h| h.to_str().ok());
    match app.auth.authenticate(header).await {
        Ok(p) => {
            req.extensions_mut().insert(p);
            next.run(req).await
        }
        Err(e) => {
            let challenge = match &e {
                AuthError::Missing => "Bearer realm=\"fedstac\"".to_string(),
                AuthError::Invalid(why) => format!("Bearer realm=\"fedstac\", error=\"invalid_token\", error_description=\"{}\"", why.replace(['"', '\\'], "'")),
            };
            tracing::info!("401: {e}");
            let mut r = Answer::error(StatusCode::UNAUTHORIZED, e.to_string()).into_response();
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_str(&challenge).unwrap_or(HeaderValue::from_static("Bearer")));
            r
        }
    }
}

fn forbidden_scope(scope: &str) -> Response {
    let mut r = Answer::error(StatusCode::FORBIDDEN, format!("the token lacks scope {scope}")).into_response();
    let v = format!("Bearer realm=\"fedstac\", error=\"insufficient_scope\", scope=\"{scope}\"");
    r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_str(&v).unwrap_or(HeaderValue::from_static("Bearer")));
    r
}

async fn submit(app: &App, who: Principal, op: Op) -> Response {
    let scope = if matches!(op, Op::Publish { .. }) { &app.config.auth.publish_scope } else { &app.config.auth.write_scope };
    if !who.scopes.contains(scope) {
        return forbidden_scope(scope);
    }
    if !app.config.grants.iter().any(|g| g.client == who.client) {
        return Answer::error(StatusCode::FORBIDDEN, format!("client {} has no grant here", who.client)).into_response();
    }
    let (reply, answer) = oneshot::channel();
    if app.jobs.send(Job { who, op, reply }).await.is_err() {
        return Answer::error(StatusCode::SERVICE_UNAVAILABLE, "the applier has stopped").into_response();
    }
    match answer.await {
        Ok(a) => a.into_response(),
        Err(_) => Answer::error(StatusCode::INTERNAL_SERVER_ERROR, "the applier failed").into_response(),
    }
}

fn parse_json(body: &Bytes) -> Result<Value, Box<Response>> {
    serde_json::from_slice(body).map_err(|e| Box::new(Answer::error(StatusCode::BAD_REQUEST, format!("malformed JSON: {e}")).into_response()))
}

async fn create(State(app): State<Arc<App>>, Extension(who): Extension<Principal>, UrlPath(collection): UrlPath<String>, body: Bytes) -> Response {
    match parse_json(&body) {
        Ok(body) => submit(&app, who, Op::Create { collection, body }).await,
        Err(r) => *r,
    }
}

async fn replace(State(app): State<Arc<App>>, Extension(who): Extension<Principal>, UrlPath((collection, id)): UrlPath<(String, String)>, body: Bytes) -> Response {
    match parse_json(&body) {
        Ok(body) => submit(&app, who, Op::Replace { collection, id, body }).await,
        Err(r) => *r,
    }
}

async fn patch(State(app): State<Arc<App>>, Extension(who): Extension<Principal>, UrlPath((collection, id)): UrlPath<(String, String)>, headers: HeaderMap, body: Bytes) -> Response {
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let json_patch = match ct.as_str() {
        "application/json-patch+json" => true,
        "application/merge-patch+json" | "application/json" | "" => false,
        other => return Answer::error(StatusCode::UNSUPPORTED_MEDIA_TYPE, format!("PATCH takes application/json-patch+json or application/merge-patch+json, not {other}")).into_response(),
    };
    match parse_json(&body) {
        Ok(patch) => submit(&app, who, Op::Patch { collection, id, patch, json_patch }).await,
        Err(r) => *r,
    }
}

async fn delete(State(app): State<Arc<App>>, Extension(who): Extension<Principal>, UrlPath((collection, id)): UrlPath<(String, String)>) -> Response {
    submit(&app, who, Op::Delete { collection, id }).await
}

async fn manifest(State(app): State<Arc<App>>, Extension(who): Extension<Principal>) -> Response {
    if !who.scopes.contains(&app.config.auth.publish_scope) {
        return forbidden_scope(&app.config.auth.publish_scope);
    }
    let site = app.site.clone();
    let bytes = tokio::task::spawn_blocking(move || site.manifest_bytes()).await.unwrap_or_default();
    ([(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

/// Streams the upload to a file (bounded), then queues it.
async fn publish(State(app): State<Arc<App>>, Extension(who): Extension<Principal>, body: Body) -> Response {
    if !who.scopes.contains(&app.config.auth.publish_scope) {
        return forbidden_scope(&app.config.auth.publish_scope);
    }
    let dir = app.config.state_dir.join("uploads");
    let result: Result<tempfile::TempPath, Answer> = async {
        std::fs::create_dir_all(&dir).map_err(|e| Answer::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let tmp = tempfile::NamedTempFile::new_in(&dir).map_err(|e| Answer::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?.into_temp_path();
        let mut file = tokio::fs::File::create(&tmp).await.map_err(|e| Answer::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        let mut stream = body.into_data_stream();
        let mut total = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Answer::error(StatusCode::BAD_REQUEST, format!("reading the upload: {e}")))?;
            total += chunk.len() as u64;
            if total > app.config.max_upload_bytes {
                return Err(Answer::error(StatusCode::PAYLOAD_TOO_LARGE, format!("upload over {} bytes", app.config.max_upload_bytes)));
            }
            file.write_all(&chunk).await.map_err(|e| Answer::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        }
        file.flush().await.map_err(|e| Answer::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
        Ok(tmp)
    }
    .await;
    match result {
        Ok(upload) => submit(&app, who, Op::Publish { upload }).await,
        Err(a) => a.into_response(),
    }
}

// ------------------------------------------------------------------ the applier

struct Applier {
    site: Arc<Site>,
    config: ReceiverConfig,
    audit: AuditLog,
    keys: HashMap<String, (VerifyingKey, String)>,
    /// Accepted partner writes, laid again on every uploaded tree.
    partners: PartnerWrites,
}

/// A write checked and applied to the overlay, waiting for the regeneration.
struct Pending {
    reply: oneshot::Sender<Answer>,
    answer: Answer,
    who: Principal,
    action: &'static str,
    target: String,
}

impl Applier {
    fn run(self, mut rx: mpsc::Receiver<Job>) {
        // Writes wait in the queue meanwhile.
        if let Err(e) = self.site.warm_up() {
            tracing::warn!("readying the site: {e:#}");
        }
        while let Some(first) = rx.blocking_recv() {
            let mut batch = vec![first];
            while batch.len() < 10_000 {
                match rx.try_recv() {
                    Ok(j) => batch.push(j),
                    Err(_) => break,
                }
            }
            self.run_batch(batch);
        }
    }

    fn run_batch(&self, batch: Vec<Job>) {
        let started = std::time::Instant::now();
        let requests = batch.len();
        // Seconds spent checking requests (validation, grants) and applying them.
        let (mut checks, mut applies) = (0.0f64, 0.0f64);
        let mut mark = std::time::Instant::now();
        let mut overlay: BTreeMap<String, Change> = BTreeMap::new();
        let mut pending: Vec<Pending> = Vec::new();
        let mut done: Vec<Pending> = Vec::new();
        let mut writes: Vec<partner::Write> = Vec::new();
        for job in batch {
            let Job { who, op, reply } = job;
            if let Op::Publish { upload } = op {
                // Uploads replace the whole tree: apply what is queued before, then the upload alone.
                checks += mark.elapsed().as_secs_f64();
                mark = std::time::Instant::now();
                self.commit(&mut overlay, &mut pending, &mut writes);
                done.append(&mut pending);
                let (answer, target) = self.publish(&who, &upload);
                done.push(Pending { reply, answer, who, action: "publish", target });
                applies += mark.elapsed().as_secs_f64();
                mark = std::time::Instant::now();
                continue;
            }
            let action = match &op {
                Op::Create { .. } => "create",
                Op::Replace { .. } => "replace",
                Op::Patch { .. } => "patch",
                Op::Delete { .. } => "delete",
                Op::Publish { .. } => unreachable!(),
            };
            let grant = self.config.grants.iter().find(|g| g.client == who.client).cloned();
            let mut local = BTreeMap::new();
            let mut local_writes = Vec::new();
            let (answer, target) = match grant {
                Some(g) => match self.transaction(&g, op, &overlay, &mut local, &mut local_writes) {
                    Ok((a, t)) => (a, t),
                    Err((a, t)) => {
                        local.clear();
                        local_writes.clear();
                        (a, t)
                    }
                },
                None => (Answer::error(StatusCode::FORBIDDEN, "no grant"), String::new()),
            };
            overlay.extend(local);
            writes.append(&mut local_writes);
            let p = Pending { reply, answer, who, action, target };
            if p.answer.status.is_success() {
                pending.push(p);
            } else {
                done.push(p);
            }
        }
        checks += mark.elapsed().as_secs_f64();
        mark = std::time::Instant::now();
        self.commit(&mut overlay, &mut pending, &mut writes);
        applies += mark.elapsed().as_secs_f64();
        mark = std::time::Instant::now();
        done.extend(pending);
        self.finish(done);
        tracing::debug!(
            "batch of {requests} request(s): checks {checks:.2} s, apply {applies:.2} s, audit and answers {:.2} s, total {:.2} s",
            mark.elapsed().as_secs_f64(),
            started.elapsed().as_secs_f64()
        );
    }

    /// Regenerates the site with the overlay and keeps the partner writes (synced
    /// before anyone is answered); the pending answers stand or become 500s.
    fn commit(&self, overlay: &mut BTreeMap<String, Change>, pending: &mut [Pending], writes: &mut Vec<partner::Write>) {
        if overlay.is_empty() {
            return;
        }
        // The partner writes' log lines are made meanwhile (kept only once the apply has succeeded).
        let writes = std::mem::take(writes);
        let (applied, encoded) = std::thread::scope(|scope| {
            let encoding = scope.spawn(move || partner::Encoded::of(writes));
            let applied = self.site.apply(overlay);
            (applied, encoding.join().unwrap_or_else(|_| Err(anyhow::anyhow!("encoding the partner writes panicked"))))
        });
        match applied {
            Ok(stats) => {
                tracing::info!("applied {} change(s): {} items, {} files written, {:.2} s", overlay.len(), stats.items, stats.written, stats.seconds);
                let kept = std::time::Instant::now();
                let appended = encoded.and_then(|e| self.partners.append_encoded(e));
                tracing::debug!("partner writes kept in {:.2} s", kept.elapsed().as_secs_f64());
                if let Err(e) = appended {
                    tracing::error!("keeping partner writes: {e:#}");
                    for p in pending.iter_mut() {
                        p.answer = Answer::error(StatusCode::INTERNAL_SERVER_ERROR, format!("applied, but not kept for the site's next publish: {e:#}"));
                    }
                }
            }
            Err(e) => {
                tracing::error!("apply failed: {e:#}");
                for p in pending.iter_mut() {
                    p.answer = Answer::error(StatusCode::INTERNAL_SERVER_ERROR, format!("applying the change failed: {e:#}"));
                }
            }
        }
        overlay.clear();
    }

    fn finish(&self, done: Vec<Pending>) {
        let time = audit::now();
        // A successful upload names the partner writes it could not lay again (kept, pending).
        let details: Vec<String> = done
            .iter()
            .map(|p| match p.answer.body.get("pending").and_then(Value::as_array).filter(|a| !a.is_empty()) {
                Some(list) if p.answer.status.is_success() => format!("partner writes pending: {}", list.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", ")),
                _ if p.answer.status.is_success() => String::new(),
                _ => p.answer.body["description"].as_str().unwrap_or("").to_string(),
            })
            .collect();
        let entries: Vec<audit::Entry> = done
            .iter()
            .zip(&details)
            .map(|(p, detail)| audit::Entry {
                time: time.clone(),
                client: &p.who.client,
                subject: &p.who.subject,
                action: p.action,
                target: &p.target,
                status: p.answer.status.as_u16(),
                detail,
            })
            .collect();
        if let Err(e) = self.audit.append(&entries) {
            tracing::error!("audit log: {e:#}");
        }
        drop(entries);
        for p in done {
            let _ = p.reply.send(p.answer);
        }
    }

    /// The item as the batch sees it: the overlay's, else the live one.
    fn current(&self, id: &str, overlay: &BTreeMap<String, Change>, local: &BTreeMap<String, Change>) -> Result<Option<Value>, String> {
        match local.get(id).or_else(|| overlay.get(id)) {
            Some(Change::Put(v)) => Ok(Some(v.clone())),
            Some(Change::Delete) => Ok(None),
            None => self.site.read_item(id).map_err(|e| format!("{e:#}")),
        }
    }

    /// Checks one transaction and stages its effect in `local`; either way, the answer and the target.
    #[allow(clippy::result_large_err)] // one per request, moved once
    fn transaction(&self, grant: &Grant, op: Op, overlay: &BTreeMap<String, Change>, local: &mut BTreeMap<String, Change>, writes: &mut Vec<partner::Write>) -> Result<(Answer, String), (Answer, String)> {
        // A partner's accepted write, kept so that it outlives the site's next upload.
        let node = grant.node.clone().unwrap_or_default();
        let mut keep = |id: &str, old: Option<&Value>, new: Option<&Value>| {
            if !grant.admin {
                let own = old.is_none_or(|o| grants::is_own(grant, o));
                writes.push(partner::Write::of(id, &grant.client, &node, own, old, new));
            }
        };
        let bad = |t: &str, m: String| (Answer::error(StatusCode::BAD_REQUEST, m), t.to_string());
        let internal = |t: &str, m: String| (Answer::error(StatusCode::INTERNAL_SERVER_ERROR, m), t.to_string());
        match op {
            Op::Create { collection, body } => {
                // A FeatureCollection is a bulk create: all or nothing.
                let features = match body.get("type").and_then(Value::as_str) {
                    Some("FeatureCollection") => match body {
                        Value::Object(mut m) => match m.remove("features") {
                            Some(Value::Array(f)) => f,
                            _ => return Err(bad("", "FeatureCollection without features".into())),
                        },
                        _ => unreachable!("an object has a type"),
                    },
                    _ => vec![body],
                };
                let bulk = features.len() != 1;
                let mut first = String::new();
                let mut last = Value::Null;
                // Each feature is validated on its own (on every core for a bulk write); the
                // checks against the site and the grant follow in order, as do the answers.
                for (n, valid) in self.validate_all(&collection, features).into_iter().enumerate() {
                    let (item, id) = valid.map_err(|(s, m)| (Answer::error(s, if bulk { format!("feature {n}: {m}") } else { m }), String::new()))?;
                    if n == 0 {
                        first = id.clone();
                    }
                    if self.current(&id, overlay, local).map_err(|m| internal(&id, m))?.is_some() {
                        return Err((Answer::error(StatusCode::CONFLICT, format!("item {id} exists (PUT replaces it)")), id));
                    }
                    grants::check(grant, None, Some(&item)).map_err(|m| (Answer::error(StatusCode::FORBIDDEN, m), id.clone()))?;
                    let mut item = item;
                    if !grant.admin {
                        set_owner(&mut item, Some(&grant.client));
                    }
                    if !bulk {
                        last = item.clone();
                    }
                    keep(&id, None, Some(&item));
                    local.insert(id, Change::Put(item));
                }
                if bulk {
                    let n = local.len();
                    Ok((Answer { status: StatusCode::CREATED, body: json!({"created": n}), location: None }, format!("{first} (+{} more)", n.saturating_sub(1))))
                } else {
                    let location = format!("/collections/{collection}/items/{first}");
                    Ok((Answer { status: StatusCode::CREATED, body: last, location: Some(location) }, first))
                }
            }
            Op::Replace { collection, id, body } => {
                let (item, new_id) = self.validate(&collection, body).map_err(|(s, m)| (Answer::error(s, m), id.clone()))?;
                if new_id != id {
                    return Err(bad(&id, format!("the body's id {new_id} is not the URL's {id}")));
                }
                let old = self.current(&id, overlay, local).map_err(|m| internal(&id, m))?.ok_or_else(|| (Answer::error(StatusCode::NOT_FOUND, format!("no item {id}")), id.clone()))?;
                let (old, item) = self.granted_update(grant, &id, old, item)?;
                keep(&id, Some(&old), Some(&item));
                local.insert(id.clone(), Change::Put(item.clone()));
                Ok((Answer { status: StatusCode::OK, body: item, location: None }, id))
            }
            Op::Patch { collection, id, patch, json_patch } => {
                self.check_collection(&collection, &id).map_err(|(s, m)| (Answer::error(s, m), id.clone()))?;
                let old = self.current(&id, overlay, local).map_err(|m| internal(&id, m))?.ok_or_else(|| (Answer::error(StatusCode::NOT_FOUND, format!("no item {id}")), id.clone()))?;
                let mut new = old.clone();
                if json_patch {
                    let ops: json_patch::Patch = serde_json::from_value(patch).map_err(|e| bad(&id, format!("not a JSON Patch: {e}")))?;
                    esgf_replica_parents(&mut new, &ops);
                    json_patch::patch(&mut new, &ops).map_err(|e| (Answer::error(StatusCode::UNPROCESSABLE_ENTITY, format!("patch does not apply: {e}")), id.clone()))?;
                } else {
                    json_patch::merge(&mut new, &patch);
                    // ESGF retraction by merge patch: `assets: {}` means no assets (a merge of {} would change nothing).
                    if patch.get("assets").is_some_and(|a| a.as_object().is_some_and(|m| m.is_empty())) {
                        new["assets"] = json!({});
                    }
                }
                let (item, new_id) = self.validate(&collection, new).map_err(|(s, m)| (Answer::error(s, m), id.clone()))?;
                if new_id != id {
                    return Err(bad(&id, "a patch may not change the id".into()));
                }
                let (old, item) = self.granted_update(grant, &id, old, item)?;
                keep(&id, Some(&old), Some(&item));
                local.insert(id.clone(), Change::Put(item.clone()));
                Ok((Answer { status: StatusCode::OK, body: item, location: None }, id))
            }
            Op::Delete { collection, id } => {
                self.check_collection(&collection, &id).map_err(|(s, m)| (Answer::error(s, m), id.clone()))?;
                let old = self.current(&id, overlay, local).map_err(|m| internal(&id, m))?.ok_or_else(|| (Answer::error(StatusCode::NOT_FOUND, format!("no item {id}")), id.clone()))?;
                let (old, _) = self.carry_owner(old, Value::Null);
                grants::check(grant, Some(&old), None).map_err(|m| (Answer::error(StatusCode::FORBIDDEN, m), id.clone()))?;
                keep(&id, Some(&old), None);
                local.insert(id.clone(), Change::Delete);
                Ok((Answer { status: StatusCode::NO_CONTENT, body: Value::Null, location: None }, id))
            }
            Op::Publish { .. } => unreachable!("handled by the batch"),
        }
    }

    fn check_collection(&self, collection: &str, id: &str) -> Result<(), (StatusCode, String)> {
        let (c, _) = self.site.locate(id).map_err(|m| (StatusCode::NOT_FOUND, m))?;
        if !c.eq_ignore_ascii_case(collection) {
            return Err((StatusCode::NOT_FOUND, format!("item {id} belongs to collection {c}, not {collection}")));
        }
        Ok(())
    }

    /// [`Self::validate`] for each of `features`, in order; a bulk write's on every core.
    #[allow(clippy::type_complexity)]
    fn validate_all(&self, collection: &str, mut features: Vec<Value>) -> Vec<Result<(Value, String), (StatusCode, String)>> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 8);
        if threads == 1 || features.len() < 64 {
            return features.into_iter().map(|f| self.validate(collection, f)).collect();
        }
        let per = features.len().div_ceil(threads);
        let mut chunks = Vec::new();
        while features.len() > per {
            let rest = features.split_off(per);
            chunks.push(std::mem::replace(&mut features, rest));
        }
        chunks.push(features);
        std::thread::scope(|scope| {
            let mut chunks = chunks.into_iter();
            let mine = chunks.next().unwrap_or_default();
            let handles: Vec<_> = chunks.map(|chunk| scope.spawn(move || chunk.into_iter().map(|f| self.validate(collection, f)).collect::<Vec<_>>())).collect();
            let mut out: Vec<_> = mine.into_iter().map(|f| self.validate(collection, f)).collect();
            for h in handles {
                out.extend(h.join().expect("validation does not panic"));
            }
            out
        })
    }

    /// Validates an incoming item (sanitize: STAC structure, safe id, http(s) hrefs) for `collection`.
    fn validate(&self, collection: &str, body: Value) -> Result<(Value, String), (StatusCode, String)> {
        if let Some(c) = body.get("collection").and_then(Value::as_str) {
            if !c.eq_ignore_ascii_case(collection) {
                return Err((StatusCode::BAD_REQUEST, format!("the item's collection {c} is not the URL's {collection}")));
            }
        }
        let (item, id, notes) = crate::harvest::sanitize::sanitize_write(body, self.site.placer()).map_err(|m| (StatusCode::BAD_REQUEST, format!("invalid STAC item: {m}")))?;
        self.check_collection(collection, &id).map_err(|(_, m)| (StatusCode::BAD_REQUEST, m))?;
        for n in notes {
            tracing::debug!("{id}: {n}");
        }
        Ok((item, id))
    }

    /// A replacement of `old` by `item` (PUT or PATCH) under the client's
    /// grant: the owner carried over, the grant checked, and a partner's own
    /// new dataset recorded as its own.
    #[allow(clippy::result_large_err)]
    fn granted_update(&self, grant: &Grant, id: &str, old: Value, item: Value) -> Result<(Value, Value), (Answer, String)> {
        let (old, mut item) = self.carry_owner(old, item);
        grants::check(grant, Some(&old), Some(&item)).map_err(|m| (Answer::error(StatusCode::FORBIDDEN, m), id.to_string()))?;
        if !grant.admin && owner(&item).is_none() && grants::check(grant, None, Some(&item)).is_ok() {
            set_owner(&mut item, Some(&grant.client));
        }
        Ok((old, item))
    }

    /// The live item as the sanitizer would write it (so grant comparisons
    /// see like with like), and the new one, both with the live item's owner
    /// (which the sanitizer strips from anything a client sends).
    fn carry_owner(&self, old: Value, mut new: Value) -> (Value, Value) {
        let who = owner(&old).map(str::to_string);
        let mut norm = crate::harvest::sanitize::sanitize_write(old.clone(), self.site.placer()).map(|(v, _, _)| v).unwrap_or(old);
        set_owner(&mut norm, who.as_deref());
        if new.is_object() {
            set_owner(&mut new, who.as_deref());
        }
        (norm, new)
    }

    fn publish(&self, who: &Principal, upload: &std::path::Path) -> (Answer, String) {
        let replay_path = self.config.state_dir.join("replay.json");
        let mut replay = match ReplayState::load(&replay_path) {
            Ok(r) => r,
            Err(e) => return (Answer::error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")), String::new()),
        };
        let staging = match tempfile::tempdir_in(self.config.state_dir.join("uploads")) {
            Ok(d) => d,
            Err(e) => return (Answer::error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()), String::new()),
        };
        let live_manifest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(self.site.manifest_bytes()));
        let live_empty = self.site.manifest_bytes().is_empty();
        let now = chrono::Utc::now().timestamp();
        let key_of = |id: &str| self.keys.get(id).filter(|(_, client)| *client == who.client).map(|(k, _)| *k);
        let accept = |env: &bundle::Envelope| {
            if env.site != self.config.site.name {
                return Err(bundle::Refused { status: 400, message: format!("upload for site {:?}, this is {:?}", env.site, self.config.site.name) });
            }
            replay.check(env, now)?;
            let base_ok = if live_empty { env.base_manifest.is_empty() } else { env.base_manifest == live_manifest };
            if !base_ok {
                return Err(bundle::Refused { status: 409, message: "the site changed since its manifest was read: fetch it again".into() });
            }
            Ok(())
        };
        let opened = match bundle::open(upload, staging.path(), key_of, accept, self.config.max_upload_bytes) {
            Ok(o) => o,
            Err(r) => {
                tracing::warn!("upload refused: {}", r.message);
                return (Answer::error(StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST), r.message), String::new());
            }
        };
        let env = &opened.envelope;
        let target = format!("{}#{}", env.key_id, env.sequence);
        // Recorded before applying: a crash mid-apply must not let the same upload in twice.
        if let Err(e) = replay.record(env, &replay_path) {
            return (Answer::error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")), target);
        }
        match self.site.apply_upload(&env.files, &opened.staged, &self.partners.snapshot()) {
            Ok(stats) => {
                if !stats.pending.is_empty() {
                    tracing::warn!("partner writes pending (not in the uploaded tree): {}", stats.pending.join(", "));
                }
                let body = json!({"files": env.files.len(), "uploaded": env.upload.len(), "written": stats.written, "unchanged": stats.unchanged, "removed": stats.removed,
                                  "partner_writes": stats.reapplied, "pending": stats.pending});
                (Answer { status: StatusCode::OK, body, location: None }, target)
            }
            Err(e) => (Answer::error(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")), target),
        }
    }
}

/// The partner client that created an item through this receiver
/// (`fedstac:owner`): it keeps the item after a retraction empties its assets.
fn owner(item: &Value) -> Option<&str> {
    item.get("properties")?.get(grants::OWNER)?.as_str()
}

fn set_owner(item: &mut Value, who: Option<&str>) {
    if let Some(p) = item.get_mut("properties").and_then(Value::as_object_mut) {
        match who {
            Some(w) => p.insert(grants::OWNER.into(), json!(w)),
            None => p.remove(grants::OWNER),
        };
    }
}

/// ESGF replica patches `add /assets/<key>/alternate/<node>` to items that
/// have no `alternate` object yet: the parent is created so the add applies.
fn esgf_replica_parents(item: &mut Value, ops: &json_patch::Patch) {
    for op in &ops.0 {
        let json_patch::PatchOperation::Add(add) = op else { continue };
        let path = add.path.to_string();
        let parts: Vec<&str> = path.split('/').collect();
        if parts.len() == 5 && parts[0].is_empty() && parts[1] == "assets" && parts[3] == "alternate" {
            let key = parts[2].replace("~1", "/").replace("~0", "~");
            if let Some(asset) = item.get_mut("assets").and_then(|a| a.get_mut(&key)).and_then(Value::as_object_mut) {
                asset.entry("alternate").or_insert_with(|| json!({}));
            }
        }
    }
}
