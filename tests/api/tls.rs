//! TLS on the public listener through the real binary: a request over TLS with a test CA, the
//! certificate replaced and picked up on SIGHUP (a broken one refused, the old one kept), and a
//! client certificate required and missing.

use std::path::Path;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};

use crate::binary::serve;

/// A CA, and what it signs.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new() -> Self {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).expect("CA");
        Self { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf for `127.0.0.1` and `localhost` (`client`: for client authentication), as
    /// (certificate PEM, key PEM).
    fn issue(&self, client: bool) -> (String, String) {
        let key = KeyPair::generate().expect("key");
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .expect("params");
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        let cert = params.signed_by(&key, &self.cert, &self.key).expect("leaf");
        (cert.pem(), key.serialize_pem())
    }
}

fn write_config(dir: &Path, client_ca: bool) {
    std::fs::create_dir_all(dir.join("rules")).expect("mkdir");
    let client_ca = if client_ca {
        "client_ca_file = \"client-ca.pem\"\n"
    } else {
        ""
    };
    std::fs::write(
        dir.join("hookgate.toml"),
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[server.tls]\ncert_file = \"cert.pem\"\nkey_file = \"key.pem\"\n{client_ca}\
             [admin]\nlisten = \"127.0.0.1:0\"\n[jenkins.main]\nurl = \"http://127.0.0.1:9\"\n[delivery]\nmode = \"direct\"\n"
        ),
    )
    .expect("write");
}

fn install(dir: &Path, (cert, key): &(String, String)) {
    std::fs::write(dir.join("cert.pem"), cert).expect("write");
    std::fs::write(dir.join("key.pem"), key).expect("write");
}

fn client(ca: &Ca, identity: Option<&(String, String)>) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).expect("CA"))
        .timeout(Duration::from_secs(5));
    if let Some((cert, key)) = identity {
        let pem = format!("{cert}{key}");
        builder = builder.identity(reqwest::Identity::from_pem(pem.as_bytes()).expect("identity"));
    }
    builder.build().expect("client")
}

fn https(address: &str) -> String {
    format!("{}/healthz", address.replacen("http://", "https://", 1))
}

#[actix_web::test]
async fn the_public_listener_speaks_tls_and_takes_a_renewed_certificate_on_sighup() {
    let dir = tempfile::tempdir().expect("tempdir");
    let first = Ca::new();
    install(dir.path(), &first.issue(false));
    write_config(dir.path(), false);
    let served = serve(dir.path(), &[]);
    let url = https(&served.address);
    let answer = client(&first, None)
        .get(&url)
        .send()
        .await
        .expect("TLS request");
    assert!(answer.status().is_success());
    // Plain HTTP on the TLS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!("{}/healthz", served.address))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.map(|r| !r.status().is_success()).unwrap_or(true));
    // The certificate is renewed by another CA: clients that trust only it fail until SIGHUP.
    let second = Ca::new();
    // A half-written renewal first: refused, the certificate in use stays.
    std::fs::write(
        dir.path().join("cert.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB",
    )
    .expect("write");
    served.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    // The reload is refused as a whole, naming the field as `check` would.
    while !served
        .log
        .lock()
        .expect("lock")
        .contains("hookgate.toml: server.tls.cert_file: cert_file cert.pem")
    {
        assert!(
            Instant::now() < deadline,
            "the failed reload was not logged"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let answer = client(&first, None)
        .get(&url)
        .send()
        .await
        .expect("old certificate");
    assert!(answer.status().is_success());
    install(dir.path(), &second.issue(false));
    assert!(client(&second, None).get(&url).send().await.is_err());
    served.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(answer) = client(&second, None).get(&url).send().await {
            assert!(answer.status().is_success());
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the renewed certificate was never served"
        );
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(client(&first, None).get(&url).send().await.is_err());
}

#[actix_web::test]
async fn a_client_certificate_is_required_with_client_ca_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server_ca = Ca::new();
    let client_ca = Ca::new();
    install(dir.path(), &server_ca.issue(false));
    std::fs::write(dir.path().join("client-ca.pem"), client_ca.pem()).expect("write");
    write_config(dir.path(), true);
    let served = serve(dir.path(), &[]);
    let url = https(&served.address);
    // No client certificate, and one from another CA: the handshake is refused.
    assert!(client(&server_ca, None).get(&url).send().await.is_err());
    let stranger = Ca::new().issue(true);
    assert!(
        client(&server_ca, Some(&stranger))
            .get(&url)
            .send()
            .await
            .is_err()
    );
    let jenkins = client_ca.issue(true);
    let answer = client(&server_ca, Some(&jenkins))
        .get(&url)
        .send()
        .await
        .expect("mutual TLS");
    assert!(answer.status().is_success());
    // The client CA is built into the listener: a reload names a new one as needing a restart
    // and keeps verifying with the one it has.
    std::fs::write(dir.path().join("client-ca.pem"), Ca::new().pem()).expect("write");
    let reloaded = reqwest::Client::new()
        .post(format!("{}/reload", served.admin_address))
        .send()
        .await
        .expect("reload");
    assert_eq!(reloaded.status(), 200);
    let reloaded = crate::helpers::json(reloaded).await;
    assert_eq!(
        reloaded["restart_required"],
        serde_json::json!(["server.tls.client_ca_file"]),
        "{reloaded}"
    );
    let answer = client(&server_ca, Some(&jenkins))
        .get(&url)
        .send()
        .await
        .expect("mutual TLS after the reload");
    assert!(answer.status().is_success());
}

/// `check` names a certificate that does not load, with its field; with TLS set it no longer
/// warns that a public listen speaks plain HTTP.
#[test]
fn check_refuses_a_certificate_that_does_not_load_and_stops_warning_with_tls() {
    let dir = tempfile::tempdir().expect("tempdir");
    write_config(dir.path(), false);
    let config = std::fs::read_to_string(dir.path().join("hookgate.toml"))
        .expect("read")
        .replace(
            "listen = \"127.0.0.1:0\"\n[server.tls]",
            "listen = \"0.0.0.0:0\"\n[server.tls]",
        );
    std::fs::write(dir.path().join("hookgate.toml"), config).expect("write");
    let check = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_hookgate"))
            .arg("check")
            .current_dir(dir.path())
            .env_remove("HOOKGATE_CONFIG")
            .output()
            .expect("runs")
    };
    let output = check();
    assert_eq!(output.status.code(), Some(1));
    let err = String::from_utf8_lossy(&output.stderr);
    assert!(
        err.contains("server.tls.cert_file: cert_file cert.pem"),
        "{err}"
    );
    let ca = Ca::new();
    let (cert, _) = ca.issue(false);
    let (_, other_key) = ca.issue(false);
    std::fs::write(dir.path().join("cert.pem"), &cert).expect("write");
    std::fs::write(dir.path().join("key.pem"), &other_key).expect("write");
    let err = String::from_utf8_lossy(&check().stderr).into_owned();
    assert!(
        err.contains("server.tls.key_file: key_file key.pem does not go with cert_file"),
        "{err}"
    );
    install(dir.path(), &ca.issue(false));
    let output = check();
    let (out, err) = (
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    );
    assert!(output.status.success(), "{out}{err}");
    assert!(
        !format!("{out}{err}").contains("speaks plain HTTP"),
        "{out}{err}"
    );
}
