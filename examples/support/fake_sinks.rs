//! An in-process stand-in for the systems hookgate relays Jenkins build events to, on one port:
//! Allstacks' `cicd_job` webhook (vendor/allstacks-cicd-job-endpoint.txt), itoc360's events API
//! (`jenkins-events.md` §3 "Events API"), Port's API for action runs (`port.md` §3: access
//! tokens, run updates that refuse unknown keys with 422, run logs) and a generic receiver that
//! keeps what it is sent.
//! It records every request it receives. Used by the integration tests and by the `fake_sinks`
//! example.
//!
//! Where the vendors document no answer body, the fake's is our guess, and says so below.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use actix_web::dev::ServerHandle;
use actix_web::http::{Method, StatusCode};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use hookgate::sinks::allstacks::validate_cicd_job;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The credentials each fake expects. Debug never shows them.
#[derive(Clone, Default)]
pub struct FakeSinksConfig {
    /// Allstacks' Personal Access Token, expected as `Authorization: Bearer <PAT>`.
    pub allstacks_token: String,
    /// itoc360's source token, expected as `Authorization: Bearer <token>` or `?token=`.
    pub itoc360_token: String,
    /// Port's client id and secret, taken by `POST /v1/auth/access_token`.
    pub port_client_id: String,
    pub port_client_secret: String,
    /// The `expiresIn` of the access tokens the fake issues (Port's own lifetime is not
    /// documented; 0 means 3 hours).
    pub port_token_secs: u64,
}

impl std::fmt::Debug for FakeSinksConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeSinksConfig")
            .field("allstacks_token", &"***")
            .field("itoc360_token", &"***")
            .field("port_client_id", &"***")
            .field("port_client_secret", &"***")
            .finish()
    }
}

/// Which of the three fakes a path belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Sink {
    /// `POST /webhook/company/{company_id}/cicd_job`
    Allstacks,
    /// `POST /functions/v1/events`
    Itoc360,
    /// `/forward` and anything under `/forward/`
    Forward,
    /// `POST /v1/auth/access_token`, `PATCH /v1/actions/runs/{id}`, `POST .../{id}/logs`
    Port,
    /// Any other path: answered 404.
    Unknown,
}

impl Sink {
    fn of(path: &str) -> Sink {
        let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
        match segments.as_slice() {
            ["", "webhook", "company", company, "cicd_job"] if !company.is_empty() => {
                Sink::Allstacks
            }
            ["", "functions", "v1", "events"] => Sink::Itoc360,
            ["", "v1", "auth", "access_token"] => Sink::Port,
            ["", "v1", "actions", "runs", run, ..] if !run.is_empty() => Sink::Port,
            ["", "forward", ..] => Sink::Forward,
            _ => Sink::Unknown,
        }
    }
}

/// How one fake answers from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answer as the real system does.
    Normal,
    /// Answer every request with this status.
    Status(u16),
    /// Wait this long, then answer as the real system does.
    Delay(Duration),
    /// Answer this status with a `Retry-After` of this many seconds (429, 503).
    RetryAfter(u16, u64),
}

/// One request as the fake received it.
#[derive(Clone)]
pub struct RecordedRequest {
    /// Arrival order, from 1.
    pub seq: u64,
    pub sink: Sink,
    pub method: String,
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// Header names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status the fake answered with; 0 while (or if never) answered.
    pub answered: u16,
    /// Why it answered so, in a few words (`accepted`, `wrong PAT`, the validation reason…).
    pub verdict: String,
}

impl RecordedRequest {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// Headers with credentials masked, for printing.
    pub fn masked_headers(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .map(|(name, value)| {
                let secret = matches!(name.as_str(), "authorization" | "token" | "x-api-key");
                (
                    name.clone(),
                    if secret { mask(value) } else { value.clone() },
                )
            })
            .collect()
    }

    /// Query parameters with `token` masked, for printing.
    pub fn masked_query(&self) -> Vec<(String, String)> {
        self.query
            .iter()
            .map(|(name, value)| {
                let secret = name == "token";
                (
                    name.clone(),
                    if secret { "***".into() } else { value.clone() },
                )
            })
            .collect()
    }
}

