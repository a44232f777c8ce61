//! An in-process stand-in for Jenkins with the Generic Webhook Trigger plugin: it answers
//! `/generic-webhook-trigger/invoke` exactly as GWT does (reference `gwt-plugin.md` §2, §4)
//! and records every request it receives. Used by the integration tests and by the
//! `fake_jenkins` example.
//!
//! Given a [`Notify`] (see [`FakeJenkins::set_notify`]), it also "runs" every build GWT's answer
//! says was triggered and posts that build's Notification plugin events (QUEUED, STARTED,
//! COMPLETED, FINALIZED) the way the plugin does (reference `jenkins-events.md` §1.2–§1.5).

use std::collections::HashMap;
use std::fmt;
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix_web::dev::ServerHandle;
use actix_web::http::{Method, StatusCode};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

/// GWT's 404 texts, typo included (`construct404Message`).
pub const NO_TOKEN_404: &str = "Did not find any jobs with GenericTrigger configured!\nNo token was supplied.\nIf you are using a token, you need to pass it like ...trigger/invoke?token=TOKENHERE\nIf you are not using a token, you need to authenticate like http://user:passsword@example.org/generic-webhook...\n";
pub const TOKEN_404: &str =
    "Did not find any jobs with GenericTrigger configured!\nA token was supplied.\n";

/// Which jobs exist and whether Jenkins wants basic auth.
#[derive(Debug, Clone, Default)]
pub struct FakeJenkinsConfig {
    /// (GWT token, job full name); an empty token is a tokenless job. Several jobs may share a
    /// token, as in GWT.
    pub jobs: Vec<(String, String)>,
    /// When set, every request must carry these credentials or gets Jenkins' 401.
    pub basic_auth: Option<(String, String)>,
}

/// How the fake answers from now on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    /// Answer as GWT does.
    Normal,
    /// Answer every request with this status (Jenkins restarting, a proxy error page, …).
    Status(u16),
    /// Wait this long, then answer as GWT does.
    Delay(Duration),
    /// Answer this status with a `Retry-After` of this many seconds (429, 503).
    RetryAfter(u16, u64),
    /// GWT's `silentResponse`: the jobs are triggered as usual, and the answer is an empty 200.
    Silent,
}

/// One request as the fake received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// Header names in lower case, in order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status the fake answered with; 0 while (or if never) answered.
    pub answered: u16,
}

impl RecordedRequest {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

struct State {
    config: FakeJenkinsConfig,
    behaviour: Mutex<Behaviour>,
    /// Set by `down`/`stop`: a keep-alive connection the server has not dropped yet still
    /// gets an error, so "down" never serves a request.
    down: std::sync::atomic::AtomicBool,
    /// Behaviours used one per request, before `behaviour`.
    script: Mutex<std::collections::VecDeque<Behaviour>>,
    requests: Mutex<Vec<RecordedRequest>>,
    next_queue_id: AtomicU64,
    base_url: String,
    /// Where and how to post the builds' Notification events; `None` posts nothing.
    notify: Mutex<Option<Notify>>,
    /// Per-job results set with [`FakeJenkins::set_result`], over `Notify::result`.
    results: Mutex<HashMap<String, String>>,
    /// The last build number of each job (Jenkins numbers builds per job from 1).
    build_numbers: Mutex<HashMap<String, u64>>,
    notifications: Mutex<Vec<SentNotification>>,
    /// Built on the first post, so a fake that never notifies never builds a TLS client.
    client: OnceLock<Result<reqwest::Client, String>>,
}

/// A running fake Jenkins on 127.0.0.1 (or the address given to [`FakeJenkins::start_on`]).
pub struct FakeJenkins {
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

impl FakeJenkins {
    /// Starts on a free loopback port.
    pub async fn start(config: FakeJenkinsConfig) -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0", config).await
    }

