//! Running under systemd: `READY=1` reaches `$NOTIFY_SOCKET` once the gateway serves,
//! `RELOADING=1`/`READY=1` bracket a reload, and `STOPPING=1` comes when a SIGTERM begins its
//! shutdown; the shipped unit file has the sandboxing a security review expects.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use crate::binary::serve;

fn next_notice(socket: &UnixDatagram) -> String {
    let mut buffer = [0u8; 512];
    let n = socket
        .recv(&mut buffer)
        .expect("a notice within the timeout");
    String::from_utf8_lossy(&buffer[..n]).into_owned()
}

#[actix_web::test]
async fn ready_and_stopping_reach_the_notify_socket() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(dir.path().join("rules")).expect("mkdir");
    std::fs::write(
        dir.path().join("hookgate.toml"),
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [jenkins.main]\nurl = \"http://127.0.0.1:9\"\n[delivery]\nmode = \"queue\"\nstore = \"store\"\n",
    )
    .expect("write");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    let served = serve(
        dir.path(),
        &[("NOTIFY_SOCKET", path.to_str().expect("utf-8"))],
    );
    assert_eq!(next_notice(&socket).trim(), "READY=1");
    // Ready means serving: the listener answers, and the store exists.
    let health = reqwest::get(format!("{}/healthz", served.address))
        .await
        .expect("healthz");
    assert!(health.status().is_success());
    assert!(dir.path().join("store/deliveries.sqlite3").exists());
    // The unit's ExecReload sends SIGHUP: a reload between RELOADING=1 (with the clock reading
    // `Type=notify-reload` needs) and READY=1, and the gateway keeps serving.
    served.signal("-HUP");
    let reloading = next_notice(&socket);
    let mut lines = reloading.lines();
    assert_eq!(lines.next(), Some("RELOADING=1"), "{reloading}");
    let usec = lines
        .next()
        .and_then(|line| line.strip_prefix("MONOTONIC_USEC="))
        .and_then(|usec| usec.parse::<u64>().ok());
    assert!(usec.is_some_and(|usec| usec > 0), "{reloading}");
    let ready = next_notice(&socket);
    assert_eq!(
        ready.lines().collect::<Vec<_>>(),
        ["READY=1", "STATUS=serving; reload applied, 0 rules"],
        "{ready}"
    );
    // A reload that is refused ends with READY=1 too: the previous set serves.
    std::fs::write(dir.path().join("rules/broken.toml"), "name = \"half").expect("write");
    served.signal("-HUP");
    assert!(next_notice(&socket).starts_with("RELOADING=1\n"));
    assert_eq!(
        next_notice(&socket).lines().collect::<Vec<_>>(),
        [
            "READY=1",
            "STATUS=serving the previous set; reload refused with 1 problem"
        ]
    );
    // Two reloads at once run one after the other, and so do their notices: systemd never
    // sees READY=1 for a reload that has not run yet. The first one is held inside its
    // compile by a rule whose token file is a FIFO nobody writes yet.
    std::fs::remove_file(dir.path().join("rules/broken.toml")).expect("rm");
    let fifo = dir.path().join("rules/held.token");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    std::fs::write(
        dir.path().join("rules/held.toml"),
        "name = \"held\"\ntoken_file = \"held.token\"\n[verify]\nscheme = \"none\"\n[dispatch]\njenkins = \"main\"\n",
    )
    .expect("write");
    served.signal("-HUP");
    assert_eq!(next_notice(&socket).lines().next(), Some("RELOADING=1"));
    let admin = served
        .admin_address
        .trim_start_matches("http://")
        .to_owned();
    let posted = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(&admin).expect("connect");
        stream
            .write_all(b"POST /reload HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .expect("write");
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        answer
    });
    // The second reload waits for its turn, and says nothing meanwhile.
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut buffer = [0u8; 512];
    assert!(
        socket.recv(&mut buffer).is_err(),
        "a notice while the first reload is still held"
    );
    socket
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    // Each reload reads the token once. A FIFO's reader sees every write made while it is
    // open, so the second reload gets its write only once the first has read its own.
    let answer_once = |fifo: std::path::PathBuf| {
        std::thread::spawn(move || std::fs::write(&fifo, "held-token").expect("write the FIFO"))
    };
    let first = answer_once(fifo.clone());
    let mut notices = vec![next_notice(&socket)];
    first.join().expect("writer");
    notices.push(next_notice(&socket));
    let writer = answer_once(fifo);
    notices.push(next_notice(&socket));
    let notices: Vec<&str> = notices
        .iter()
        .map(|notice| notice.lines().next().unwrap_or(""))
        .collect();
    assert_eq!(
        notices,
        ["READY=1", "RELOADING=1", "READY=1"],
        "{notices:?}"
    );
    writer.join().expect("writer");
    let answer = posted.join().expect("thread");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let health = reqwest::get(format!("{}/healthz", served.address))
        .await
        .expect("still serving after SIGHUP");
    assert!(health.status().is_success());
    served.signal("-TERM");
    assert_eq!(next_notice(&socket).trim(), "STOPPING=1");
}

#[test]
fn the_unit_file_sandboxes_the_service_and_waits_for_readiness() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/systemd/hookgate.service"
    ))
    .expect("unit file");
    let lines: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    for expected in [
        "Type=notify",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "CapabilityBoundingSet=",
        "AmbientCapabilities=",
        "SystemCallFilter=@system-service",
        "StateDirectory=hookgate",
        "ReadWritePaths=/var/lib/hookgate",
        "UMask=0077",
    ] {
        assert!(lines.contains(&expected), "missing `{expected}`");
    }
    // The store is the only path it may write.
    let writable: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("ReadWritePaths="))
        .collect();
    assert_eq!(writable, [&"ReadWritePaths=/var/lib/hookgate"]);
}