impl std::fmt::Debug for RecordedRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordedRequest")
            .field("seq", &self.seq)
            .field("sink", &self.sink)
            .field("method", &self.method)
            .field("path", &self.path)
            .field("query", &self.masked_query())
            .field("headers", &self.masked_headers())
            .field("body", &String::from_utf8_lossy(&self.body))
            .field("answered", &self.answered)
            .field("verdict", &self.verdict)
            .finish()
    }
}

/// `Bearer ***` for a bearer token, `***` for anything else.
fn mask(value: &str) -> String {
    match value.split_once(' ') {
        Some((scheme, _)) => format!("{scheme} ***"),
        None => "***".into(),
    }
}

/// A Port action run as the fake holds it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortRun {
    /// `IN_PROGRESS` until an update sets `SUCCESS` or `FAILURE`.
    pub status: String,
    pub status_label: Option<String>,
    pub link: Vec<String>,
    pub summary: Option<String>,
    pub external_run_id: Option<String>,
    /// Every accepted PATCH body, in order.
    pub updates: Vec<Value>,
    /// Every log line's `message`, in order.
    pub logs: Vec<String>,
}

impl PortRun {
    /// A run as Port starts it, before any update.
    fn in_progress() -> Self {
        Self {
            status: "IN_PROGRESS".into(),
            ..Self::default()
        }
    }
}

/// The keys Port's run update takes (`additionalProperties: false`, port.md §3).
const PORT_UPDATE_KEYS: [&str; 6] = [
    "status",
    "statusLabel",
    "link",
    "summary",
    "externalRunId",
    "message",
];

/// An alert itoc360 holds open: triggered, not yet resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenAlert {
    /// itoc360's key for it: a hash of the event's `id`.
    pub fingerprint: String,
    /// The `id` hookgate sent.
    pub id: String,
    /// Title and severity of the latest trigger.
    pub title: String,
    pub severity: String,
    /// How many triggers it has had.
    pub triggers: u32,
}

struct State {
    config: FakeSinksConfig,
    behaviours: Mutex<HashMap<Sink, Behaviour>>,
    /// Behaviours used one per request to that sink, before its standing one.
    scripts: Mutex<HashMap<Sink, VecDeque<Behaviour>>>,
    /// Set by `down`/`stop`: a keep-alive connection the server has not dropped yet still
    /// gets an error, so "down" never serves a request.
    down: AtomicBool,
    requests: Mutex<Vec<RecordedRequest>>,
    /// Every `cicd_job` record Allstacks accepted, in order.
    jobs: Mutex<Vec<Value>>,
    open_alerts: Mutex<BTreeMap<String, OpenAlert>>,
    /// Every run Port was told of, by id.
    runs: Mutex<BTreeMap<String, PortRun>>,
    /// Access tokens issued, newest last; a revoked one is refused with 401.
    tokens: Mutex<Vec<(String, bool)>>,
    next_event: AtomicU64,
    next_request: AtomicU64,
    base_url: String,
}

/// The three fakes, running on 127.0.0.1 (or the address given to [`FakeSinks::start_on`]).
pub struct FakeSinks {
    state: Arc<State>,
    addr: SocketAddr,
    handle: ServerHandle,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A test that panicked while holding the lock must not hide the requests from the next one.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl FakeSinks {
    /// Starts on a free loopback port.
    pub async fn start(config: FakeSinksConfig) -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0", config).await
    }