    pub async fn start_on(listen: &str, config: FakeJenkinsConfig) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State {
            config,
            behaviour: Mutex::new(Behaviour::Normal),
            down: std::sync::atomic::AtomicBool::new(false),
            script: Mutex::new(std::collections::VecDeque::new()),
            requests: Mutex::new(Vec::new()),
            next_queue_id: AtomicU64::new(1),
            base_url: format!("http://{addr}"),
            notify: Mutex::new(None),
            results: Mutex::new(HashMap::new()),
            build_numbers: Mutex::new(HashMap::new()),
            notifications: Mutex::new(Vec::new()),
            client: OnceLock::new(),
        });
        let handle = serve(listener, Arc::clone(&state))?;
        Ok(Self {
            state,
            addr,
            handle,
        })
    }

    /// The Jenkins root URL, without a trailing slash.
    pub fn url(&self) -> String {
        self.state.base_url.clone()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Removes and returns every request received so far (long runs keep memory flat).
    pub fn take_requests(&self) -> Vec<RecordedRequest> {
        std::mem::take(&mut *lock(&self.state.requests))
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.requests).clone()
    }

    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *lock(&self.state.behaviour) = behaviour;
    }

    /// The next requests get these behaviours, one each, before the standing one applies again.
    pub fn script(&self, behaviours: impl IntoIterator<Item = Behaviour>) {
        lock(&self.state.script).extend(behaviours);
    }

    /// `X-Hookgate-Delivery` of every request answered 2xx, in order.
    pub fn delivered_ids(&self) -> Vec<String> {
        lock(&self.state.requests)
            .iter()
            .filter(|r| (200..300).contains(&r.answered))
            .filter_map(|r| r.header("x-hookgate-delivery").map(str::to_owned))
            .collect()
    }

    /// From now on every build GWT's answer triggers posts its Notification events as `notify`
    /// says; `None` stops that. Builds already running keep the settings they started with.
    /// Builds are numbered per job from 1 whether or not they notify, as Jenkins numbers them.
    ///
    /// A setter rather than a start-up option because the events URL names the gateway, which
    /// is usually started after (and pointed at) this fake.
    pub fn set_notify(&self, notify: Option<Notify>) {
        *lock(&self.state.notify) = notify;
    }

    /// Builds of `job` (its full name, as in [`FakeJenkinsConfig::jobs`]) triggered from now on
    /// end with `result` instead of [`Notify::result`]. Jenkins' results are `SUCCESS`,
    /// `UNSTABLE`, `FAILURE`, `NOT_BUILT` and `ABORTED`; any other text is sent as given, to
    /// see how a receiver copes.
    pub fn set_result(&self, job: &str, result: &str) {
        lock(&self.state.results).insert(job.to_owned(), result.to_owned());
    }

    /// Every Notification event posted and finished (answered or failed) so far, in the
    /// order they finished.
    pub fn notifications(&self) -> Vec<SentNotification> {
        lock(&self.state.notifications).clone()
    }

    /// Removes and returns the finished notifications (the example prints them as they come).
    pub fn take_notifications(&self) -> Vec<SentNotification> {
        std::mem::take(&mut *lock(&self.state.notifications))
    }

    /// Waits until at least `count` posts have finished or `timeout` has passed, then returns
    /// them all; the caller asserts on what came back, so a slow gateway fails the assertion
    /// rather than a sleep that guessed too short.
    pub async fn notifications_settled(
        &self,
        count: usize,
        timeout: Duration,
    ) -> Vec<SentNotification> {
        let deadline = Instant::now() + timeout;
        loop {
            let sent = self.notifications();
            if sent.len() >= count || Instant::now() >= deadline {
                return sent;
            }
            actix_web::rt::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Stops listening; later connections are refused, as when Jenkins goes down.
    pub async fn stop(self) {
        self.state.down.store(true, Ordering::SeqCst);
        self.handle.stop(false).await;
    }

    /// Goes down (connections refused) but keeps what it recorded, to come back with [`up`].
    ///
    /// [`up`]: FakeJenkins::up
    pub async fn down(&mut self) {
        self.state.down.store(true, Ordering::SeqCst);
        self.handle.stop(false).await;
    }

    /// Listens again on the same address after [`down`](FakeJenkins::down).
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

async fn answer(request: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let query: Vec<(String, String)> = form_urlencoded::parse(request.query_string().as_bytes())
        .into_owned()
        .collect();
    // Recorded on arrival, so a request whose sender gave up (a timeout) is still seen.
    let recorded = RecordedRequest {
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
    };
    let index = {
        let mut requests = lock(&state.requests);
        requests.push(recorded);
        requests.len() - 1
    };
    let mut queued = Vec::new();
    let silent = matches!(lock(&state.script).front(), Some(Behaviour::Silent))
        || (lock(&state.script).is_empty() && matches!(*lock(&state.behaviour), Behaviour::Silent));
    let mut response = respond(&request, &query, &state, &mut queued).await;
    if silent && response.status() == StatusCode::OK {
        response = HttpResponse::Ok().finish();
    }
    if let Some(entry) = lock(&state.requests).get_mut(index) {
        entry.answered = response.status().as_u16();
    }
    start_builds(&state.into_inner(), queued);
    response
}

/// GWT's answer; `queued` receives the (job, queue id) of every build the answer puts in the
/// queue.
async fn respond(
    request: &HttpRequest,
    query: &[(String, String)],
    state: &State,
    queued: &mut Vec<(String, u64)>,
) -> HttpResponse {
    if state.down.load(Ordering::SeqCst) {
        return error_page(503);
    }
    let scripted = lock(&state.script).pop_front();
    let behaviour = scripted.unwrap_or_else(|| *lock(&state.behaviour));
    match behaviour {
        Behaviour::Normal | Behaviour::Silent => {}
        Behaviour::Status(code) => return error_page(code),
        Behaviour::RetryAfter(code, secs) => {
            let mut response = error_page(code);
            if let Ok(value) = secs.to_string().parse() {
                response
                    .headers_mut()
                    .insert(actix_web::http::header::RETRY_AFTER, value);
            }
            return response;
        }
        Behaviour::Delay(delay) => actix_web::rt::time::sleep(delay).await,
    }

    if let Some((user, password)) = &state.config.basic_auth {
        let expected = format!("Basic {}", STANDARD.encode(format!("{user}:{password}")));
        let given = request
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            return HttpResponse::Unauthorized()
                .insert_header(("www-authenticate", "Basic realm=\"Jenkins\""))
                .content_type("text/html;charset=utf-8")
                .body("<html><body>Invalid password/token for user</body></html>");
        }
    }
    if request.path().trim_end_matches('/') != "/generic-webhook-trigger/invoke" {
        return HttpResponse::NotFound()
            .content_type("text/html;charset=utf-8")
            .body("<html><body>Not Found</body></html>");
    }
    if request.method() == Method::OPTIONS {
        return HttpResponse::Ok().finish();
    }

    let token = given_token(request, query);
    let jobs: Vec<&String> = state
        .config
        .jobs
        .iter()
        // A job matches its own token, or no token when it has none (JobFinder).
        .filter(|(job_token, _)| match token {
            Some(given) => !job_token.is_empty() && given == job_token,
            None => job_token.is_empty(),
        })
        .map(|(_, name)| name)
        .collect();
    if jobs.is_empty() {
        let message = if token.is_some() {
            TOKEN_404
        } else {
            NO_TOKEN_404
        };
        return gwt_json(
            StatusCode::NOT_FOUND,
            json!({"jobs": null, "message": message}),
        );
    }

    // GWT's dry-run header: `gwt-dry-run: true`, case-insensitively.
    let dry_run = request
        .headers()
        .get("gwt-dry-run")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let mut results = Map::new();
    for name in jobs {
        let (id, url) = if dry_run {
            (0, format!("{}/job/{name}/", state.base_url))
        } else {
            let id = state.next_queue_id.fetch_add(1, Ordering::SeqCst);
            queued.push((name.clone(), id));
            (id, format!("queue/item/{id}/"))
        };
        results.insert(
            name.clone(),
            json!({
                "regexpFilterExpression": "",
                "triggered": true,
                "resolvedVariables": {},
                "regexpFilterText": "",
                "id": id,
                "url": url,
            }),
        );
    }
    gwt_json(
        StatusCode::OK,
        json!({"jobs": Value::Object(results), "message": "Triggered jobs."}),
    )
}

/// GWT's token order (`getGivenToken`, reference §4): `token` parameter (present but empty
/// means "no token" and stops the search), `token` header, the first `Authorization` value
/// starting with exactly `Bearer ` (rest verbatim), `X-Gitlab-Token`. The first source present
/// decides; an empty value counts as no token.
fn given_token<'a>(request: &'a HttpRequest, query: &'a [(String, String)]) -> Option<&'a str> {
    let headers = request.headers();
    let found = if let Some((_, value)) = query.iter().find(|(k, _)| k == "token") {
        Some(value.as_str())
    } else if let Some(value) = headers.get("token") {
        value.to_str().ok()
    } else if let Some(value) = headers
        .get_all("authorization")
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix("Bearer "))
    {
        Some(value)
    } else {
        headers.get("x-gitlab-token").and_then(|v| v.to_str().ok())
    };
    found.filter(|t| !t.is_empty())
}

