//! An in-process stand-in for Jenkins with the Generic Webhook Trigger plugin: it answers
//! `/generic-webhook-trigger/invoke` exactly as GWT does (reference `gwt-plugin.md` §2, §4)
//! and records every request it receives. Used by the integration tests and by the
//! `fake_jenkins` example.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

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
    let response = respond(&request, &query, &state).await;
    if let Some(entry) = lock(&state.requests).get_mut(index) {
        entry.answered = response.status().as_u16();
    }
    response
}

async fn respond(request: &HttpRequest, query: &[(String, String)], state: &State) -> HttpResponse {
    if state.down.load(Ordering::SeqCst) {
        return error_page(503);
    }
    let scripted = lock(&state.script).pop_front();
    let behaviour = scripted.unwrap_or_else(|| *lock(&state.behaviour));
    match behaviour {
        Behaviour::Normal => {}
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