    pub async fn start_on(listen: &str, config: FakeSinksConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            config,
            behaviours: Mutex::new(HashMap::new()),
            scripts: Mutex::new(HashMap::new()),
            down: AtomicBool::new(false),
            requests: Mutex::new(Vec::new()),
            jobs: Mutex::new(Vec::new()),
            open_alerts: Mutex::new(BTreeMap::new()),
            runs: Mutex::new(BTreeMap::new()),
            tokens: Mutex::new(Vec::new()),
            next_event: AtomicU64::new(1),
            next_request: AtomicU64::new(1),
            base_url: format!("http://{addr}"),
        });
        let handle = serve(listener, Arc::clone(&state))?;
        Ok(Self {
            state,
            addr,
            handle,
        })
    }

    /// The root URL, without a trailing slash.
    pub fn url(&self) -> String {
        self.state.base_url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A sink `url` for `kind = "allstacks"`.
    pub fn allstacks_url(&self, company_id: &str) -> String {
        format!(
            "{}/webhook/company/{company_id}/cicd_job",
            self.state.base_url
        )
    }

    /// A sink `url` for `kind = "alert"`.
    pub fn itoc360_url(&self) -> String {
        format!("{}/functions/v1/events", self.state.base_url)
    }

    /// A sink `url` for `kind = "forward"`.
    pub fn forward_url(&self) -> String {
        format!("{}/forward", self.state.base_url)
    }

    /// Removes and returns every request received so far (long runs keep memory flat).
    pub fn take_requests(&self) -> Vec<RecordedRequest> {
        std::mem::take(&mut *lock(&self.state.requests))
    }

    /// Removes and returns the requests answered so far, leaving those still being answered.
    pub fn take_answered(&self) -> Vec<RecordedRequest> {
        let mut requests = lock(&self.state.requests);
        let (answered, pending) = std::mem::take(&mut *requests)
            .into_iter()
            .partition(|r| r.answered != 0);
        *requests = pending;
        answered
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests).clone()
    }

    /// The requests one fake received, oldest first.
    pub fn requests_to(&self, sink: Sink) -> Vec<RecordedRequest> {
        lock(&self.state.requests)
            .iter()
            .filter(|r| r.sink == sink)
            .cloned()
            .collect()
    }

    /// Every `cicd_job` record Allstacks answered 200, in order.
    pub fn allstacks_jobs(&self) -> Vec<Value> {
        lock(&self.state.jobs).clone()
    }

    /// The alerts itoc360 holds open, by fingerprint.
    pub fn open_alerts(&self) -> Vec<OpenAlert> {
        lock(&self.state.open_alerts).values().cloned().collect()
    }

    /// The base URL of the fake Port API (a port sink's `url`).
    pub fn port_url(&self) -> String {
        self.url()
    }

    /// The runs Port was told of, by id.
    pub fn port_runs(&self) -> BTreeMap<String, PortRun> {
        lock(&self.state.runs).clone()
    }

    /// Makes every access token issued so far invalid (Port answers 401 to it), as a token
    /// past its lifetime is.
    pub fn expire_port_tokens(&self) {
        for (_, revoked) in lock(&self.state.tokens).iter_mut() {
            *revoked = true;
        }
    }

    /// How many access tokens were issued.
    pub fn port_tokens_issued(&self) -> usize {
        lock(&self.state.tokens).len()
    }

    pub fn set_behaviour(&self, sink: Sink, behaviour: Behaviour) {
        lock(&self.state.behaviours).insert(sink, behaviour);
    }

    /// The next requests to `sink` get these behaviours, one each, before its standing one
    /// applies again.
    pub fn script(&self, sink: Sink, behaviours: impl IntoIterator<Item = Behaviour>) {
        lock(&self.state.scripts)
            .entry(sink)
            .or_default()
            .extend(behaviours);
    }

    /// Stops listening; later connections are refused.
    pub async fn stop(self) {
        self.state.down.store(true, Ordering::SeqCst);
        self.handle.stop(false).await;
    }

    /// Goes down (connections refused) but keeps what it recorded, to come back with [`up`].
    ///
    /// [`up`]: FakeSinks::up
    pub async fn down(&mut self) {
        self.state.down.store(true, Ordering::SeqCst);
        self.handle.stop(false).await;
    }

    /// Listens again on the same address after [`down`](FakeSinks::down).
    pub fn up(&mut self) -> std::io::Result<()> {
        let listener = TcpListener::bind(self.addr)?;
        self.handle = serve(listener, Arc::clone(&self.state))?;
        self.state.down.store(false, Ordering::SeqCst);
        Ok(())
    }
}