fn error_page(code: u16) -> HttpResponse {
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status)
        .content_type("text/html;charset=utf-8")
        .body(format!("<html><body><h1>Error {code}</h1></body></html>"))
}

fn gwt_json(status: StatusCode, body: Value) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("application/json;charset=UTF-8")
        .body(body.to_string())
}

/// How the fake's builds report themselves, as a job's Notification plugin endpoint would be
/// configured (Format JSON, Protocol HTTP, Event "All Events", Retries 0; `jenkins-events.md`
/// §1.1). Build with [`Notify::to`], then change the fields that matter.
#[derive(Clone)]
pub struct Notify {
    /// The full events URL, `?token=` included. A `user:pass@` in it is sent as basic auth.
    pub url: String,
    /// The result every build ends with unless [`FakeJenkins::set_result`] says otherwise.
    pub result: String,
    /// The `build.duration` reported from COMPLETED on. The fake does not wait that long; the
    /// timestamps follow the simulated build instead: COMPLETED's is STARTED's plus this, and
    /// FINALIZED's runs that far ahead of the wall clock, so it is never before COMPLETED's.
    pub duration_ms: u64,
    /// The real pause before each post (the first one stands for the time in the queue).
    pub phase_gap: Duration,
    /// The build's parameters, in order; `build.parameters` is left out when empty.
    pub parameters: Vec<(String, String)>,
    /// `(url, branch, commit)` as Git's `GIT_URL`, `GIT_BRANCH`, `GIT_COMMIT`; reported from
    /// COMPLETED on (after checkout). `None` sends what a Pipeline without them sends.
    pub scm: Option<(String, String, String)>,
}

