//! A stand-in Jenkins for demos: answers `/generic-webhook-trigger/invoke` as the GWT plugin
//! does and prints every request it receives, with tokens and credentials masked. With
//! `--notify URL`, every triggered build also posts its Notification plugin events there.
//!
//! `cargo run --example fake_jenkins -- --listen 127.0.0.1:8081 --job TOKEN=JOB`
//! `cargo run --example fake_jenkins -- --notify 'http://127.0.0.1:8080/jenkins/main/events?token=…'`

#[path = "support/fake_jenkins.rs"]
#[allow(dead_code)] // shared with the tests, which use all of it
mod fake_jenkins;

use std::time::Duration;

use clap::Parser;
use fake_jenkins::{FakeJenkins, FakeJenkinsConfig, Notify, mask_url};

/// Jobs of the shipped example rules (`rules/`), keyed by the Jenkins tokens in
/// `examples/secrets/`.
const DEFAULT_JOBS: [&str; 3] = [
    "port-deploy-jenkins-token=deploy-service",
    "github-push-jenkins-token=build-on-push",
    "gitlab-push-jenkins-token=gitlab-build",
];

#[derive(Parser)]
#[command(about = "A fake Jenkins with the Generic Webhook Trigger plugin, for demos")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: String,
    /// A job as TOKEN=NAME; repeat for several. Defaults to the example rules' jobs.
    #[arg(long = "job", value_name = "TOKEN=NAME")]
    jobs: Vec<String>,
    /// Require basic auth as USER:API_TOKEN.
    #[arg(long, value_name = "USER:API_TOKEN")]
    basic_auth: Option<String>,
    /// Print only a count of requests per second (for benchmarks).
    #[arg(long)]
    quiet: bool,
    /// Post the Notification plugin's events of every triggered build to this URL (the
    /// gateway's `/jenkins/{target}/events?token=…`; `user:pass@` becomes basic auth).
    #[arg(long, value_name = "URL")]
    notify: Option<String>,
    /// The result every build ends with.
    #[arg(long, default_value = "SUCCESS", value_parser = ["SUCCESS", "UNSTABLE", "FAILURE", "NOT_BUILT", "ABORTED"])]
    result: String,
    /// The build duration reported from COMPLETED on (the fake does not wait that long).
    #[arg(long, default_value_t = 2_000)]
    duration_ms: u64,
    /// The Git checkout reported from COMPLETED on, as GIT_URL,GIT_BRANCH,GIT_COMMIT.
    #[arg(long, value_name = "URL,BRANCH,COMMIT")]
    scm: Option<String>,
    /// A build parameter as K=V; repeat for several.
    #[arg(long = "param", value_name = "K=V")]
    params: Vec<String>,
}

/// The `Notify` the notification flags describe, or what is wrong with them.
fn notify_from(args: &Args, url: &str) -> Result<Notify, String> {
    let scm = match args.scm.as_deref() {
        None => None,
        // From the right, so a URL with a comma in it still parses.
        Some(spec) => match spec.rsplitn(3, ',').collect::<Vec<_>>()[..] {
            [commit, branch, url] if !url.is_empty() => {
                Some((url.to_owned(), branch.to_owned(), commit.to_owned()))
            }
            _ => return Err(format!("--scm must be URL,BRANCH,COMMIT, got `{spec}`")),
        },
    };
    let mut parameters = Vec::new();
    for spec in &args.params {
        match spec.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                parameters.push((key.to_owned(), value.to_owned()));
            }
            _ => return Err(format!("--param must be K=V, got `{spec}`")),
        }
    }
    Ok(Notify {
        result: args.result.clone(),
        duration_ms: args.duration_ms,
        scm,
        parameters,
        ..Notify::to(url)
    })
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let notify = match args.notify.as_deref().map(|url| notify_from(&args, url)) {
        None => None,
        Some(Ok(notify)) => Some(notify),
        Some(Err(message)) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };
    let specs: Vec<String> = if args.jobs.is_empty() {
        DEFAULT_JOBS.iter().map(|s| (*s).to_owned()).collect()
    } else {
        args.jobs
    };
    let mut jobs = Vec::new();
    for spec in &specs {
        let Some((token, name)) = spec.split_once('=') else {
            eprintln!("--job must be TOKEN=NAME, got `{spec}`");
            std::process::exit(2);
        };
        jobs.push((token.to_owned(), name.to_owned()));
    }
    let basic_auth = args.basic_auth.as_deref().map(|pair| {
        let (user, token) = pair.split_once(':').unwrap_or((pair, ""));
        (user.to_owned(), token.to_owned())
    });
    let jenkins =
        FakeJenkins::start_on(&args.listen, FakeJenkinsConfig { jobs, basic_auth }).await?;
    println!("fake Jenkins listening on {}", jenkins.url());
    for (_, name) in specs.iter().filter_map(|s| s.split_once('=')) {
        println!("  job {name}");
    }
    let notify_url = notify.as_ref().map(|n| mask_url(&n.url));
    if let Some(url) = &notify_url {
        println!("  notifying {url}");
    }
    jenkins.set_notify(notify);

    let quiet = args.quiet;
    let mut total = 0usize;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            () = tokio::time::sleep(Duration::from_millis(if quiet { 1000 } else { 100 })) => {}
        }
        let requests = jenkins.take_requests();
        let notifications = jenkins.take_notifications();
        if quiet {
            total += requests.len();
            if !requests.is_empty() {
                println!("{} requests ({total} in all)", requests.len());
            }
            continue;
        }
        for request in &requests {
            let query: Vec<String> = request
                .query
                .iter()
                .map(|(k, v)| {
                    if k == "token" {
                        format!("{k}=***")
                    } else {
                        format!("{k}={v}")
                    }
                })
                .collect();
            println!("{} {}?{}", request.method, request.path, query.join("&"));
            for (name, value) in &request.headers {
                let masked = matches!(name.as_str(), "authorization" | "token" | "x-gitlab-token");
                println!("  {name}: {}", if masked { "***" } else { value });
            }
            println!(
                "  body ({} bytes): {}",
                request.body.len(),
                String::from_utf8_lossy(&request.body)
            );
        }
        for sent in &notifications {
            let outcome = match &sent.error {
                Some(error) => format!("failed: {error}"),
                None => format!("answered {}", sent.answered),
            };
            println!(
                "notification {} {} #{}{} -> {}: {outcome} ({} bytes)",
                sent.phase,
                sent.job,
                sent.number,
                sent.result
                    .as_deref()
                    .map(|r| format!(" {r}"))
                    .unwrap_or_default(),
                notify_url.as_deref().unwrap_or(""),
                sent.body.len(),
            );
        }
    }
    jenkins.stop().await;
    Ok(())
}