fn serve(listener: TcpListener, state: Arc<State>) -> std::io::Result<ServerHandle> {
    let shared = web::Data::from(state);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(shared.clone())
            .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
            .default_service(web::to(answer))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .listen(listener)?
    .run();
    let handle = server.handle();
    actix_web::rt::spawn(server);
    Ok(handle)
}

/// An answer and the verdict recorded with it.
struct Answer {
    response: HttpResponse,
    verdict: String,
}

fn answer_json(status: StatusCode, body: Value, verdict: impl Into<String>) -> Answer {
    Answer {
        response: HttpResponse::build(status)
            .content_type("application/json")
            .body(body.to_string()),
        verdict: verdict.into(),
    }
}

async fn answer(request: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let query: Vec<(String, String)> = form_urlencoded::parse(request.query_string().as_bytes())
        .into_owned()
        .collect();
    let sink = Sink::of(request.path());
    // Recorded on arrival, so a request whose sender gave up (a timeout) is still seen.
    let seq = state.next_request.fetch_add(1, Ordering::SeqCst);
    let recorded = RecordedRequest {
        seq,
        sink,
        method: request.method().to_string(),
        path: request.path().to_owned(),
        query: query.clone(),
        headers: request
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: body.to_vec(),
        answered: 0,
        verdict: String::new(),
    };
    lock(&state.requests).push(recorded);
    let Answer { response, verdict } = respond(&request, sink, &query, &body, &state).await;
    // Found by `seq`: `take_*` may have moved it meanwhile, or taken it.
    if let Some(entry) = lock(&state.requests)
        .iter_mut()
        .rev()
        .find(|r| r.seq == seq)
    {
        entry.answered = response.status().as_u16();
        entry.verdict = verdict;
    }
    response
}

async fn respond(
    request: &HttpRequest,
    sink: Sink,
    query: &[(String, String)],
    body: &[u8],
    state: &State,
) -> Answer {
    if state.down.load(Ordering::SeqCst) {
        return scripted(503, None);
    }
    let scripted_next = lock(&state.scripts)
        .get_mut(&sink)
        .and_then(VecDeque::pop_front);
    let behaviour = scripted_next.unwrap_or_else(|| {
        lock(&state.behaviours)
            .get(&sink)
            .copied()
            .unwrap_or(Behaviour::Normal)
    });
    match behaviour {
        Behaviour::Normal => {}
        Behaviour::Status(code) => return scripted(code, None),
        Behaviour::RetryAfter(code, secs) => return scripted(code, Some(secs)),
        Behaviour::Delay(delay) => actix_web::rt::time::sleep(delay).await,
    }
    match sink {
        Sink::Allstacks => allstacks(request, body, state),
        Sink::Itoc360 => itoc360(request, query, body, state),
        Sink::Port => port(request, body, state),
        Sink::Forward => Answer {
            response: HttpResponse::Ok().finish(),
            verdict: format!("kept {} bytes", body.len()),
        },
        Sink::Unknown => answer_json(
            StatusCode::NOT_FOUND,
            json!({"error": "not found"}),
            "no fake at this path",
        ),
    }
}

fn scripted(code: u16, retry_after: Option<u64>) -> Answer {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut answer = answer_json(
        status,
        json!({"error": status.canonical_reason().unwrap_or("error")}),
        "scripted",
    );
    if let Some(secs) = retry_after
        && let Ok(value) = secs.to_string().parse()
    {
        answer
            .response
            .headers_mut()
            .insert(actix_web::http::header::RETRY_AFTER, value);
    }
    answer
}

fn bearer(request: &HttpRequest) -> Option<&str> {
    request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
}