impl Notify {
    /// Posts to `url` with the defaults: `SUCCESS`, a 2 s build, 20 ms between posts, no
    /// parameters, no scm.
    pub fn to(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            result: "SUCCESS".to_owned(),
            duration_ms: 2_000,
            phase_gap: Duration::from_millis(20),
            parameters: Vec::new(),
            scm: None,
        }
    }
}

impl fmt::Debug for Notify {
    // The URL carries the events token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notify")
            .field("url", &mask_url(&self.url))
            .field("result", &self.result)
            .field("duration_ms", &self.duration_ms)
            .field("phase_gap", &self.phase_gap)
            .field("parameters", &self.parameters)
            .field("scm", &self.scm)
            .finish()
    }
}

/// One Notification event the fake posted, once the post finished.
#[derive(Debug, Clone)]
pub struct SentNotification {
    /// `QUEUED`, `STARTED`, `COMPLETED` or `FINALIZED`.
    pub phase: String,
    pub number: u64,
    /// The job's full name, as in [`FakeJenkinsConfig::jobs`].
    pub job: String,
    /// `build.status` in the event: `None` at QUEUED and STARTED.
    pub result: Option<String>,
    /// The status the receiver answered with (after a followed 307); 0 when none came.
    pub answered: u16,
    /// Why no answer came (refused, timed out, …), without the URL.
    pub error: Option<String>,
    /// The exact bytes posted.
    pub body: Vec<u8>,
}

impl SentNotification {
    /// The posted event as JSON.
    pub fn event(&self) -> serde_json::Result<Value> {
        serde_json::from_slice(&self.body)
    }
}

/// `url` with the value of every `token=` query parameter and any userinfo password replaced by
/// `****`, for printing. Text that is not a URL is masked whole.
pub fn mask_url(url: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(url) else {
        return "****".to_owned();
    };
    if parsed.password().is_some() && parsed.set_password(Some("****")).is_err() {
        return "****".to_owned();
    }
    if let Some(query) = parsed.query() {
        let masked: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if key == "token" => format!("{key}=****"),
                _ => pair.to_owned(),
            })
            .collect();
        parsed.set_query(Some(&masked.join("&")));
    }
    parsed.to_string()
}

/// What one build was started with, fixed when GWT's answer queued it.
struct Build {
    job: String,
    number: u64,
    queue_id: u64,
    result: String,
    notify: Notify,
    base_url: String,
}