/// Allstacks documents only that 401 means a missing or invalid token and 400 a payload with
/// missing fields or invalid values (vendor/allstacks-tools-connect-jenkins.txt
/// "Troubleshooting"). The bodies below are our guesses: `{"detail": …}` as the Django REST
/// framework Allstacks' API looks like answers for auth and media type, `{"error": <reason>}`
/// for validation, `{"status": "ok"}` for success.
fn allstacks(request: &HttpRequest, body: &[u8], state: &State) -> Answer {
    if request.method() != Method::POST {
        return answer_json(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"detail": format!("Method \"{}\" not allowed.", request.method())}),
            "not a POST",
        );
    }
    match bearer(request) {
        None => {
            return answer_json(
                StatusCode::UNAUTHORIZED,
                json!({"detail": "Authentication credentials were not provided."}),
                "no PAT",
            );
        }
        Some(token) if token != state.config.allstacks_token => {
            return answer_json(
                StatusCode::UNAUTHORIZED,
                json!({"detail": "Invalid token."}),
                "wrong PAT",
            );
        }
        Some(_) => {}
    }
    let content_type = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/json")
    {
        return answer_json(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            json!({"detail": format!("Unsupported media type \"{content_type}\" in request.")}),
            "not application/json",
        );
    }
    let record: Value = match serde_json::from_slice(body) {
        Ok(record) => record,
        Err(error) => {
            let reason = format!("the body is not JSON: {error}");
            return answer_json(StatusCode::BAD_REQUEST, json!({"error": reason}), reason);
        }
    };
    if let Err(reason) = validate_cicd_job(&record) {
        return answer_json(StatusCode::BAD_REQUEST, json!({"error": reason}), reason);
    }
    let verdict = format!(
        "accepted job {} ({})",
        record["job_id"].as_str().unwrap_or_default(),
        record["status"].as_str().unwrap_or_default()
    );
    lock(&state.jobs).push(record);
    answer_json(StatusCode::OK, json!({"status": "ok"}), verdict)
}

/// itoc360's events API as its SDKs use it (`jenkins-events.md` §3): 401 without a token, 404
/// "source not found" for a token it does not know, `{"error": …}` bodies, and on success the
/// stored event with `type` ALERT or RESOLVE and a fingerprint hashed from `id`.
/// Port's API: tokens for the configured client id and secret; run updates and log lines with a
/// token it issued and has not revoked. A run is known once it is first updated (the fake has no
/// actions; Port itself answers 404 for an unknown run id, which tests script with `Status`).
fn port(request: &HttpRequest, body: &[u8], state: &State) -> Answer {
    let error = |status: StatusCode, error: &str, message: String| {
        answer_json(
            status,
            json!({"ok": false, "error": error, "message": message}),
            message,
        )
    };
    let segments: Vec<&str> = request.path().trim_end_matches('/').split('/').collect();
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    if segments == ["", "v1", "auth", "access_token"] {
        if request.method() != Method::POST {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "POST only".into(),
            );
        }
        let field = |key: &str| {
            parsed
                .as_ref()
                .and_then(|v| v.get(key))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let extra = parsed
            .as_ref()
            .and_then(Value::as_object)
            .is_some_and(|o| o.keys().any(|k| k != "clientId" && k != "clientSecret"));
        if extra {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_request",
                "body may only have clientId and clientSecret".into(),
            );
        }
        if field("clientId").as_deref() != Some(state.config.port_client_id.as_str())
            || field("clientSecret").as_deref() != Some(state.config.port_client_secret.as_str())
        {
            return error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "invalid client credentials".into(),
            );
        }
        let mut tokens = lock(&state.tokens);
        let token = format!("fake-port-token-{}", tokens.len() + 1);
        tokens.push((token.clone(), false));
        let secs = if state.config.port_token_secs == 0 {
            10_800
        } else {
            state.config.port_token_secs
        };
        return answer_json(
            StatusCode::OK,
            json!({"ok": true, "accessToken": token, "expiresIn": secs, "tokenType": "Bearer"}),
            "token issued",
        );
    }
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let valid = bearer.is_some_and(|token| {
        lock(&state.tokens)
            .iter()
            .any(|(issued, revoked)| *issued == token && !revoked)
    });
    if !valid {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "invalid or expired token".into(),
        );
    }
    let Some(update) = parsed.as_ref().and_then(Value::as_object) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body is not a JSON object".into(),
        );
    };
    match (request.method().clone(), segments.as_slice()) {
        (Method::PATCH, ["", "v1", "actions", "runs", run]) => {
            if let Some(key) = update
                .keys()
                .find(|k| !PORT_UPDATE_KEYS.contains(&k.as_str()))
            {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_request",
                    format!("body must NOT have additional properties ({key})"),
                );
            }
            let mut runs = lock(&state.runs);
            let entry = runs
                .entry((*run).to_owned())
                .or_insert_with(PortRun::in_progress);
            // Port documents updates "until a terminal status is set", not its answer after
            // that; this refusal is our guess, so a second terminal update shows in a test.
            if entry.status != "IN_PROGRESS" {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "run_already_finished",
                    format!("run {run} has already ended with {}", entry.status),
                );
            }
            let text = |key: &str| update.get(key).and_then(Value::as_str).map(str::to_owned);
            if let Some(status) = text("status") {
                if status != "SUCCESS" && status != "FAILURE" {
                    return error(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "invalid_request",
                        "status must be SUCCESS or FAILURE".into(),
                    );
                }
                entry.status = status;
            }
            if let Some(label) = text("statusLabel") {
                entry.status_label = Some(label);
            }
            match update.get("link") {
                Some(Value::String(link)) => entry.link = vec![link.clone()],
                Some(Value::Array(links)) => {
                    entry.link = links
                        .iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                }
                _ => {}
            }
            if let Some(summary) = text("summary") {
                entry.summary = Some(summary);
            }
            if let Some(external) = text("externalRunId") {
                entry.external_run_id = Some(external);
            }
            entry.updates.push(Value::Object(update.clone()));
            println!(
                "port: run {run} {} {}",
                entry.status,
                Value::Object(update.clone())
            );
            answer_json(
                StatusCode::OK,
                json!({"ok": true, "run": {"id": run, "status": entry.status}}),
                "run updated",
            )
        }
        (Method::POST, ["", "v1", "actions", "runs", run, "logs"]) => {
            let Some(message) = update.get("message").and_then(Value::as_str) else {
                return error(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_request",
                    "body must have required property 'message'".into(),
                );
            };
            let mut runs = lock(&state.runs);
            let entry = runs
                .entry((*run).to_owned())
                .or_insert_with(PortRun::in_progress);
            entry.logs.push(message.to_owned());
            println!("port: run {run} log: {message}");
            answer_json(
                StatusCode::CREATED,
                json!({"ok": true, "runLog": {"runId": run, "message": message}}),
                "log added",
            )
        }
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such route".into()),
    }
}

fn itoc360(
    request: &HttpRequest,
    query: &[(String, String)],
    body: &[u8],
    state: &State,
) -> Answer {
    if request.method() != Method::POST {
        return answer_json(
            StatusCode::METHOD_NOT_ALLOWED,
            json!({"error": "Method not allowed"}),
            "not a POST",
        );
    }
    // The SDKs send a Bearer token; the Jenkins integration URL carries `?token=`.
    let token = bearer(request).or_else(|| {
        query
            .iter()
            .find(|(name, _)| name == "token")
            .map(|(_, value)| value.as_str())
    });
    match token.filter(|t| !t.is_empty()) {
        None => {
            return answer_json(
                StatusCode::UNAUTHORIZED,
                json!({"error": "Missing authorization token"}),
                "no source token",
            );
        }
        Some(token) if token != state.config.itoc360_token => {
            return answer_json(
                StatusCode::NOT_FOUND,
                json!({"error": "source not found"}),
                "unknown source token",
            );
        }
        Some(_) => {}
    }
    let document = match check_itoc360_event(body) {
        Ok(document) => document,
        Err(reason) => {
            return answer_json(StatusCode::BAD_REQUEST, json!({"error": reason}), reason);
        }
    };
    let id = document["id"].as_str().unwrap_or_default().to_owned();
    let resolve = document["status"] == "resolve";
    let fingerprint = hex::encode(Sha256::digest(id.as_bytes()));
    {
        let mut open = lock(&state.open_alerts);
        if resolve {
            open.remove(&fingerprint);
        } else {
            let alert = open
                .entry(fingerprint.clone())
                .or_insert_with(|| OpenAlert {
                    fingerprint: fingerprint.clone(),
                    id: id.clone(),
                    title: String::new(),
                    severity: String::new(),
                    triggers: 0,
                });
            alert.title = document["title"].as_str().unwrap_or_default().to_owned();
            alert.severity = document["severity"].as_str().unwrap_or_default().to_owned();
            alert.triggers += 1;
        }
    }
    let kind = if resolve { "RESOLVE" } else { "ALERT" };
    let number = state.next_event.fetch_add(1, Ordering::SeqCst);
    let verdict = format!("{kind} {id}");
    answer_json(
        StatusCode::OK,
        json!({
            "id": format!("evt_{number}"),
            "tenant_id": "tenant_fake",
            "provider_id": "jenkins",
            "source_id": "source_fake",
            "type": kind,
            "fingerprint": fingerprint,
            "payload": document,
            "created_at": humantime::format_rfc3339_millis(SystemTime::now()).to_string(),
        }),
        verdict,
    )
}