fn start_builds(state: &Arc<State>, queued: Vec<(String, u64)>) {
    let notify = lock(&state.notify).clone();
    for (job, queue_id) in queued {
        // Every queued build takes a number, notifying or not, as in Jenkins.
        let number = {
            let mut numbers = lock(&state.build_numbers);
            let number = numbers.entry(job.clone()).or_insert(0);
            *number += 1;
            *number
        };
        let Some(notify) = &notify else {
            continue;
        };
        let result = lock(&state.results)
            .get(&job)
            .cloned()
            .unwrap_or_else(|| notify.result.clone());
        let build = Build {
            job,
            number,
            queue_id,
            result,
            notify: notify.clone(),
            base_url: state.base_url.clone(),
        };
        // Spawned, so GWT's answer is not held up by the build.
        actix_web::rt::spawn(run_build(Arc::clone(state), build));
    }
}

/// The four automatic phases in the order `JobListener` sends them, each post awaited before
/// the next as on the build's thread. Timestamps as `jenkins-events.md` §1.3: QUEUED is
/// back-dated to when the item was queued, STARTED is the start, COMPLETED the start plus the
/// duration, FINALIZED the (simulated) wall clock, so it is never before COMPLETED's.
async fn run_build(state: Arc<State>, build: Build) {
    let gap = build.notify.phase_gap;
    let queued_at = now_ms();
    actix_web::rt::time::sleep(gap).await;
    let started_at = now_ms();
    post(&state, &build, "QUEUED", queued_at).await;
    actix_web::rt::time::sleep(gap).await;
    post(&state, &build, "STARTED", started_at).await;
    actix_web::rt::time::sleep(gap).await;
    let completed_at = started_at.saturating_add(build.notify.duration_ms);
    // The fake pauses `gap`, not the whole duration: from here on the build's clock runs this
    // far ahead of the real one.
    let ahead = completed_at.saturating_sub(now_ms());
    post(&state, &build, "COMPLETED", completed_at).await;
    actix_web::rt::time::sleep(gap).await;
    post(&state, &build, "FINALIZED", now_ms().saturating_add(ahead)).await;
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn post(state: &State, build: &Build, phase: &'static str, timestamp: u64) {
    let body = event_body(build, phase, timestamp);
    let result = (phase == "COMPLETED" || phase == "FINALIZED").then(|| build.result.clone());
    let (answered, error) = match send(state, &build.notify.url, &body).await {
        Ok(status) => (status, None),
        Err(error) => (0, Some(error)),
    };
    lock(&state.notifications).push(SentNotification {
        phase: phase.to_owned(),
        number: build.number,
        job: build.job.clone(),
        result,
        answered,
        error,
        body,
    });
}

/// The plugin's HTTP send (`Protocol.HTTP`, `jenkins-events.md` §1.2): one POST with a fixed
/// length, the JDK's headers, basic auth from the URL's userinfo, the status ignored except
/// that a 307 is followed, and no retry.
async fn send(state: &State, url: &str, body: &[u8]) -> Result<u16, String> {
    let client = state
        .client
        .get_or_init(|| {
            reqwest::Client::builder()
                .no_proxy()
                .connect_timeout(Duration::from_millis(30_000))
                .timeout(Duration::from_millis(30_000))
                .pool_max_idle_per_host(0)
                // Redirects are followed below, as the plugin does it.
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .map_err(|e| error_chain(&e))
        })
        .as_ref()
        .map_err(Clone::clone)?;
    let mut url = url.to_owned();
    // The plugin recurses on every 307 without a limit; a limit keeps a redirect loop from
    // running forever here.
    for _ in 0..20 {
        let response = post_once(client, &url, body).await?;
        if response.status() != reqwest::StatusCode::TEMPORARY_REDIRECT {
            return Ok(response.status().as_u16());
        }
        // `send(location, …)` again: an absolute URL, with its own userinfo (if any) as the
        // credentials; a missing or relative `Location` makes `new URL` throw.
        url = response
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .ok_or("307 without a usable Location")?
            .to_owned();
    }
    Err("too many 307 redirects".to_owned())
}

async fn post_once(
    client: &reqwest::Client,
    url: &str,
    body: &[u8],
) -> Result<reqwest::Response, String> {
    let mut target = url::Url::parse(url).map_err(|e| format!("not an absolute URL: {e}"))?;
    // `URL.getUserInfo()` is the raw (still percent-encoded) text, and the plugin encodes it
    // as it stands.
    let user_info = match (target.username(), target.password()) {
        ("", None) => None,
        (user, None) => Some(user.to_owned()),
        (user, Some(password)) => Some(format!("{user}:{password}")),
    };
    if user_info.is_some() {
        // Stripped so the HTTP client does not add a (decoded) header of its own.
        let _ = target.set_username("");
        let _ = target.set_password(None);
    }
    let mut request = client
        .post(target)
        .header("content-type", "application/json;charset=UTF-8")
        .header("user-agent", "Java/21.0.5")
        .header("accept", "text/html, image/gif, image/jpeg, */*; q=0.2")
        .body(body.to_vec());
    if let Some(user_info) = user_info {
        request = request.header(
            "authorization",
            format!("Basic {}", STANDARD.encode(user_info)),
        );
    }
    request
        .send()
        .await
        .map_err(|e| error_chain(&e.without_url()))
}

/// The error and its causes on one line: reqwest's own text alone ("error sending request")
/// does not say whether the receiver refused, timed out or broke the connection.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// The plugin's model classes (`model/JobState`, `BuildState`, `ScmState`) in their declared
// field order, which is the order Gson writes; `None` fields are left out as Gson leaves nulls.
#[derive(serde::Serialize)]
struct JobState<'a> {
    name: &'a str,
    display_name: &'a str,
    url: &'a str,
    build: BuildState<'a>,
}