/// The vendor-neutral provider shape: `id`, `title`, `status` (`trigger` | `resolve`),
/// `severity` (`critical` | `high` | `medium` | `low`), `message` (`jenkins-events.md` §3).
fn check_itoc360_event(body: &[u8]) -> Result<Value, String> {
    let document: Value =
        serde_json::from_slice(body).map_err(|error| format!("the body is not JSON: {error}"))?;
    if !document.is_object() {
        return Err("the body must be a JSON object".into());
    }
    match document.get("id") {
        Some(Value::String(id)) if !id.is_empty() => {}
        Some(_) => return Err("`id` must be a non-empty string".into()),
        None => return Err("missing field `id`".into()),
    }
    match document.get("title") {
        Some(Value::String(_)) => {}
        Some(_) => return Err("`title` must be a string".into()),
        None => return Err("missing field `title`".into()),
    }
    match document.get("status").and_then(Value::as_str) {
        Some("trigger" | "resolve") => {}
        Some(_) => return Err("`status` must be trigger or resolve".into()),
        None if document.get("status").is_some() => {
            return Err("`status` must be trigger or resolve".into());
        }
        None => return Err("missing field `status`".into()),
    }
    match document.get("severity").and_then(Value::as_str) {
        Some("critical" | "high" | "medium" | "low") => {}
        Some(_) => return Err("`severity` must be critical, high, medium or low".into()),
        None if document.get("severity").is_some() => {
            return Err("`severity` must be critical, high, medium or low".into());
        }
        None => return Err("missing field `severity`".into()),
    }
    if let Some(message) = document.get("message")
        && !message.is_string()
    {
        return Err("`message` must be a string".into());
    }
    Ok(document)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::{Value, json};

    use super::{Behaviour, FakeSinks, FakeSinksConfig, Sink};

    const PAT: &str = "pat-for-tests";
    const SOURCE: &str = "source-for-tests";

    async fn start() -> FakeSinks {
        let config = FakeSinksConfig {
            allstacks_token: PAT.into(),
            itoc360_token: SOURCE.into(),
            ..FakeSinksConfig::default()
        };
        match FakeSinks::start(config).await {
            Ok(sinks) => sinks,
            Err(error) => panic!("fake sinks did not start: {error}"),
        }
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|error| panic!("{error}"))
    }

    async fn post(url: &str, token: Option<&str>, body: &Value) -> (u16, Value) {
        let mut request = client()
            .post(url)
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    fn job() -> Value {
        json!({
            "job_id": "https://jenkins.example.com/job/payments-deploy/129/",
            "commit_sha": "1e9c3a7f5b0d4c2e8a6f9b3d7c1e5a0f2b4d6c8e",
            "service_id": 4711,
            "job_start_time": 1768212000,
            "job_duration": 95,
            "status": "Failed",
            "repo_name": "acme/payments-api",
        })
    }

    #[actix_web::test]
    async fn allstacks_wants_its_pat_and_a_valid_record() {
        let sinks = start().await;
        let url = sinks.allstacks_url("1234");
        assert_eq!(
            post(&url, None, &job()).await,
            (
                401,
                json!({"detail": "Authentication credentials were not provided."})
            )
        );
        assert_eq!(post(&url, Some("wrong"), &job()).await.0, 401);
        let mut bad = job();
        bad["status"] = json!("Success");
        assert_eq!(
            post(&url, Some(PAT), &bad).await,
            (
                400,
                json!({"error": "`status` must be one of Succeeded, Failed, On Hold"})
            )
        );
        assert_eq!(
            post(&url, Some(PAT), &job()).await,
            (200, json!({"status": "ok"}))
        );
        assert_eq!(sinks.allstacks_jobs(), [job()]);
        let verdicts: Vec<(u16, String)> = sinks
            .requests_to(Sink::Allstacks)
            .into_iter()
            .map(|r| (r.answered, r.verdict))
            .collect();
        assert_eq!(verdicts[0], (401, "no PAT".to_owned()));
        assert_eq!(verdicts[1], (401, "wrong PAT".to_owned()));
        assert_eq!(verdicts[3].0, 200);
        let recorded = format!("{:?}", sinks.requests());
        assert!(!recorded.contains(PAT), "{recorded}");
        sinks.stop().await;
    }

    #[actix_web::test]
    async fn itoc360_opens_and_resolves_alerts_by_id() {
        let sinks = start().await;
        let url = sinks.itoc360_url();
        let trigger = json!({"id": "main:job/x/", "title": "x #1 FINALIZED FAILURE", "status": "trigger",
                             "severity": "high", "message": "m"});
        assert_eq!(post(&url, None, &trigger).await.0, 401);
        assert_eq!(
            post(&url, Some("nope"), &trigger).await,
            (404, json!({"error": "source not found"}))
        );
        let (status, answer) = post(&url, Some(SOURCE), &trigger).await;
        assert_eq!(status, 200);
        assert_eq!(answer["type"], "ALERT");
        assert_eq!(answer["payload"], trigger);
        let open = sinks.open_alerts();
        assert_eq!(open.len(), 1);
        assert_eq!(open[0].id, "main:job/x/");
        assert_eq!(open[0].fingerprint, answer["fingerprint"]);
        let by_query = format!("{url}?token={SOURCE}");
        let resolve = json!({"id": "main:job/x/", "title": "x #2 FINALIZED SUCCESS", "status": "resolve", "severity": "low"});
        let (status, answer) = post(&by_query, None, &resolve).await;
        assert_eq!((status, answer["type"].clone()), (200, json!("RESOLVE")));
        assert!(sinks.open_alerts().is_empty());
        let mut wrong = trigger.clone();
        wrong["severity"] = json!("urgent");
        assert_eq!(
            post(&url, Some(SOURCE), &wrong).await,
            (
                400,
                json!({"error": "`severity` must be critical, high, medium or low"})
            )
        );
        let recorded = format!("{:?}", sinks.requests());
        assert!(!recorded.contains(SOURCE), "{recorded}");
        sinks.stop().await;
    }

    #[actix_web::test]
    async fn forward_keeps_bytes_and_scripts_apply_per_sink() {
        let sinks = start().await;
        sinks.script(Sink::Forward, [Behaviour::RetryAfter(429, 7)]);
        let body = "{\"url\":\"job/x/\", \"build\":{}}";
        let send = || {
            client()
                .post(format!("{}/forward/itoc360", sinks.url()))
                .header("content-type", "application/json;charset=UTF-8")
                .body(body)
                .send()
        };
        let first = send().await.unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(first.status().as_u16(), 429);
        assert_eq!(
            first
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("7")
        );
        let second = send().await.unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(second.status().as_u16(), 200);
        // Allstacks is not affected by the forward script.
        assert_eq!(
            post(&sinks.allstacks_url("1"), Some(PAT), &job()).await.0,
            200
        );
        let forwarded = sinks.requests_to(Sink::Forward);
        assert_eq!(forwarded.len(), 2);
        assert_eq!(forwarded[1].body, body.as_bytes());
        assert_eq!(
            forwarded[1].header("content-type"),
            Some("application/json;charset=UTF-8")
        );
        sinks.stop().await;
    }
}