#[derive(serde::Serialize)]
struct BuildState<'a> {
    full_url: String,
    number: u64,
    queue_id: u64,
    timestamp: u64,
    duration: u64,
    phase: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<&'a str>,
    url: String,
    scm: ScmState<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<Map<String, Value>>,
    log: &'a str,
    artifacts: Map<String, Value>,
}

#[derive(serde::Serialize)]
struct ScmState<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    branch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    commit: Option<&'a str>,
    changes: [&'a str; 0],
    culprits: [&'a str; 0],
}

/// One event as `Phase.buildJobState` fills it for this build (`jenkins-events.md` §1.5).
fn event_body(build: &Build, phase: &str, timestamp: u64) -> Vec<u8> {
    let finished = phase == "COMPLETED" || phase == "FINALIZED";
    let job_url = job_url(&build.job);
    let build_url = format!("{job_url}{}/", build.number);
    let name = build.job.rsplit('/').next().unwrap_or(&build.job);
    let scm = match (&build.notify.scm, finished) {
        (Some((url, branch, commit)), true) => ScmState {
            url: Some(url),
            branch: Some(branch),
            commit: Some(commit),
            changes: [],
            culprits: [],
        },
        _ => ScmState {
            url: None,
            branch: None,
            commit: None,
            changes: [],
            culprits: [],
        },
    };
    let parameters = (!build.notify.parameters.is_empty()).then(|| {
        build
            .notify
            .parameters
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect()
    });
    let state = JobState {
        name,
        display_name: name,
        url: &job_url,
        build: BuildState {
            full_url: format!("{}/{build_url}", build.base_url),
            number: build.number,
            queue_id: build.queue_id,
            timestamp,
            duration: if finished {
                build.notify.duration_ms
            } else {
                0
            },
            phase,
            status: finished.then_some(build.result.as_str()),
            url: build_url,
            scm,
            parameters,
            log: "",
            artifacts: Map::new(),
        },
    };
    // Serialising these plain structs cannot fail; an empty body would show up in any test.
    let json = serde_json::to_string(&state).unwrap_or_default();
    gson_html_escape(&json).into_bytes()
}

/// Gson escapes HTML-significant characters by default (`GsonBuilder.escapeHtmlChars`), and the
/// plugin keeps that default, so `=` in a parameter arrives as `\u003d`. These characters
/// only occur inside strings in compact JSON, so replacing them everywhere is safe.
fn gson_html_escape(json: &str) -> String {
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003d"),
            '\'' => out.push_str("\\u0027"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

/// Jenkins' relative job URL: `a/b` → `job/a/job/b/`, each name escaped as `Util.rawEncode`
/// does.
fn job_url(full_name: &str) -> String {
    let mut url = String::new();
    for segment in full_name.split('/') {
        url.push_str("job/");
        for byte in segment.bytes() {
            let safe = byte.is_ascii_alphanumeric() || b"!$&'()*+,-.=@_".contains(&byte);
            if safe {
                url.push(char::from(byte));
            } else {
                url.push_str(&format!("%{byte:02X}"));
            }
        }
        url.push('/');
    }
    url
}
